//! Alert rules evaluated in-process: each rule yields one alert per model (or version, or
//! shadow pair) it watches, which moves pending -> firing (the condition held for `for`) ->
//! resolved. Firing and resolved go to the log, `GET /v2/alerts`, the
//! `edgeinfer_alerts_firing` gauge and the rule's webhooks.

pub mod export;
pub mod rules;
pub mod webhook;

pub use rules::{AlertRule, Condition};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::observer::Observer;
use super::registry::ModelRegistry;
use super::timeseries::Series;
use edgeinfer_runtime::clock::now_rfc3339;

/// Recent firing/resolved events kept for `GET /v2/alerts`.
const RECENT: usize = 200;

type Labels = BTreeMap<String, String>;

/// What rules read.
pub struct Signals<'a> {
    /// Request time series.
    pub series: &'a Series,
    /// Versions, traffic and shadow agreement.
    pub registry: &'a ModelRegistry,
    /// Quality and drift.
    pub observer: &'a Observer,
    /// Requests waiting for a slot now.
    pub queued: usize,
    /// The followed registry repositories.
    pub follows: &'a [crate::follow_figures::FollowFigures],
}

#[derive(Debug, Clone)]
struct Active {
    firing: bool,
    since: Instant,
    started_at: String,
    value: f64,
    detail: Option<String>,
}

/// An alert that is pending or firing.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// The rule's name.
    pub name: String,
    /// `pending` or `firing`.
    pub state: &'static str,
    /// Labels (alertname, severity, model, version...).
    pub labels: Labels,
    /// The latest value of the watched figure.
    pub value: f64,
    /// When the condition started to hold (RFC 3339).
    pub since: String,
}

/// A firing or resolved transition.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The rule's name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// The value at the transition.
    pub value: f64,
    /// When (RFC 3339).
    pub at: String,
}

/// The alert rules of a server and their state.
pub struct Alerts {
    rules: Vec<AlertRule>,
    external_url: String,
    active: Mutex<BTreeMap<(usize, Labels), Active>>,
    events: Mutex<VecDeque<AlertEvent>>,
    evaluations: std::sync::atomic::AtomicU64,
}

impl Alerts {
    /// Rules from the config; `external_url` is where notifications point back to.
    pub fn new(rules: Vec<AlertRule>, external_url: String) -> Alerts {
        Alerts {
            rules,
            external_url,
            active: Mutex::default(),
            events: Mutex::default(),
            evaluations: Default::default(),
        }
    }

    /// Whether there is anything to evaluate.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Evaluates every rule once and notifies transitions.
    pub fn evaluate(&self, signals: &Signals<'_>) {
        let now = Instant::now();
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        for (index, rule) in self.rules.iter().enumerate() {
            let values = values(rule, signals);
            let breaching: BTreeMap<Labels, (f64, Option<String>)> = values
                .into_iter()
                .filter(
                    |(_, v, _)| if rule.condition.fires_below() { *v < rule.threshold } else { *v > rule.threshold },
                )
                .map(|(labels, value, detail)| (labels, (value, detail)))
                .collect();
            for (labels, (value, detail)) in &breaching {
                let key = (index, labels.clone());
                let entry = active.entry(key).or_insert_with(|| Active {
                    firing: false,
                    since: now,
                    started_at: now_rfc3339(),
                    value: *value,
                    detail: None,
                });
                entry.value = *value;
                entry.detail.clone_from(detail);
                if !entry.firing && now.duration_since(entry.since) >= rule.hold() {
                    entry.firing = true;
                    entry.started_at = now_rfc3339();
                    self.notify(rule, "firing", labels, *value, &entry.started_at, detail.as_deref());
                }
            }
            let ended: Vec<(usize, Labels)> =
                active.keys().filter(|(i, labels)| *i == index && !breaching.contains_key(labels)).cloned().collect();
            for key in ended {
                if let Some(gone) = active.remove(&key)
                    && gone.firing
                {
                    self.notify(rule, "resolved", &key.1, gone.value, &gone.started_at, gone.detail.as_deref());
                }
            }
        }
        self.evaluations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn notify(
        &self,
        rule: &AlertRule,
        status: &'static str,
        labels: &Labels,
        value: f64,
        started_at: &str,
        detail: Option<&str>,
    ) {
        let now = now_rfc3339();
        if status == "firing" {
            tracing::warn!(alert = %rule.name, ?labels, value, threshold = rule.threshold, "alert firing");
        } else {
            tracing::info!(alert = %rule.name, ?labels, value, "alert resolved");
        }
        let event = AlertEvent { status, name: rule.name.clone(), labels: labels.clone(), value, at: now.clone() };
        {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            events.push_back(event);
            while events.len() > RECENT {
                events.pop_front();
            }
        }
        let direction = if rule.condition.fires_below() { "below" } else { "above" };
        let mut annotations = BTreeMap::from([
            (
                "summary".to_string(),
                format!("{} {direction} {} (now {value:.4})", rule.condition.name(), rule.threshold),
            ),
            ("value".to_string(), value.to_string()),
            ("threshold".to_string(), rule.threshold.to_string()),
        ]);
        if let Some(detail) = detail {
            annotations.insert("description".to_string(), detail.to_string());
        }
        let notice = webhook::Notice {
            status,
            labels: labels.clone(),
            annotations,
            starts_at: started_at.to_string(),
            ends_at: if status == "resolved" { now } else { "0001-01-01T00:00:00Z".into() },
        };
        for hook in &rule.webhook {
            webhook::send(hook.url.clone(), webhook::payload(&notice, &self.external_url));
        }
    }

    /// Pending and firing alerts.
    pub fn active(&self) -> Vec<AlertView> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .iter()
            .map(|((index, labels), state)| AlertView {
                name: self.rules[*index].name.clone(),
                state: if state.firing { "firing" } else { "pending" },
                labels: labels.clone(),
                value: state.value,
                since: state.started_at.clone(),
            })
            .collect()
    }

