//! A rollout policy: `[rollout]` in `<repo>/<model>/config.toml`, or the `policy` of
//! `POST /v2/admin/models/{m}/rollout`. Ordered steps and the thresholds every step's checks
//! are held to; checked before anything changes, every message naming the key at fault.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use edgeinfer_runtime::clock::parse_duration;

/// One step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Step {
    /// `shadow N`: the candidate gets a copy of every request, answers none, until it has
    /// been compared on `requests` of them.
    Shadow {
        /// Copies to compare before the step may pass.
        requests: u64,
    },
    /// `canary P% DURATION`: the candidate answers `percent` of requests for at least
    /// `duration`.
    Canary {
        /// Share of requests the candidate answers, 1-99.
        percent: u32,
        /// How long the step lasts at least.
        duration: Duration,
    },
    /// `full`: the candidate takes all traffic and becomes the stable version.
    Full,
}

impl std::str::FromStr for Step {
    type Err = String;

    fn from_str(text: &str) -> Result<Step, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let example = "steps look like \"shadow 200\", \"canary 10% 2m\" or \"full\"";
        match words.as_slice() {
            ["full"] => Ok(Step::Full),
            ["shadow", count] => {
                let requests = count
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("step \"{text}\": the request count must be a whole number above 0"))?;
                Ok(Step::Shadow { requests })
            }
            ["canary", percent, duration] => {
                let percent = percent
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<u32>().ok())
                    .filter(|p| (1..=99).contains(p))
                    .ok_or_else(|| format!("step \"{text}\": the share must be a percentage 1%-99%, e.g. 10%"))?;
                let duration = parse_duration(duration).map_err(|e| format!("step \"{text}\": {e}"))?;
                Ok(Step::Canary { percent, duration })
            }
            _ => Err(format!("step \"{text}\" is not understood; {example}")),
        }
    }
}

impl TryFrom<String> for Step {
    type Error = String;

    fn try_from(text: String) -> Result<Step, String> {
        text.parse()
    }
}

impl From<Step> for String {
    fn from(step: Step) -> String {
        step.to_string()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Shadow { requests } => write!(f, "shadow {requests}"),
            Step::Canary { percent, duration } => write!(f, "canary {percent}% {}", format_duration(*duration)),
            Step::Full => write!(f, "full"),
        }
    }
}

fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) && ms > 0 => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) && ms > 0 => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// How a candidate earns its traffic: the steps, and what each step's checks must show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutPolicy {
    /// Ordered steps, the last one `"full"`, e.g.
    /// `["shadow 200", "canary 10% 2m", "canary 50% 2m", "full"]`.
    pub steps: Vec<Step>,
    /// Candidate errors (5xx, traps, limit hits; every failed shadow copy) per request, over
    /// the step, e.g. `0.01`.
    pub max_error_rate: f64,
    /// Candidate p99 latency / stable p99 latency over the step, e.g. `1.5`.
    pub max_p99_ratio: f64,
    /// Candidate fuel per request / stable fuel per request over the step, e.g. `1.5`.
    pub max_fuel_ratio: f64,
    /// Share of shadow-compared rows whose predictions agree (classes equal; numbers within
    /// `agreement_tolerance`), e.g. `0.99`; 0 turns the check off.
    pub min_agreement: f64,
    /// Numbers agree when `|candidate - stable| <= tolerance * max(1, |stable|)`, e.g. `0.001`.
    pub agreement_tolerance: f64,
    /// Candidate accuracy - stable accuracy from feedback labels, once both have
    /// `min_feedback` labelled predictions, e.g. `-0.02`.
    pub min_accuracy_delta: f64,
    /// Labelled predictions each version needs before accuracy is compared, e.g. `50`.
    pub min_feedback: usize,
    /// The candidate's largest feature PSI (input drift against its reference), when it
    /// has a reference and enough rows, e.g. `0.25`.
    pub max_psi: f64,
    /// Candidate requests per step before any decision, e.g. `100`.
    pub min_requests: u64,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            steps: vec![
                Step::Shadow { requests: 200 },
                Step::Canary { percent: 10, duration: Duration::from_secs(120) },
                Step::Canary { percent: 50, duration: Duration::from_secs(120) },
                Step::Full,
            ],
            max_error_rate: 0.01,
            max_p99_ratio: 1.5,
            max_fuel_ratio: 1.5,
            min_agreement: 0.99,
            agreement_tolerance: 1e-3,
            min_accuracy_delta: -0.02,
            min_feedback: 50,
            max_psi: 0.25,
            min_requests: 100,
        }
    }
}

