//! Input drift: per-feature reference distributions (quantile bins) recorded at compile time
//! (`reference.json` beside the manifest, its digest in the manifest), the same bins kept
//! over a sliding window of live rows, and the population stability index (PSI) per feature.

use std::collections::VecDeque;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;
use crate::manifest::{Manifest, ReferenceInfo};
use crate::{Error, Result};

/// The file name of a version's reference distributions.
pub const REFERENCE_FILE: &str = "reference.json";
/// Bins per feature.
const BINS: usize = 10;
/// Share given to an empty bin, so PSI stays finite.
const EMPTY_BIN: f64 = 1e-4;

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

/// Computes the reference of the sample file `sample` for the version in `dir`, writes it
/// there and records it in `manifest` (which the caller saves).
pub fn attach_reference(dir: &Path, manifest: &mut Manifest, sample: &Path) -> Result<()> {
    let rows = super::samples::read_feature_rows(sample, &manifest.inputs)?;
    let reference = Reference::from_rows(&super::samples::feature_names(&manifest.inputs), &rows)?;
    manifest.reference = Some(reference.save(dir)?);
    Ok(())
}

/// PSI of live bin `counts` against `expected` shares.
pub fn psi(expected: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(counts)
        .map(|(&e, &c)| {
            let (e, a) = (e.max(EMPTY_BIN), (c as f64 / total as f64).max(EMPTY_BIN));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The last `capacity` live rows, binned like the reference.
#[derive(Debug)]
pub struct DriftWindow {
    reference: Reference,
    capacity: usize,
    rows: VecDeque<Vec<u8>>,
    counts: Vec<Vec<u64>>,
}

impl DriftWindow {
    /// An empty window over `reference`.
    pub fn new(reference: Reference, capacity: usize) -> DriftWindow {
        let counts = reference.features.iter().map(|f| vec![0; f.expected.len()]).collect();
        DriftWindow { reference, capacity: capacity.max(1), rows: VecDeque::new(), counts }
    }

    /// Adds rows (features in reference order); the oldest leave the window.
    pub fn add(&mut self, rows: &[Vec<f64>]) {
        for row in rows {
            if row.len() != self.reference.features.len() {
                continue;
            }
            let bins: Vec<u8> =
                self.reference.features.iter().zip(row).map(|(f, &v)| f.bin(v).min(255) as u8).collect();
            for (counts, &bin) in self.counts.iter_mut().zip(&bins) {
                counts[usize::from(bin)] += 1;
            }
            self.rows.push_back(bins);
            if self.rows.len() > self.capacity
                && let Some(old) = self.rows.pop_front()
            {
                for (counts, &bin) in self.counts.iter_mut().zip(&old) {
                    counts[usize::from(bin)] -= 1;
                }
            }
        }
    }

    /// Rows in the window.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row has been seen.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// PSI of every feature, in reference order.
    pub fn psi(&self) -> Vec<(String, f64)> {
        self.reference.features.iter().zip(&self.counts).map(|(f, c)| (f.name.clone(), psi(&f.expected, c))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, offset: f64) -> Vec<Vec<f64>> {
        (0..n).map(|i| vec![(i % 100) as f64 + offset, (i % 7) as f64]).collect()
    }

    #[test]
    fn psi_is_small_in_distribution_and_large_on_the_shifted_feature() {
        let names = vec!["a".to_string(), "b".to_string()];
        let reference = Reference::from_rows(&names, &rows(2000, 0.0)).expect("reference");
        assert_eq!(reference.features[0].edges.len(), BINS - 1);
        let mut window = DriftWindow::new(reference.clone(), 500);
        window.add(&rows(500, 0.0));
        assert!(window.psi().iter().all(|(_, p)| *p < 0.1), "{:?}", window.psi());
        window.add(&rows(500, 40.0));
        let psi = window.psi();
        assert!(psi[0].1 > 0.25, "{psi:?}");
        assert!(psi[1].1 < 0.1, "{psi:?}");
        assert_eq!(window.len(), 500);
    }

    #[test]
    fn a_constant_feature_drifts_when_it_moves() {
        let names = vec!["c".to_string()];
        let reference = Reference::from_rows(&names, &vec![vec![0.0]; 50]).expect("reference");
        assert_eq!(reference.features[0].expected, vec![1.0, 0.0]);
        let mut window = DriftWindow::new(reference, 10);
        window.add(&vec![vec![0.0]; 10]);
        assert!(window.psi()[0].1 < 1e-9);
        window.add(&vec![vec![1.0]; 10]);
        assert!(window.psi()[0].1 > 0.25);
    }
}