    /// The rules, the active alerts and the recent events, for `GET /v2/alerts`.
    pub fn to_json(&self) -> serde_json::Value {
        let events: Vec<AlertEvent> = self.events.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        let evaluations = self.evaluations.load(std::sync::atomic::Ordering::Relaxed);
        serde_json::json!({ "rules": self.rules, "alerts": self.active(), "events": events, "evaluations": evaluations })
    }

    /// Firing alerts per (alertname, severity).
    pub fn firing_counts(&self) -> BTreeMap<(String, String), i64> {
        let mut counts: BTreeMap<(String, String), i64> =
            self.rules.iter().map(|r| ((r.name.clone(), r.severity.clone()), 0)).collect();
        for view in self.active().into_iter().filter(|a| a.state == "firing") {
            let severity = view.labels.get("severity").cloned().unwrap_or_default();
            *counts.entry((view.name, severity)).or_default() += 1;
        }
        counts
    }
}

/// The current value of a rule's figure for each thing it watches, with what the
/// notification should say about it beyond the number.
fn values(rule: &AlertRule, signals: &Signals<'_>) -> Vec<(Labels, f64, Option<String>)> {
    readings(rule, signals)
        .into_iter()
        .map(|(labels, value)| (labels, value, None))
        .chain(rollouts(rule, signals))
        .collect()
}

/// `rollout_rolled_back`: 1 per model whose last rollout a failing check rolled back.
fn rollouts(rule: &AlertRule, signals: &Signals<'_>) -> Vec<(Labels, f64, Option<String>)> {
    if rule.condition != Condition::RolloutRolledBack {
        return Vec::new();
    }
    signals
        .registry
        .rollouts()
        .into_iter()
        .filter(|(model, _)| rule.model == "*" || rule.model == *model)
        .map(|(model, rollout)| {
            let failed = rollout.state == crate::rollout::RolloutState::RolledBack
                && rollout.action == crate::rollout::Action::Rollback;
            let labels = rule_labels(rule, &[("model", model), ("version", rollout.candidate.to_string())]);
            let detail = format!(
                "rollout of version {} rolled back at step {} (\"{}\"): {}",
                rollout.candidate,
                rollout.step,
                rollout.current_step(),
                rollout.reason
            );
            (labels, f64::from(u8::from(failed)), Some(detail))
        })
        .collect()
}

/// A rule's alert labels: alertname, severity and `extra`.
fn rule_labels(rule: &AlertRule, extra: &[(&str, String)]) -> Labels {
    let mut labels =
        Labels::from([("alertname".to_string(), rule.name.clone()), ("severity".to_string(), rule.severity.clone())]);
    labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    labels
}

/// The figures of every condition but the rollouts'.
fn readings(rule: &AlertRule, signals: &Signals<'_>) -> Vec<(Labels, f64)> {
    let labels = |extra: &[(&str, String)]| rule_labels(rule, extra);
    match rule.condition {
        Condition::QueueDepth => return vec![(labels(&[]), signals.queued as f64)],
        Condition::RolloutRolledBack => return Vec::new(),
        Condition::RegistryUnreachable => {
            return signals
                .follows
                .iter()
                .filter(|follow| rule.model == "*" || rule.model == follow.model)
                .map(|follow| {
                    let extra = [("model", follow.model.clone()), ("repository", follow.repository.clone())];
                    (labels(&extra), f64::from(u8::from(!follow.reachable)))
                })
                .collect();
        }
        _ => {}
    }
    let models: Vec<String> = if rule.model == "*" {
        let mut all = signals.registry.model_names();
        all.extend(signals.series.models());
        all.sort();
        all.dedup();
        all
    } else {
        vec![rule.model.clone()]
    };
    let mut found = Vec::new();
    for model in models {
        let figures = || signals.series.window(&model, rule.window());
        let model_labels = labels(&[("model", model.clone())]);
        match rule.condition {
            Condition::ErrorRate => found.extend(figures().error_rate.map(|v| (model_labels, v))),
            Condition::ServerErrorRate => found.extend(figures().server_error_rate.map(|v| (model_labels, v))),
            Condition::P99LatencyMs => found.extend(figures().p99_ms.map(|v| (model_labels, v))),
            Condition::RequestRate => found.push((model_labels, figures().rate)),
            Condition::Accuracy => {
                for (version, view) in signals.observer.quality(signals.registry, &model) {
                    if let Some(accuracy) = view.accuracy {
                        found.push((labels(&[("model", model.clone()), ("version", version.to_string())]), accuracy));
                    }
                }
            }
            Condition::Psi => {
                for view in signals.observer.drift(signals.registry, &model) {
                    found.push((labels(&[("model", model.clone()), ("version", view.version.clone())]), view.max_psi));
                }
            }
            Condition::ShadowAgreement => {
                let Ok(traffic) = signals.registry.traffic(&model) else { continue };
                // Only the current shadow: a pair's counts outlive its deployment.
                let current = traffic.deployment.shadow.clone();
                for pair in traffic.agreement.into_iter().filter(|p| current.as_ref() == Some(&p.shadow)) {
                    if let Some(rate) = pair.agreement_rate {
                        let extra = [("model", model.clone()), ("version", pair.shadow.clone()), ("live", pair.live)];
                        found.push((labels(&extra), rate));
                    }
                }
            }
            Condition::QueueDepth | Condition::RolloutRolledBack | Condition::RegistryUnreachable => {}
        }
    }
    found
}
