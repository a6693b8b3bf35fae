//! One check of a rollout step as decided and recorded: the figure, the bound, the verdict.

use serde::{Deserialize, Serialize};

/// One check of a step: its figure now, the threshold, and whether it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `error_rate`, `p99_ratio`, `fuel_ratio`, `agreement`, `accuracy_delta` or `psi`.
    pub name: String,
    /// The figure (none while there is nothing to measure).
    pub value: Option<f64>,
    /// The policy's bound.
    pub threshold: f64,
    /// `max` (the value must not exceed the threshold) or `min`.
    pub bound: String,
    /// Samples the figure is taken over.
    pub samples: u64,
    /// `pass`, `fail` or `waiting` (too few samples to judge).
    pub status: String,
}

impl Check {
    pub(crate) fn new(
        name: &str,
        value: Option<f64>,
        threshold: f64,
        is_max: bool,
        samples: u64,
        enough: bool,
    ) -> Check {
        let status = match value {
            Some(_) if !enough => "waiting",
            Some(v) if (is_max && v <= threshold) || (!is_max && v >= threshold) => "pass",
            Some(_) => "fail",
            None => "waiting",
        };
        Check {
            name: name.into(),
            value,
            threshold,
            bound: if is_max { "max" } else { "min" }.into(),
            samples,
            status: status.into(),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let value = self.value.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        let relation = match (self.status.as_str(), self.bound.as_str()) {
            ("fail", "max") => ">",
            ("fail", _) => "<",
            (_, "max") => "<=",
            _ => ">=",
        };
        format!("{} {value} {relation} {} (over {} samples)", self.name, self.threshold, self.samples)
    }
}
