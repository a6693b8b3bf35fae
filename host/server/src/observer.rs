//! What the server watches about answered requests: the prediction log (sampled per model),
//! the feedback index that joins later labels to logged predictions, and per version the
//! quality and input-drift windows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

use super::quality::{FeedbackIndex, QualityView, QualityWindow, Unjoined};
use super::registry::{ModelRegistry, ServedVersion};
use crate::Result;
use edgeinfer_monitor::drift::DriftWindow;
use edgeinfer_monitor::keys::{KeySource, Keyring};
use edgeinfer_monitor::predictions::{
    Erasure, ErasureReport, LogBounds, LogProtection, PredictionLog, PredictionRecord, Role,
};
use edgeinfer_monitor::redaction::Rule;
use edgeinfer_runtime::clock::now_ms;
use edgeinfer_runtime::features::feature_rows;
use edgeinfer_runtime::pipeline::KeptTensors;
use serde::Deserialize;

/// Drift of one version's inputs.
#[derive(Debug, Clone, Serialize)]
pub struct DriftView {
    /// The version.
    pub version: String,
    /// Rows in the live window.
    pub rows: usize,
    /// Rows the reference was computed from.
    pub reference_rows: u64,
    /// The largest PSI of any feature.
    pub max_psi: f64,
    /// Share of features whose PSI is above the drift threshold.
    pub drifted_share: f64,
    /// PSI per feature, in input order, with its state (`ok`, `warn`, `drift`).
    pub features: Vec<FeaturePsi>,
}

/// One feature's PSI.
#[derive(Debug, Clone, Serialize)]
pub struct FeaturePsi {
    /// Feature name.
    pub name: String,
    /// Population stability index against the reference.
    pub psi: f64,
    /// `ok`, `warn` or `drift`.
    pub state: &'static str,
}

/// `[monitoring]`: what the server records about predictions and how far back it looks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// Log predictions (inputs, outputs, component digest) for replay and feedback, e.g. `true`.
    pub predictions: bool,
    /// The log's directory (default `<repo>/.edgeinfer/predictions`).
    pub predictions_dir: Option<PathBuf>,
    /// Size at which a log file is closed and the next begun, e.g. `67108864` (64 MiB).
    pub predictions_file_bytes: u64,
    /// All log files together stay under this (oldest removed), e.g. `1073741824` (1 GiB).
    pub predictions_max_bytes: u64,
    /// Tensors larger than this are logged as shape + sha256 only (replay skips a record
    /// whose input was digested), e.g. `1048576` (1 MiB); 0 logs every tensor in full.
    pub predictions_full_tensor_bytes: u64,
    /// Bytes per second the log may write; beyond, records are dropped and counted instead
    /// of slowing requests, e.g. `52428800` (50 MiB/s); 0 for no budget.
    pub predictions_bytes_per_second: u64,
    /// Tensor bytes that may wait for the log's writer; beyond, records are dropped and
    /// counted, e.g. `67108864` (64 MiB).
    pub predictions_queue_bytes: u64,
    /// Log files last written longer ago than this many days are removed (0: kept until
    /// `predictions_max_bytes` removes them), e.g. `30`.
    pub predictions_retention_days: u64,
    /// Logged predictions remembered for joining feedback by id (about 300 bytes each), e.g.
    /// `100000`.
    pub feedback_index: usize,
    /// Quality counts the last this many labelled predictions per version, e.g. `1000`.
    pub quality_window: usize,
    /// ... and only those labelled within this many seconds (0: no time bound), e.g. `3600`.
    pub quality_window_s: u64,
    /// Drift compares the last this many live rows per version with the reference, e.g. `1000`.
    pub drift_window: usize,
    /// Drift is reported once a window holds this many rows (fewer say little), e.g. `100`.
    pub drift_min_rows: usize,
    /// PSI above which a feature is reported as drifting a little, e.g. `0.1`.
    pub psi_warn: f64,
    /// PSI above which a feature counts as drifted, e.g. `0.25`.
    pub psi_drift: f64,
    /// How often alert rules are evaluated, in ms, e.g. `1000`.
    pub alert_interval_ms: u64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            predictions: true,
            predictions_dir: None,
            predictions_file_bytes: 64 << 20,
            predictions_max_bytes: 1 << 30,
            predictions_full_tensor_bytes: 1 << 20,
            predictions_bytes_per_second: 0,
            predictions_queue_bytes: 64 << 20,
            predictions_retention_days: 0,
            feedback_index: 100_000,
            quality_window: 1000,
            quality_window_s: 0,
            drift_window: 1000,
            drift_min_rows: 100,
            psi_warn: 0.1,
            psi_drift: 0.25,
            alert_interval_ms: 1000,
        }
    }
}

