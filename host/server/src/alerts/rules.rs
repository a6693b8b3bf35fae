//! Alert rules as written in `edgeinfer.toml` (`[[alerts]]`), checked before the server
//! starts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use edgeinfer_runtime::clock::parse_duration;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Share of requests not answered successfully (4xx and 5xx) over the window.
    ErrorRate,
    /// Share of requests answered with a 5xx over the window.
    ServerErrorRate,
    /// 99th percentile latency over the window, in ms.
    P99LatencyMs,
    /// Requests per second over the window.
    RequestRate,
    /// Accuracy of a version over its quality window (fires below the threshold).
    Accuracy,
    /// The largest feature PSI of a version over its drift window.
    Psi,
    /// Shadow agreement of a (live, shadow) pair (fires below the threshold).
    ShadowAgreement,
    /// Requests waiting for an inference slot, server-wide.
    QueueDepth,
    /// 1 while a model's last rollout was rolled back by a failing check (0 otherwise);
    /// the alert's `description` names the checks. Use a threshold of 0.
    RolloutRolledBack,
    /// 1 while a followed registry repository of the model cannot be polled (0 otherwise);
    /// what is loaded keeps serving meanwhile. Use a threshold of 0.
    RegistryUnreachable,
}

impl Condition {
    /// The label value, as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Condition::ErrorRate => "error_rate",
            Condition::ServerErrorRate => "server_error_rate",
            Condition::P99LatencyMs => "p99_latency_ms",
            Condition::RequestRate => "request_rate",
            Condition::Accuracy => "accuracy",
            Condition::Psi => "psi",
            Condition::ShadowAgreement => "shadow_agreement",
            Condition::QueueDepth => "queue_depth",
            Condition::RolloutRolledBack => "rollout_rolled_back",
            Condition::RegistryUnreachable => "registry_unreachable",
        }
    }

    /// Whether the rule fires below its threshold (else above).
    pub fn fires_below(self) -> bool {
        matches!(self, Condition::Accuracy | Condition::ShadowAgreement)
    }
}

/// One webhook receiver.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://host:port/path` (Alertmanager webhook receivers, chat bridges...).
    pub url: String,
}

/// One `[[alerts]]` rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The alert's name (`alertname` label), e.g. `"digits-errors"`.
    pub name: String,
    /// The model watched, or `"*"` for each model, e.g. `"digits"`.
    #[serde(default = "every_model")]
    pub model: String,
    /// What is watched.
    pub condition: Condition,
    /// Fires above it (below it for `accuracy` and `shadow_agreement`).
    pub threshold: f64,
    /// The window request figures are taken over, e.g. `"1m"` (`ms`, `s`, `m`, `h`).
    #[serde(default = "one_minute")]
    pub window: String,
    /// How long the condition must hold before the alert fires, e.g. `"30s"`.
    #[serde(rename = "for", default = "zero")]
    pub for_: String,
    /// The `severity` label, e.g. `"page"`.
    #[serde(default = "warning")]
    pub severity: String,
    /// Where firing and resolved notifications go (Alertmanager webhook JSON).
    #[serde(default)]
    pub webhook: Vec<Webhook>,
}

fn every_model() -> String {
    "*".into()
}
fn one_minute() -> String {
    "1m".into()
}
fn zero() -> String {
    "0s".into()
}
fn warning() -> String {
    "warning".into()
}

impl AlertRule {
    /// Checks what serde cannot; the message names the rule and the field.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c)) {
            return Err(format!("alert {name:?}: `name` must be letters, digits, '-', '_', ':' or '.'"));
        }
        parse_duration(&self.window).map_err(|e| format!("alert {name:?}: `window`: {e}"))?;
        parse_duration(&self.for_).map_err(|e| format!("alert {name:?}: `for`: {e}"))?;
        if !self.threshold.is_finite() {
            return Err(format!("alert {name:?}: `threshold` must be a number"));
        }
        for hook in &self.webhook {
            super::webhook::parse_url(&hook.url).map_err(|e| format!("alert {name:?}: webhook {:?}: {e}", hook.url))?;
        }
        Ok(())
    }

    /// The window as a duration (validated at load).
    pub fn window(&self) -> Duration {
        parse_duration(&self.window).unwrap_or(Duration::from_secs(60))
    }

    /// How long the condition must hold (validated at load).
    pub fn hold(&self) -> Duration {
        parse_duration(&self.for_).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rules_name_the_key() {
        let rule: AlertRule =
            toml::from_str("name = \"x\"\ncondition = \"error_rate\"\nthreshold = 0.2\nwindow = \"5x\"\n")
                .expect("parses");
        assert!(rule.validate().expect_err("bad window").contains("`window`"));
        let unknown = toml::from_str::<AlertRule>("name = \"x\"\ncondition = \"errors\"\nthreshold = 1\n");
        assert!(unknown.expect_err("unknown condition").to_string().contains("error_rate"));
    }
}
