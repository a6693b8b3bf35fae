//! `<repo>/<model>/config.toml`: one model's settings, read by the registry when the model's
//! first version loads.

use std::path::Path;

use serde::Deserialize;

use crate::coalescer::BatchingConfig;
use crate::quality::Task;
use crate::rollout::RolloutPolicy;
use crate::{Error, Result};
use edgeinfer_runtime::limits::LimitOverrides;

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
    /// An automated rollout for new versions (`[rollout]`: steps and thresholds, see
    /// [`RolloutPolicy`]); with `on_new_version = "switch"` a new version starts its first
    /// step instead of taking all traffic.
    pub rollout: Option<RolloutPolicy>,
    /// What the prediction log keeps of each tensor (`[redaction]`: `inputs = { ssn = "drop",
    /// email = "hash" }`, `outputs = { ... }`; tensors not named are kept).
    pub redaction: edgeinfer_monitor::redaction::Redaction,
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
            rollout: None,
            redaction: Default::default(),
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
        if let Some(policy) = &config.rollout {
            policy
                .validate()
                .map_err(|e| Error::Manifest { path: path.clone(), message: format!("[rollout]: {e}") })?;
        }
        Ok(config)
    }
}
