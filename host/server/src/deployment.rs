//! A model's deployment: how its traffic splits over loaded versions (blue/green, canary)
//! and which version, if any, receives a shadow copy of requests.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

/// Traffic split and shadow of one model. Weights are percentages summing to 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Version -> percentage of the model's unversioned requests.
    pub split: BTreeMap<u64, u32>,
    /// A version that gets a copy of requests and never answers.
    pub shadow: Option<u64>,
    /// Share of requests copied to the shadow, in percent (1-100).
    pub shadow_percent: u32,
}

/// A requested change of deployment, as sent to `PUT /v2/admin/models/{m}/traffic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficChange {
    /// The new deployment.
    pub deployment: Deployment,
    /// Why, for the history log.
    pub reason: String,
}

impl Deployment {
    /// All traffic on one version.
    pub fn single(version: u64) -> Self {
        Deployment { split: BTreeMap::from([(version, 100)]), shadow: None, shadow_percent: 100 }
    }

    /// The version for a request, given a uniform draw in `0..100`.
    pub fn pick(&self, draw: u32) -> Option<u64> {
        let mut acc = 0;
        for (&version, &weight) in &self.split {
            acc += weight;
            if draw < acc {
                return Some(version);
            }
        }
        None
    }

    /// Versions that answer requests (weight above zero).
    pub fn live_versions(&self) -> BTreeSet<u64> {
        self.split.iter().filter(|(_, w)| **w > 0).map(|(v, _)| *v).collect()
    }

    /// Whether `version` takes live or shadow traffic.
    pub fn uses(&self, version: u64) -> bool {
        self.split.get(&version).is_some_and(|w| *w > 0) || self.shadow == Some(version)
    }

    /// Checks the deployment against the loaded versions; the message names the problem.
    pub fn validate(&self, loaded: &BTreeSet<u64>) -> Result<(), String> {
        if self.split.is_empty() {
            return Err("`split` must name at least one version".into());
        }
        let total: u32 = self.split.values().sum();
        if total != 100 {
            return Err(format!("split weights must sum to 100, got {total}"));
        }
        if let Some(missing) = self.split.keys().find(|v| !loaded.contains(v)) {
            return Err(format!("version {missing} is not loaded (loaded: {})", list(loaded)));
        }
        if let Some(shadow) = self.shadow {
            if !loaded.contains(&shadow) {
                return Err(format!("shadow version {shadow} is not loaded (loaded: {})", list(loaded)));
            }
            if self.live_versions().contains(&shadow) {
                return Err(format!("shadow version {shadow} also takes live traffic; a shadow must not answer"));
            }
        }
        if !(1..=100).contains(&self.shadow_percent) {
            return Err(format!("`shadow_percent` must be 1-100, got {}", self.shadow_percent));
        }
        Ok(())
    }

    /// `{"split": {"1": 90, "2": 10}, "shadow": "3", "shadow_percent": 100}`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(DeploymentView::from(self)).unwrap_or_default()
    }

    /// Parses [`Deployment::to_json`]'s shape.
    pub fn from_json(value: &Value) -> Result<Deployment, String> {
        Ok(TrafficChange::from_json(value, false)?.deployment)
    }
}

/// A deployment as shown to clients: `{"split": {"1": 90, "2": 10}, "shadow": "3", ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeploymentView {
    /// Version -> percentage.
    pub split: BTreeMap<String, u32>,
    /// The shadow version, if any.
    pub shadow: Option<String>,
    /// Share of requests copied to the shadow (absent without a deployment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_percent: Option<u32>,
}

impl From<&Deployment> for DeploymentView {
    fn from(deployment: &Deployment) -> Self {
        DeploymentView {
            split: deployment.split.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            shadow: deployment.shadow.map(|v| v.to_string()),
            shadow_percent: Some(deployment.shadow_percent),
        }
    }
}

