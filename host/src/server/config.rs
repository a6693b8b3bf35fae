//! `edgeinfer.toml`: the server's settings. Unknown keys are errors, reported with the file,
//! the key and the reason before any socket is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::limits::LimitOverrides;
use crate::{Error, Result};

/// Server settings; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `"127.0.0.1:8000"`.
    pub listen: SocketAddr,
    /// A second address serving only the admin API (and health checks); the main listener
    /// then answers 404 for `/v2/admin`, e.g. `"127.0.0.1:8001"`.
    pub admin_listen: Option<SocketAddr>,
    /// Address for the Open Inference Protocol over gRPC (`inference.GRPCInferenceService`,
    /// health and reflection); off unless set, e.g. `"127.0.0.1:8001"`.
    pub grpc_listen: Option<SocketAddr>,
    /// TLS for every listener: `[tls] cert = "server.pem"`, `key = "server.key"`, optional
    /// `client_ca = "ca.pem"` and `client_auth = "all" | "admin"` (mutual TLS).
    pub tls: Option<crate::server::security::tls::TlsSettings>,
    /// Model repository; unset serves the embedded demo model, e.g. `"models"`.
    pub repo: Option<PathBuf>,
    /// Inferences running at once (default: the number of cores), e.g. `4`.
    pub max_concurrent_inferences: usize,
    /// Requests allowed to wait for a slot; beyond that, 503 with `Retry-After`, e.g. `64`.
    pub max_queue: usize,
    /// Largest request body in bytes, e.g. `8388608` (8 MiB).
    pub max_body_bytes: usize,
    /// Open connections at once; beyond that, a 503 and the connection closed, e.g. `1024`.
    pub max_connections: usize,
    /// Bytes of request bodies held in memory at once across all connections; beyond that,
    /// 503 with `Retry-After`, e.g. `268435456` (256 MiB).
    pub body_budget_bytes: usize,
    /// Failed requests logged per second at most (the rest are counted), e.g. `20`.
    pub max_error_logs_per_second: u32,
    /// `"text"` (colour only on a terminal) or `"json"` (one object per line), e.g. `"json"`.
    pub log_format: LogFormat,
    /// Time allowed to receive a request's headers and body, in ms, e.g. `10000`.
    pub request_read_timeout_ms: u64,
    /// Limits applied on top of every model's manifest limits.
    pub limits: LimitOverrides,
    /// Watch the repository and load versions that appear, e.g. `true` (the default).
    pub watch: bool,
    /// The history log (default `<repo>/.edgeinfer/history.jsonl`), e.g. `"/var/lib/edgeinfer/history.jsonl"`.
    pub history_file: Option<PathBuf>,
    /// `"tokens"` (bearer tokens with scopes) or `"none"`; unset: `"none"` when listening on
    /// loopback only, and a refusal to start otherwise (unless `insecure_no_auth`), e.g. `"tokens"`.
    pub auth: Option<AuthMode>,
    /// Serve a non-loopback address without authentication, knowingly, e.g. `false`.
    pub insecure_no_auth: bool,
    /// The tokens file (default `<repo>/.edgeinfer/tokens.toml`), e.g. `"/etc/edgeinfer/tokens.toml"`.
    pub tokens_file: Option<PathBuf>,
    /// The audit log (default `<repo>/.edgeinfer/audit.jsonl`), e.g. `"/var/log/edgeinfer/audit.jsonl"`.
    pub audit_file: Option<PathBuf>,
    /// Size at which the audit log is rotated, e.g. `67108864` (64 MiB).
    pub audit_max_bytes: u64,
    /// Rotated audit files kept, e.g. `5`.
    pub audit_keep: usize,
    /// Default rate and fuel quota of callers whose token sets none (per address when auth is
    /// off), e.g. `{ rate_per_s = 100, burst = 200, fuel_per_minute = 100000000000 }`.
    pub quotas: crate::server::security::TokenLimits,
    /// Public keys (PEM) one of which must have signed every version, e.g.
    /// `["keys/publisher.pub"]`; empty: signatures are checked when present, not required.
    pub trusted_keys: Vec<PathBuf>,
    /// Authentication failures from one address that lock it out, e.g. `20`.
    pub lockout_failures: usize,
    /// The window those failures are counted in, in seconds, e.g. `60`.
    pub lockout_window_s: u64,
    /// How long a locked-out address stays locked out, in seconds, e.g. `300`.
    pub lockout_s: u64,
    /// Prediction log, quality and drift windows: `[monitoring]`.
    pub monitoring: MonitoringConfig,
    /// Alert rules: `[[alerts]]` tables, evaluated in-process.
    pub alerts: Vec<crate::server::alerts::AlertRule>,
    /// The directory batch jobs read and write in (`POST /v2/batch/jobs`); unset: jobs off,
    /// e.g. `"/srv/batch"`.
    pub batch_dir: Option<PathBuf>,
    /// Inferences of a version whose recent mean is under this many µs run on the thread
    /// that read the request instead of a blocking thread (0: never), e.g. `300`.
    pub inline_inference_us: u64,
    /// Scoring threads of the running batch job (default: half the cores, at least 1), e.g. `2`.
    pub batch_workers: usize,
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

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            admin_listen: None,
            grpc_listen: None,
            tls: None,
            repo: None,
            max_concurrent_inferences: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_queue: 64,
            max_body_bytes: 8 << 20,
            max_connections: 1024,
            body_budget_bytes: 256 << 20,
            max_error_logs_per_second: 20,
            log_format: LogFormat::Text,
            request_read_timeout_ms: 10_000,
            limits: LimitOverrides::default(),
            watch: true,
            history_file: None,
            auth: None,
            insecure_no_auth: false,
            tokens_file: None,
            audit_file: None,
            audit_max_bytes: 64 << 20,
            audit_keep: 5,
            quotas: crate::server::security::TokenLimits::default(),
            trusted_keys: Vec::new(),
            lockout_failures: 20,
            lockout_window_s: 60,
            lockout_s: 300,
            monitoring: MonitoringConfig::default(),
            alerts: Vec::new(),
            batch_dir: None,
            inline_inference_us: 300,
            batch_workers: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        }
    }
}