/// The server's observer of answered requests.
pub struct Observer {
    log: Option<PredictionLog>,
    /// The keys that open the log (sealed when set).
    keys: Option<std::sync::Arc<Keyring>>,
    feedback: FeedbackIndex,
    settings: MonitoringConfig,
    labels_joined: AtomicU64,
    labels_unknown: AtomicU64,
}

/// Who asked for an answered request, for the observer.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'r> {
    /// The request id (none: not logged).
    pub id: Option<&'r str>,
    /// The caller's token name.
    pub caller: Option<&'r str>,
    /// Whether the request is logged (its model's sample rate).
    pub sampled: bool,
}

/// How one feedback request went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedbackReport {
    /// Items received.
    pub received: usize,
    /// Items joined to a logged prediction and counted.
    pub joined: usize,
    /// Ids no logged prediction has (never logged, sampled out, or forgotten).
    pub unknown_ids: Vec<String>,
    /// Items refused, with why.
    pub rejected: Vec<Value>,
}

impl Observer {
    /// Opens the prediction log (when enabled) under `repo`'s state directory, sealed with
    /// the keys of `data_key_file` (else `$EDGEINFER_DATA_KEY`) when there are any.
    pub fn open(settings: &MonitoringConfig, repo: &Path, data_key_file: Option<&Path>) -> Result<Observer> {
        let key_error = |e: edgeinfer_monitor::keys::KeyError| crate::Error::Config(format!("data key: {e}"));
        let mut keys = KeySource::from_file_or_env(data_key_file).map_err(key_error)?;
        let opening_keys = keys.as_mut().map(|k| k.keyring());
        let state = edgeinfer_runtime::repository::state_dir(repo);
        let log = if settings.predictions {
            let dir = settings
                .predictions_dir
                .clone()
                .unwrap_or_else(|| edgeinfer_runtime::repository::state_dir(repo).join("predictions"));
            let bounds = LogBounds {
                max_file_bytes: settings.predictions_file_bytes,
                max_total_bytes: settings.predictions_max_bytes,
                max_queued_bytes: settings.predictions_queue_bytes,
                max_full_tensor_bytes: settings.predictions_full_tensor_bytes,
                bytes_per_second: settings.predictions_bytes_per_second,
                max_age_ms: settings.predictions_retention_days.saturating_mul(86_400_000),
            };
            let protection = LogProtection { keys, hash_key: Some(state.join("redaction.key")) };
            if let Some(keys) = &opening_keys {
                tracing::info!(key = keys.current_id(), "prediction log sealed with AES-256-GCM");
            }
            Some(PredictionLog::open(&dir, bounds, protection)?)
        } else {
            None
        };
        Ok(Observer {
            log,
            keys: opening_keys,
            feedback: FeedbackIndex::new(settings.feedback_index),
            settings: settings.clone(),
            labels_joined: AtomicU64::new(0),
            labels_unknown: AtomicU64::new(0),
        })
    }