impl TrafficChange {
    /// Parses an admin request body; every message names the field at fault.
    pub fn parse(body: &[u8]) -> Result<TrafficChange, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("malformed traffic JSON: {e}"))?;
        Self::from_json(&value, true)
    }

    fn from_json(value: &Value, allow_reason: bool) -> Result<TrafficChange, String> {
        let object = value.as_object().ok_or("the traffic body must be a JSON object")?;
        let known = ["split", "shadow", "shadow_percent", "reason"];
        if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str()) || (!allow_reason && *k == "reason"))
        {
            return Err(format!("unknown field `{unknown}` (expected split, shadow, shadow_percent, reason)"));
        }
        let split_value = object.get("split").ok_or("missing `split`, e.g. {\"split\": {\"1\": 90, \"2\": 10}}")?;
        let split_object = split_value.as_object().ok_or("`split` must be an object of version: weight")?;
        let mut split = BTreeMap::new();
        for (version, weight) in split_object {
            let version = parse_version(version).map_err(|e| format!("split: {e}"))?;
            let weight = weight
                .as_u64()
                .filter(|w| *w <= 100)
                .ok_or_else(|| format!("split: weight of version {version} must be an integer 0-100, got {weight}"))?;
            split.insert(version, weight as u32);
        }
        let shadow = match object.get("shadow") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(parse_version(text).map_err(|e| format!("shadow: {e}"))?),
            Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| format!("shadow: version {n} is not valid"))?),
            Some(other) => return Err(format!("`shadow` must be a version like \"3\", got {other}")),
        };
        let shadow_percent = match object.get("shadow_percent") {
            None | Some(Value::Null) => 100,
            Some(value) => value
                .as_u64()
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| format!("`shadow_percent` must be an integer 1-100, got {value}"))?,
        };
        let reason = match object.get("reason") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => return Err(format!("`reason` must be a string, got {other}")),
        };
        Ok(TrafficChange { deployment: Deployment { split, shadow, shadow_percent }, reason })
    }
}

fn parse_version(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("version '{text}' is not a number"))
}

fn list(versions: &BTreeSet<u64>) -> String {
    if versions.is_empty() {
        return "none".into();
    }
    versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(versions: &[u64]) -> BTreeSet<u64> {
        versions.iter().copied().collect()
    }

    #[test]
    fn pick_follows_the_weights() {
        let deployment = TrafficChange::parse(br#"{"split": {"1": 90, "2": 10}}"#).unwrap().deployment;
        assert_eq!(deployment.pick(0), Some(1));
        assert_eq!(deployment.pick(89), Some(1));
        assert_eq!(deployment.pick(90), Some(2));
        assert_eq!(deployment.pick(99), Some(2));
        assert_eq!(deployment.pick(100), None);
    }

    #[test]
    fn bad_changes_are_named() {
        let cases: [(&[u8], &str); 8] = [
            (br#"{"split": {"1": 90, "2": 20}}"#, "sum to 100, got 110"),
            (br#"{"split": {"1": 100, "9": 0}}"#, "version 9 is not loaded"),
            (br#"{"split": {"1": 100}, "shadow": "1"}"#, "also takes live traffic"),
            (br#"{"split": {"1": 100}, "shadow": "7"}"#, "shadow version 7 is not loaded"),
            (br#"{"split": {"x": 100}}"#, "version 'x' is not a number"),
            (br#"{"split": {"1": -5}}"#, "integer 0-100"),
            (br#"{"split": {"1": 100}, "colour": 1}"#, "unknown field `colour`"),
            (br#"{"split": "#, "malformed traffic JSON"),
        ];
        for (body, expected) in cases {
            let error = TrafficChange::parse(body).and_then(|c| c.deployment.validate(&loaded(&[1, 2])).map(|_| c));
            let error = error.expect_err(expected);
            assert!(error.contains(expected), "{error:?} should mention {expected:?}");
        }
    }

    #[test]
    fn json_round_trips() {
        let deployment = Deployment { split: BTreeMap::from([(1, 50), (2, 50)]), shadow: Some(3), shadow_percent: 20 };
        assert_eq!(Deployment::from_json(&deployment.to_json()), Ok(deployment));
    }
}