impl ServerConfig {
    /// Reads a config file, naming the file, key and reason on error.
    pub fn load(path: &Path) -> Result<ServerConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text).map_err(|message| Error::Config(format!("{}: {message}", path.display())))
    }

    /// Parses and checks a config's text; the message names the key and the reason.
    pub fn parse(text: &str) -> std::result::Result<ServerConfig, String> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.max_concurrent_inferences == 0 {
            return Err("`max_concurrent_inferences` must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("`max_body_bytes` must be at least 1024".into());
        }
        if self.max_connections == 0 {
            return Err("`max_connections` must be at least 1".into());
        }
        if self.body_budget_bytes < self.max_body_bytes {
            return Err(format!(
                "`body_budget_bytes` ({}) must be at least `max_body_bytes` ({})",
                self.body_budget_bytes, self.max_body_bytes
            ));
        }
        if self.lockout_failures == 0 {
            return Err("`lockout_failures` must be at least 1".into());
        }
        if self.request_read_timeout_ms == 0 {
            return Err("`request_read_timeout_ms` must be at least 1".into());
        }
        let m = &self.monitoring;
        if m.quality_window == 0 || m.drift_window == 0 || m.alert_interval_ms == 0 {
            return Err("`monitoring.quality_window`, `drift_window` and `alert_interval_ms` must be at least 1".into());
        }
        if m.predictions_file_bytes < 4096 || m.predictions_max_bytes < m.predictions_file_bytes {
            return Err(
                "`monitoring.predictions_file_bytes` must be at least 4096 and at most `predictions_max_bytes`".into(),
            );
        }
        if !(m.psi_warn > 0.0 && m.psi_drift >= m.psi_warn) {
            return Err("`monitoring.psi_warn` must be above 0 and at most `psi_drift`".into());
        }
        for rule in &self.alerts {
            rule.validate()?;
        }
        Ok(())
    }
}

