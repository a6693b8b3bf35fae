//! A version's drift reference: per-feature distributions (quantile bins) of a sample,
//! recorded at compile time (`reference.json` beside the manifest, its digest in the manifest).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;
use crate::features::feature_names;
use crate::manifest::{Manifest, ReferenceInfo, TensorSignature};
use crate::{Error, Result};

/// The file name of a version's reference distributions.
pub const REFERENCE_FILE: &str = "reference.json";
/// Bins per feature.
pub const BINS: usize = 10;

/// Reference distributions of every input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Rows the reference was computed from.
    pub rows: u64,
    /// One entry per feature, in input order.
    pub features: Vec<FeatureBins>,
}

/// The bins of one feature: `edges` are upper bounds (a value `v` falls in the first bin
/// whose edge is `>= v`, or the last bin), `expected` the reference share of each bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureBins {
    /// Feature name: `<input>` or `<input>[j]`.
    pub name: String,
    /// Ascending upper bounds, one fewer than bins.
    pub edges: Vec<f64>,
    /// Reference share of each bin (sums to 1).
    pub expected: Vec<f64>,
}

impl FeatureBins {
    /// The bin `value` falls in.
    pub fn bin(&self, value: f64) -> usize {
        self.edges.partition_point(|edge| *edge < value)
    }
}

impl Reference {
    /// Quantile bins of each column of `rows`; `names` names the columns.
    pub fn from_rows(names: &[String], rows: &[Vec<f64>]) -> Result<Reference> {
        if rows.is_empty() {
            return Err(Error::Config("the reference sample has no rows".into()));
        }
        let features = names
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let mut column: Vec<f64> = rows.iter().map(|row| row[j]).filter(|v| v.is_finite()).collect();
                column.sort_by(f64::total_cmp);
                let mut edges: Vec<f64> = (1..BINS)
                    .filter_map(|q| column.get((q * column.len() / BINS).min(column.len().saturating_sub(1))).copied())
                    .collect();
                // Ties collapse bins; a last edge at the maximum leaves an empty bin above
                // it, where a live shift upwards shows.
                edges.dedup();
                let mut bins = FeatureBins { name: name.clone(), edges, expected: Vec::new() };
                let mut counts = vec![0u64; bins.edges.len() + 1];
                for value in &column {
                    counts[bins.bin(*value)] += 1;
                }
                let total = column.len().max(1) as f64;
                bins.expected = counts.iter().map(|&c| c as f64 / total).collect();
                bins
            })
            .collect();
        Ok(Reference { rows: rows.len() as u64, features })
    }

    /// Writes `reference.json` into `dir` and returns what the manifest records of it.
    pub fn save(&self, dir: &Path) -> Result<ReferenceInfo> {
        let text = serde_json::to_vec_pretty(self).map_err(Error::runtime)?;
        let path = dir.join(REFERENCE_FILE);
        std::fs::write(&path, &text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(ReferenceInfo { file: REFERENCE_FILE.into(), sha256: sha256_hex(&text), rows: self.rows })
    }

    /// The reference of the version in `dir`, checked against the manifest's digest; `None`
    /// when the manifest records none.
    pub fn load(dir: &Path, manifest: &Manifest) -> Result<Option<Reference>> {
        let Some(info) = &manifest.reference else { return Ok(None) };
        let path = dir.join(&info.file);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let actual = sha256_hex(&bytes);
        if actual != info.sha256 {
            return Err(Error::IntegrityMismatch { path, expected: info.sha256.clone(), actual });
        }
        let reference: Reference = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Manifest { path: path.clone(), message: e.to_string() })?;
        Ok(Some(reference))
    }
}

/// Typical inputs a reference is computed from (a sample file, say), read as rows of
/// features once the model's input signature is known.
pub trait SampleSource: std::fmt::Debug + Send + Sync {
    /// One row per sample, one value per feature of `inputs` (see [`feature_names`]).
    fn feature_rows(&self, inputs: &[TensorSignature]) -> Result<Vec<Vec<f64>>>;
}

/// Computes the reference of `sample` for the version in `dir`, writes it there and records
/// it in `manifest` (which the caller saves).
pub fn attach_reference(dir: &Path, manifest: &mut Manifest, sample: &dyn SampleSource) -> Result<()> {
    let rows = sample.feature_rows(&manifest.inputs)?;
    let reference = Reference::from_rows(&feature_names(&manifest.inputs), &rows)?;
    manifest.reference = Some(reference.save(dir)?);
    Ok(())
}