    /// Remembers the predictions already in the log (a restart keeps them joinable by id),
    /// on a thread of its own; versions no longer loaded are skipped.
    pub fn reload_feedback_index(self: &std::sync::Arc<Self>, registry: std::sync::Arc<ModelRegistry>) {
        let Some(dir) = self.log.as_ref().map(|log| log.dir().to_path_buf()) else { return };
        let observer = self.clone();
        let keys = self.keys.clone();
        let spawned = std::thread::Builder::new().name("edgeinfer-feedback-index".into()).spawn(move || {
            let mut remembered = 0u64;
            let read = edgeinfer_monitor::predictions::for_each_record(&dir, keys.as_deref(), &mut |record| {
                let Ok(version) = registry.resolve(&record.model, Some(record.version)) else { return };
                if version.model.manifest().component.sha256 != record.sha256 {
                    return;
                }
                // A redacted or digested prediction holds no answers to join labels to.
                let spec = &version.monitor.spec;
                if spec.chosen(&record.outputs).is_some_and(|t| {
                    record.redacted.get(&t.name).is_some_and(|r| *r != Rule::Keep)
                        || record.digests.contains_key(&t.name)
                }) {
                    return;
                }
                if let Some((task, answers)) = version.monitor.spec.extract(&record.outputs) {
                    observer.feedback.remember(&record.model, &record.id, record.version, record.role, task, answers);
                    remembered += 1;
                }
            });
            match read {
                Ok(problems) => {
                    for problem in &problems {
                        tracing::warn!(%problem, "part of the prediction log cannot be read");
                    }
                    tracing::info!(
                        remembered,
                        unreadable = problems.len(),
                        "logged predictions are joinable by id again"
                    )
                }
                Err(error) => tracing::warn!(%error, "cannot read the prediction log back"),
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start reading the prediction log back");
        }
    }

    /// Whether this request to `version` is logged (its model's sample rate).
    pub fn sampled(&self, version: &ServedVersion) -> bool {
        let rate = version.monitor.sample_rate;
        self.log.is_some() && (rate >= 1.0 || (rate > 0.0 && fastrand::f64() < rate))
    }

    /// Whether the request's tensors must be kept for the observer.
    pub fn wants_tensors(&self, version: &ServedVersion, sampled: bool) -> bool {
        sampled || version.model.reference().is_some()
    }

    /// Records an answered request: drift (live only), then the log and feedback index when
    /// `sampled`.
    pub fn observe(&self, version: &ServedVersion, role: Role, request: Observed<'_>, kept: KeptTensors) {
        let Observed { id, caller, sampled } = request;
        let manifest = version.model.manifest();
        if role == Role::Live
            && let Some(reference) = version.model.reference()
            && let Some(rows) = feature_rows(&kept.inputs, &manifest.inputs)
        {
            let mut drift = version.monitor.drift.lock().unwrap_or_else(|p| p.into_inner());
            drift.get_or_insert_with(|| DriftWindow::new((**reference).clone(), self.settings.drift_window)).add(&rows);
        }
        let (Some(log), Some(id), true) = (&self.log, id, sampled) else { return };
        if let Some((task, answers)) = version.monitor.spec.extract(&kept.outputs) {
            self.feedback.remember(&manifest.name, id, manifest.version, role, task, answers);
        }
        let record = PredictionRecord {
            id: id.to_string(),
            caller: caller.map(str::to_string),
            time_ms: now_ms(),
            model: manifest.name.clone(),
            version: manifest.version,
            sha256: manifest.component.sha256.clone(),
            role,
            requested: kept.requested,
            inputs: kept.inputs,
            outputs: kept.outputs,
            digests: Default::default(),
            redacted: Default::default(),
        };
        log.append(record, Some(version.monitor.redaction.clone()));
    }

    /// Erases the records `which` selects from the prediction log (the file being written
    /// included) and forgets their predictions in the feedback index.
    pub fn erase(&self, which: Erasure) -> std::result::Result<ErasureReport, String> {
        let log = self.log.as_ref().ok_or("the prediction log is off (`[monitoring] predictions = false`)")?;
        let report = log.erase(which).map_err(|e| e.to_string())?;
        self.feedback.forget(&report.request_ids);
        Ok(report)
    }

    /// Joins feedback (`{"id", "label"}` or `{"feedback": [...]}`) to logged predictions of
    /// `model` and counts it in the versions' quality windows.
    pub fn feedback(
        &self,
        registry: &ModelRegistry,
        model: &str,
        body: &Value,
    ) -> std::result::Result<FeedbackReport, String> {
        let items: Vec<&Value> = match body.get("feedback") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(_) => return Err("`feedback` must be an array of {\"id\", \"label\"} objects".into()),
            None => vec![body],
        };
        let mut report = FeedbackReport { received: items.len(), ..FeedbackReport::default() };
        let now = now_ms();
        for (index, item) in items.iter().enumerate() {
            let id = match item.get("id") {
                Some(Value::String(id)) => id.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    report.rejected.push(json!({"index": index, "reason": "missing `id` (the request id)"}));
                    continue;
                }
            };
            let Some(label) = item.get("label") else {
                report.rejected.push(json!({"id": id, "reason": "missing `label`"}));
                continue;
            };
            match self.feedback.join(model, &id, label) {
                Ok(joined) => {
                    report.joined += 1;
                    for entry in joined {
                        let Ok(version) = registry.resolve(model, Some(entry.version)) else { continue };
                        let mut quality = version.monitor.quality.lock().unwrap_or_else(|p| p.into_inner());
                        quality.get_or_insert_with(|| self.quality_window()).add(now, entry.role, entry.pairs);
                    }
                }
                Err(Unjoined::UnknownId) => report.unknown_ids.push(id),
                Err(Unjoined::BadLabel(reason)) => report.rejected.push(json!({"id": id, "reason": reason})),
            }
        }
        self.labels_joined.fetch_add(report.joined as u64, Ordering::Relaxed);
        self.labels_unknown.fetch_add(report.unknown_ids.len() as u64, Ordering::Relaxed);
        Ok(report)
    }