impl RolloutPolicy {
    /// Checks what serde cannot; the message names the key and the reason.
    pub fn validate(&self) -> Result<(), String> {
        match self.steps.iter().position(|s| *s == Step::Full) {
            None => return Err("`steps` must end with \"full\"".into()),
            Some(at) if at + 1 != self.steps.len() => {
                return Err(format!("`steps`: \"full\" must be the last step, found at position {}", at + 1));
            }
            Some(_) => {}
        }
        let share = |key: &str, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(format!("`{key}` must be within 0 and 1, got {value}"))
            }
        };
        share("max_error_rate", self.max_error_rate)?;
        share("min_agreement", self.min_agreement)?;
        let positive = |key: &str, value: f64| {
            if value.is_finite() && value > 0.0 { Ok(()) } else { Err(format!("`{key}` must be above 0, got {value}")) }
        };
        positive("max_p99_ratio", self.max_p99_ratio)?;
        positive("max_fuel_ratio", self.max_fuel_ratio)?;
        positive("max_psi", self.max_psi)?;
        if !(0.0..=1.0).contains(&self.agreement_tolerance) {
            return Err(format!("`agreement_tolerance` must be within 0 and 1, got {}", self.agreement_tolerance));
        }
        if !(-1.0..=1.0).contains(&self.min_accuracy_delta) {
            return Err(format!("`min_accuracy_delta` must be within -1 and 1, got {}", self.min_accuracy_delta));
        }
        if self.min_requests == 0 {
            return Err("`min_requests` must be at least 1".into());
        }
        Ok(())
    }

    /// Parses and checks a policy given as JSON (the admin API).
    pub fn from_json(value: &serde_json::Value) -> Result<RolloutPolicy, String> {
        let policy: RolloutPolicy =
            serde_json::from_value(value.clone()).map_err(|e| format!("rollout policy: {e}"))?;
        policy.validate().map_err(|e| format!("rollout policy: {e}"))?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_print_back() {
        for text in ["shadow 200", "canary 10% 2m", "canary 50% 90s", "canary 5% 1500ms", "full"] {
            let step: Step = text.parse().expect(text);
            assert_eq!(step.to_string(), text);
        }
    }

    #[test]
    fn malformed_policies_name_the_problem() {
        let cases = [
            (r#"steps = ["canary 150% 1m", "full"]"#, "percentage 1%-99%"),
            (r#"steps = ["canary 10%", "full"]"#, "not understood"),
            (r#"steps = ["shadow 0", "full"]"#, "above 0"),
            (r#"steps = ["canary 10% 2minutes", "full"]"#, "not a duration"),
            (r#"steps = ["shadow 10"]"#, "must end with \"full\""),
            (r#"steps = ["full", "shadow 10"]"#, "must be the last step"),
            ("max_error_rate = 2.0", "`max_error_rate` must be within 0 and 1"),
            ("max_p99_ratio = 0", "`max_p99_ratio` must be above 0"),
            ("min_requests = 0", "`min_requests`"),
            ("max_errors = 1", "unknown field `max_errors`"),
        ];
        for (text, expected) in cases {
            let error = match toml::from_str::<RolloutPolicy>(text) {
                Ok(policy) => policy.validate().expect_err(text),
                Err(error) => error.to_string(),
            };
            assert!(error.contains(expected), "{text}: {error:?} should mention {expected:?}");
        }
    }

    #[test]
    fn the_default_is_the_documented_example() {
        let documented: RolloutPolicy = toml::from_str(
            r#"steps = ["shadow 200", "canary 10% 2m", "canary 50% 2m", "full"]
               max_error_rate = 0.01
               max_p99_ratio = 1.5
               min_agreement = 0.99
               min_accuracy_delta = -0.02
               min_requests = 100"#,
        )
        .expect("parses");
        assert_eq!(documented, RolloutPolicy::default());
        assert_eq!(RolloutPolicy::from_json(&serde_json::json!({"steps": ["full"]})).unwrap().steps, [Step::Full]);
    }
}
