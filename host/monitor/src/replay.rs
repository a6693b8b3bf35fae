//! Replaying logged predictions on the exact component that made them (found in a
//! repository by its sha256) and checking the outputs are bit-identical.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::keys::Keyring;
use super::predictions::{PredictionRecord, ReadProblem, read_log};
use super::redaction::{HashKey, Rule};
use crate::Result;
use edgeinfer_runtime::limits::LimitOverrides;
use edgeinfer_runtime::manifest::Manifest;
use edgeinfer_runtime::model::LoadedModel;
use edgeinfer_runtime::repository::ModelRepository;
use edgeinfer_runtime::runtime::Runtime;

/// Which logged predictions to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only this request id.
    pub id: Option<String>,
    /// Only predictions made at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

impl ReplayFilter {
    fn keeps(&self, record: &PredictionRecord) -> bool {
        self.id.as_ref().is_none_or(|id| *id == record.id) && self.since_ms.is_none_or(|t| record.time_ms >= t)
    }
}

/// A prediction that did not replay identically.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayProblem {
    /// The request id.
    pub id: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: u64,
    /// The component's sha256.
    pub sha256: String,
    /// What went wrong: the first differing output, a missing component, a failure.
    pub reason: String,
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Predictions replayed.
    pub replayed: usize,
    /// Of those, the ones whose outputs were bit-identical.
    pub identical: usize,
    /// Outputs that differ, or a re-run that failed.
    pub mismatched: Vec<ReplayProblem>,
    /// Predictions whose component is not in the repository.
    pub missing: Vec<ReplayProblem>,
    /// Predictions not re-run because an input was logged as its digest only (over the
    /// log's `max_full_tensor_bytes`).
    pub digest_only: usize,
    /// Predictions not re-run because an input was redacted (dropped or hashed).
    pub redacted: usize,
    /// Parts of the log that could not be read (unknown key, altered, cut short); the rest
    /// was replayed.
    pub unreadable: Vec<ReadProblem>,
    /// Wall-clock time of the replay.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// Re-runs the predictions of `log_dir` that `filter` keeps on the components of `repo`;
/// `keys` opens sealed log files. Outputs redacted by hashing are compared by hash (with the
/// repository's redaction key), dropped ones not at all.
pub fn replay(
    runtime: &Arc<Runtime>,
    repo: &Path,
    log_dir: &Path,
    filter: &ReplayFilter,
    keys: Option<&Keyring>,
) -> Result<ReplayReport> {
    let started = Instant::now();
    let components = components_by_digest(repo)?;
    let hash_key_path = edgeinfer_runtime::repository::state_dir(repo).join("redaction.key");
    let hash_key = HashKey::load(&hash_key_path).map_err(|e| e.to_string());
    let mut loaded: HashMap<String, std::result::Result<LoadedModel, String>> = HashMap::new();
    let read = read_log(log_dir, keys)?;
    let mut report = ReplayReport { unreadable: read.problems, ..ReplayReport::default() };
    for record in read.records.into_iter().filter(|r| filter.keeps(r)) {
        let problem = |reason: String| ReplayProblem {
            id: record.id.clone(),
            model: record.model.clone(),
            version: record.version,
            sha256: record.sha256.clone(),
            reason,
        };
        if record.inputs.iter().any(|t| record.digests.contains_key(&t.name)) {
            report.digest_only += 1;
            continue;
        }
        if record.inputs.iter().any(|t| record.redacted.contains_key(&t.name)) {
            report.redacted += 1;
            continue;
        }
        let Some(dir) = components.get(&record.sha256) else {
            report.missing.push(problem(format!("no component with sha256 {} in {}", record.sha256, repo.display())));
            continue;
        };
        let model = loaded
            .entry(record.sha256.clone())
            .or_insert_with(|| LoadedModel::load(runtime, dir).map_err(|e| e.to_string()));
        report.replayed += 1;
        let model = match model {
            Ok(model) => model,
            Err(error) => {
                report.mismatched.push(problem(format!("cannot load {}: {error}", dir.display())));
                continue;
            }
        };
        match model.infer(record.inputs.clone(), &record.requested, LimitOverrides::default()) {
            Ok(outcome) => match first_difference(&record, &outcome.outputs, hash_key.as_ref()) {
                None => report.identical += 1,
                Some(reason) => report.mismatched.push(problem(reason)),
            },
            Err(error) => report.mismatched.push(problem(format!("re-run failed: {error}"))),
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Every version directory of `repo` by its component's sha256.
fn components_by_digest(repo: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut found = HashMap::new();
    for version in ModelRepository::open(repo)?.versions()? {
        if let Ok(manifest) = Manifest::load(&version.dir.join("manifest.toml")) {
            found.insert(manifest.component.sha256, version.dir);
        }
    }
    Ok(found)
}

/// Names the first output that differs from the logged one, bit for bit.
fn first_difference(
    record: &PredictionRecord,
    outputs: &[edgeinfer_oip::Tensor],
    hash_key: std::result::Result<&HashKey, &String>,
) -> Option<String> {
    if outputs.len() != record.outputs.len() {
        return Some(format!("{} outputs now, {} logged", outputs.len(), record.outputs.len()));
    }
    for (logged, now) in record.outputs.iter().zip(outputs) {
        match record.redacted.get(&logged.name) {
            Some(Rule::Hash) => match hash_key {
                Ok(key) if key.hash_tensor(now) == *logged => {}
                Ok(_) => return Some(format!("output '{}' differs (compared by its redaction hash)", logged.name)),
                Err(error) => return Some(format!("cannot check hashed output '{}': {error}", logged.name)),
            },
            Some(Rule::Drop) | Some(Rule::Keep) | None => {}
        }
    }
    let redacted = |name: &str| record.redacted.get(name).is_some_and(|r| *r != Rule::Keep);
    // An output logged as a digest compares by digest (its logged data is empty).
    let same = |logged: &edgeinfer_oip::Tensor, now: &edgeinfer_oip::Tensor| match record.digests.get(&logged.name) {
        Some(digest) => {
            logged.name == now.name
                && logged.datatype == now.datatype
                && logged.shape == now.shape
                && *digest == edgeinfer_runtime::digest::sha256_hex(&now.data)
        }
        None => logged == now,
    };
    let outputs = record.outputs.iter().zip(outputs).filter(|(logged, _)| !redacted(&logged.name));
    outputs.into_iter().find(|(logged, now)| !same(logged, now)).map(|(logged, now)| {
        let byte = logged.data.iter().zip(&now.data).position(|(a, b)| a != b);
        format!(
            "output '{}' differs (logged {} {:?}, now {} {:?}{})",
            logged.name,
            logged.datatype,
            logged.shape,
            now.datatype,
            now.shape,
            byte.map(|b| format!(", first at byte {b}")).unwrap_or_default()
        )
    })
}