    fn quality_window(&self) -> QualityWindow {
        QualityWindow::new(self.settings.quality_window, self.settings.quality_window_s)
    }

    /// Quality per loaded version of `model` (versions without labels omitted).
    pub fn quality(&self, registry: &ModelRegistry, model: &str) -> Vec<(u64, QualityView)> {
        let now = now_ms();
        registry
            .loaded(model)
            .into_iter()
            .filter_map(|(version, served)| {
                let mut quality = served.monitor.quality.lock().unwrap_or_else(|p| p.into_inner());
                quality.as_mut().map(|window| (version, window.view(now)))
            })
            .collect()
    }

    /// Drift per loaded version of `model` that has a reference and at least
    /// `drift_min_rows` live rows.
    pub fn drift(&self, registry: &ModelRegistry, model: &str) -> Vec<DriftView> {
        registry
            .loaded(model)
            .into_iter()
            .filter_map(|(version, served)| {
                let drift = served.monitor.drift.lock().unwrap_or_else(|p| p.into_inner());
                let window = drift.as_ref().filter(|w| w.len() >= self.settings.drift_min_rows)?;
                let features: Vec<FeaturePsi> = window
                    .psi()
                    .into_iter()
                    .map(|(name, psi)| FeaturePsi { name, psi, state: self.psi_state(psi) })
                    .collect();
                let drifted = features.iter().filter(|f| f.psi > self.settings.psi_drift).count();
                Some(DriftView {
                    version: version.to_string(),
                    rows: window.len(),
                    reference_rows: served.model.reference().map_or(0, |r| r.rows),
                    max_psi: features.iter().map(|f| f.psi).fold(0.0, f64::max),
                    drifted_share: drifted as f64 / features.len().max(1) as f64,
                    features,
                })
            })
            .collect()
    }

    fn psi_state(&self, psi: f64) -> &'static str {
        if psi > self.settings.psi_drift {
            "drift"
        } else if psi > self.settings.psi_warn {
            "warn"
        } else {
            "ok"
        }
    }

    /// Labels joined and unknown ids so far.
    pub fn feedback_counts(&self) -> (u64, u64) {
        (self.labels_joined.load(Ordering::Relaxed), self.labels_unknown.load(Ordering::Relaxed))
    }

    /// Predictions written to and dropped from the log so far.
    pub fn log_counts(&self) -> (u64, u64) {
        self.log.as_ref().map_or((0, 0), |log| (log.written(), log.dropped()))
    }

    /// Tensor bytes waiting for the log's writer now.
    pub fn log_queued_bytes(&self) -> u64 {
        self.log.as_ref().map_or(0, |log| log.queued_bytes())
    }
}
