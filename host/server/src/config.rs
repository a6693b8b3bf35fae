//! `edgeinfer.toml`: the server's settings. Unknown keys are errors, reported with the file,
//! the key and the reason before any socket is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use edgeinfer_runtime::limits::LimitOverrides;

use crate::observer::MonitoringConfig;
use crate::security::{AuthMode, SecuritySettings};
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
    pub tls: Option<crate::security::tls::TlsSettings>,
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
    /// The data key file (`edgeinfer key create --out PATH`, mode 0600): with it, the
    /// prediction log is sealed with AES-256-GCM (unset: `$EDGEINFER_DATA_KEY` if set, else
    /// plain), e.g. `"/etc/edgeinfer/data.key"`.
    pub data_key_file: Option<PathBuf>,
    /// Size at which the audit log is rotated, e.g. `67108864` (64 MiB).
    pub audit_max_bytes: u64,
    /// Rotated audit files kept, e.g. `5`.
    pub audit_keep: usize,
    /// Set by `edgeinfer serve --accept-broken-audit` only, not a key of this file: a broken
    /// audit chain is set aside (its files renamed `*.broken-<unix ms>`) and a new one begun,
    /// instead of a refusal to start.
    #[serde(skip)]
    pub accept_broken_audit: bool,
    /// Default rate and fuel quota of callers whose token sets none (per address when auth is
    /// off), e.g. `{ rate_per_s = 100, burst = 200, fuel_per_minute = 100000000000 }`.
    pub quotas: crate::security::TokenLimits,
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
    pub alerts: Vec<crate::alerts::AlertRule>,
    /// The directory batch jobs read and write in (`POST /v2/batch/jobs`); unset: jobs off,
    /// e.g. `"/srv/batch"`.
    pub batch_dir: Option<PathBuf>,
    /// Inferences of a version whose recent mean is under this many µs run on the thread
    /// that read the request instead of a blocking thread (0: never), e.g. `300`.
    pub inline_inference_us: u64,
    /// How often running rollouts are evaluated, in ms, e.g. `1000`.
    pub rollout_interval_ms: u64,
    /// Scoring threads of the running batch job (default: half the cores, at least 1), e.g. `2`.
    pub batch_workers: usize,
    /// OCI registry repositories whose version tags are pulled into the model repository,
    /// verified and loaded (`HOST[:PORT]/PATH`, the model being the path's last segment, or
    /// `MODEL=HOST[:PORT]/PATH`), e.g. `["registry.example.com/models/digits"]`.
    pub follow: Vec<String>,
    /// How often followed repositories are polled, in ms (±20% jitter; doubled per failed
    /// poll up to 16x), e.g. `30000`.
    pub follow_interval_ms: u64,
    /// Registries (`host[:port]`) followed over plain HTTP although not on loopback, e.g.
    /// `["registry.internal:5000"]`.
    pub insecure_registries: Vec<String>,
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
            data_key_file: None,
            audit_file: None,
            audit_max_bytes: crate::security::audit::DEFAULT_MAX_BYTES,
            audit_keep: crate::security::audit::DEFAULT_KEEP,
            accept_broken_audit: false,
            quotas: crate::security::TokenLimits::default(),
            trusted_keys: Vec::new(),
            lockout_failures: 20,
            lockout_window_s: 60,
            lockout_s: 300,
            monitoring: MonitoringConfig::default(),
            alerts: Vec::new(),
            batch_dir: None,
            inline_inference_us: 300,
            rollout_interval_ms: 1000,
            batch_workers: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            follow: Vec::new(),
            follow_interval_ms: 30_000,
            insecure_registries: Vec::new(),
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
        if !self.follow.is_empty() && self.follow_interval_ms < 100 {
            return Err("`follow_interval_ms` must be at least 100".into());
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
    /// What [`crate::security::Security`] is built from.
    pub fn security_settings(&self) -> SecuritySettings {
        SecuritySettings {
            listeners: [Some(self.listen), self.admin_listen, self.grpc_listen].into_iter().flatten().collect(),
            auth: self.auth,
            insecure_no_auth: self.insecure_no_auth,
            tokens_file: self.tokens_file.clone(),
            audit_file: self.audit_file.clone(),
            audit_max_bytes: self.audit_max_bytes,
            audit_keep: self.audit_keep,
            accept_broken_audit: self.accept_broken_audit,
            quotas: self.quotas,
            lockout_failures: self.lockout_failures,
            lockout_window: std::time::Duration::from_secs(self.lockout_window_s),
            lockout: std::time::Duration::from_secs(self.lockout_s),
        }
    }

    /// The capacities admission control enforces.
    pub fn admission_limits(&self) -> crate::AdmissionLimits {
        crate::AdmissionLimits {
            max_connections: self.max_connections,
            body_budget_bytes: self.body_budget_bytes,
            max_queue: self.max_queue,
            max_concurrent_inferences: self.max_concurrent_inferences,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines; ANSI colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The names `log_format` and `--log-format` take.
    pub const NAMES: [&str; 2] = ["text", "json"];
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        match name {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format '{other}' (expected text or json)")),
        }
    }
}