impl ServerConfig {
    /// The capacities admission control enforces.
    pub fn admission_limits(&self) -> crate::server::AdmissionLimits {
        crate::server::AdmissionLimits {
            max_connections: self.max_connections,
            body_budget_bytes: self.body_budget_bytes,
            max_queue: self.max_queue,
            max_concurrent_inferences: self.max_concurrent_inferences,
        }
    }
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Bearer tokens with scopes, from the tokens file.
    Tokens,
    /// Anyone who reaches the port.
    None,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines; ANSI colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Optional `<repo>/<model>/config.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The version served when a request names none (default: the highest loaded), e.g. `2`.
    pub default_version: Option<u64>,
    /// Limits for every version of the model, over the manifests'.
    pub limits: LimitOverrides,
    /// What a version newer than every live one does once the watcher has loaded it:
    /// `"switch"` takes all traffic (blue/green, the default) or `"wait"` takes none until
    /// `PUT /v2/admin/models/{m}/traffic` gives it a share (canary).
    pub on_new_version: NewVersionPolicy,
    /// Share of predictions written to the prediction log (0 to 1), e.g. `0.1`.
    pub prediction_sample_rate: f64,
    /// The output that is the prediction for quality tracking (default: `label`, else the
    /// first output), e.g. `"label"`.
    pub prediction_output: Option<String>,
    /// `"classification"` or `"regression"` (default: classification for integer and string
    /// outputs, regression for floating point), e.g. `"regression"`.
    pub task: Option<Task>,
    /// Dynamic batching (off unless present): `[batching] max_batch_size = 32`,
    /// `max_queue_delay_us = 0`.
    pub batching: Option<BatchingConfig>,
}

/// `[batching]` in a model's `config.toml`: concurrent requests for the same version with
/// compatible inputs run as one call (see [`crate::batching`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most rows in one call, e.g. `32`; a request with more runs alone.
    pub max_batch_size: u64,
    /// How long a request may wait for others to join its call, in µs; 0 takes what is
    /// already queued, e.g. `500`.
    #[serde(default)]
    pub max_queue_delay_us: u64,
}

impl BatchingConfig {
    /// Refuses batching for a model whose inputs or outputs have a fixed first dimension, or
    /// a zero batch size; the message names the model and the tensor.
    pub fn check(&self, manifest: &crate::manifest::Manifest) -> std::result::Result<(), String> {
        let model = &manifest.name;
        if self.max_batch_size == 0 {
            return Err(format!("model {model}: [batching] max_batch_size must be at least 1"));
        }
        for (kind, tensors) in [("input", &manifest.inputs), ("output", &manifest.outputs)] {
            for tensor in tensors {
                if tensor.shape.first() != Some(&-1) {
                    return Err(format!(
                        "model {model}: [batching] needs a dynamic first (batch) dimension, but {kind} {} has shape {:?}",
                        tensor.name, tensor.shape
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a model predicts, for quality tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Classes: accuracy, precision and recall (a float output of several columns is read as
    /// scores and its arg-max taken).
    Classification,
    /// Numbers: mean absolute error and root mean squared error.
    Regression,
}

/// See [`ModelConfig::on_new_version`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NewVersionPolicy {
    /// Take all traffic as soon as loaded.
    #[default]
    Switch,
    /// Load and wait for an explicit split.
    Wait,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            default_version: None,
            limits: LimitOverrides::default(),
            on_new_version: NewVersionPolicy::default(),
            prediction_sample_rate: 1.0,
            prediction_output: None,
            task: None,
            batching: None,
        }
    }
}

impl ModelConfig {
    /// Reads `<model_dir>/config.toml` when present.
    pub fn load(model_dir: &Path) -> Result<ModelConfig> {
        let path = model_dir.join("config.toml");
        if !path.exists() {
            return Ok(ModelConfig::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let config: ModelConfig = toml::from_str(&text)
            .map_err(|e| Error::Manifest { path: path.clone(), message: e.to_string().trim().to_string() })?;
        if !(0.0..=1.0).contains(&config.prediction_sample_rate) {
            let message =
                format!("`prediction_sample_rate` must be within 0 and 1, got {}", config.prediction_sample_rate);
            return Err(Error::Manifest { path, message });
        }
        Ok(config)
    }
}

/// A duration as written in configs and flags: `250ms`, `45s` (or `45`), `15m`, `12h`, `30d`.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let wrong = || format!("'{text}' is not a duration like 250ms, 45s, 15m, 12h or 30d");
    let n: u64 = number.parse().map_err(|_| wrong())?;
    let millis = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(wrong()),
    };
    Ok(std::time::Duration::from_millis(n.saturating_mul(millis)))
}
