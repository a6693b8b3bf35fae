//! Prometheus metrics (`GET /metrics`, OpenMetrics text) built with the official
//! `prometheus-client` crate: per model and version, requests by outcome, latency, queue time,
//! instance start and fuel histograms; gauges for load, loaded versions and traffic weights,
//! taken from the admission counters and the serving table at scrape time; counters of
//! version changes fed by the registry's change observer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::admission::AdmissionSnapshot;
use super::alerts::Alerts;
pub use super::follow_figures::FollowFigures;
use super::history::{Change, ChangeKind};
use super::observer::Observer;
use super::registry::ModelRegistry;
use crate::Error;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `model` and `version`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    model: String,
    version: String,
}

impl VersionLabels {
    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }
}

/// `model`, `version` and `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    version: String,
    outcome: &'static str,
}

/// `model` and the change `kind` (load, refused, split, rollback, unload).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    model: String,
    kind: &'static str,
}

/// `model` and a rollout's `decision` (start, advance, promote, rollback, pause, resume,
/// abort).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    model: String,
    decision: String,
}

/// A shadow pair.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    model: String,
    live: String,
    shadow: String,
}

/// A feature of a model version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    model: String,
    version: String,
    feature: String,
}

/// Feedback items by how they were joined.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedbackLabels {
    result: &'static str,
}

/// An alert rule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    alertname: String,
    severity: String,
}

/// A followed registry repository.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabels {
    repository: String,
}

/// A followed registry repository and what became of its artifacts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryOutcomeLabels {
    repository: String,
    outcome: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// How one request ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Success,
    /// The caller's fault (400).
    InvalidInput,
    /// Stopped by its fuel budget.
    FuelExhausted,
    /// Stopped by its deadline.
    DeadlineExceeded,
    /// Stopped by its memory cap.
    MemoryLimit,
    /// The guest trapped or broke an output limit; or the host failed.
    Trap,
    /// Refused before running: queue, body budget or quota (503/429).
    Rejected,
}

impl Outcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::InvalidInput => "invalid_input",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::DeadlineExceeded => "deadline_exceeded",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Trap => "trap",
            Outcome::Rejected => "rejected",
        }
    }

    /// The outcome of a request that failed with `error`.
    pub fn of(error: &Error) -> Outcome {
        match error {
            Error::InvalidInput { .. } | Error::Protocol(_) => Outcome::InvalidInput,
            Error::FuelExhausted { .. } => Outcome::FuelExhausted,
            Error::DeadlineExceeded { .. } => Outcome::DeadlineExceeded,
            Error::MemoryLimit { .. } => Outcome::MemoryLimit,
            _ => Outcome::Trap,
        }
    }
}

type HistogramFamily = Family<VersionLabels, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 50 µs .. ~26 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

fn fuel_histogram() -> Histogram {
    // 10^4 .. ~10^11 units
    Histogram::new(exponential_buckets(10_000.0, 4.0, 12))
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    queue: HistogramFamily,
    instance_start: HistogramFamily,
    fuel: HistogramFamily,
    in_flight: Gauge,
    queue_depth: Gauge,
    connections: Gauge,
    loaded: Family<VersionLabels, Gauge>,
    weight: Family<VersionLabels, Gauge>,
    agreement: Family<ShadowLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    changes: Family<ChangeLabels, Counter>,
    rollout_decisions: Family<RolloutLabels, Counter>,
    disconnects: Counter,
    accuracy: Family<VersionLabels, FloatGauge>,
    mae: Family<VersionLabels, FloatGauge>,
    rmse: Family<VersionLabels, FloatGauge>,
    psi: Family<FeatureLabels, FloatGauge>,
    drifted: Family<VersionLabels, FloatGauge>,
    feedback: Family<FeedbackLabels, Counter>,
    predictions_logged: Counter,
    predictions_dropped: Counter,
    alerts_firing: Family<AlertLabels, Gauge>,
    inferences: Family<VersionLabels, Counter>,
    executions: Family<VersionLabels, Counter>,
    registry_reachable: Family<RegistryLabels, Gauge>,
    registry_artifacts: Family<RegistryOutcomeLabels, Counter>,
    /// Requests per (model, version), all outcomes: what the status page shows.
    totals: std::sync::Mutex<std::collections::HashMap<VersionLabels, u64>>,
    /// Scrapes refresh the gauges (clear, then set) and the disconnect counter (read, then
    /// add the difference): one at a time, or two could interleave and miscount.
    scrape: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics, registered under the `edgeinfer_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("edgeinfer");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = HistogramFamily::new_with_constructor(seconds_histogram);
        let queue = HistogramFamily::new_with_constructor(seconds_histogram);
        let instance_start = HistogramFamily::new_with_constructor(seconds_histogram);
        let fuel = HistogramFamily::new_with_constructor(fuel_histogram);
        let (in_flight, queue_depth, connections) = (Gauge::default(), Gauge::default(), Gauge::default());
        let loaded = Family::<VersionLabels, Gauge>::default();
        let weight = Family::<VersionLabels, Gauge>::default();
        let agreement = Family::<ShadowLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let changes = Family::<ChangeLabels, Counter>::default();
        let rollout_decisions = Family::<RolloutLabels, Counter>::default();
        let disconnects = Counter::default();
        let (accuracy, mae, rmse, drifted) =
            (Family::default(), Family::default(), Family::default(), Family::default());
        let psi = Family::<FeatureLabels, FloatGauge>::default();
        let feedback = Family::<FeedbackLabels, Counter>::default();
        let (predictions_logged, predictions_dropped) = (Counter::default(), Counter::default());
        let alerts_firing = Family::<AlertLabels, Gauge>::default();
        let (inferences, executions) = (Family::default(), Family::default());
        registry.register(
            "inference_count",
            "Rows inferred (a request of n rows counts n), as Triton's inference count",
            inferences.clone(),
        );
        registry.register(
            "execution_count",
            "Model calls: one per request, one per dynamic batch (Triton's execution count)",
            executions.clone(),
        );
        registry.register("model_accuracy", "Accuracy over the quality window (from feedback)", accuracy.clone());
        registry.register("model_mae", "Mean absolute error over the quality window", mae.clone());
        registry.register("model_rmse", "Root mean squared error over the quality window", rmse.clone());
        registry.register("feature_drift_psi", "Population stability index of a feature vs its reference", psi.clone());
        registry.register(
            "drifted_feature_ratio",
            "Share of features whose PSI is over the drift threshold",
            drifted.clone(),
        );
        registry.register("feedback_labels", "Feedback labels by result (joined, unknown_id)", feedback.clone());
        registry.register(
            "predictions_logged",
            "Predictions written to the prediction log",
            predictions_logged.clone(),
        );
        registry.register(
            "predictions_dropped",
            "Predictions not logged because the writer was behind",
            predictions_dropped.clone(),
        );
        registry.register("alerts_firing", "Firing alerts per rule", alerts_firing.clone());
        registry.register("requests", "Inference requests by outcome", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from decoding a request to its encoded answer (queueing excluded)",
            duration.clone(),
        );
        registry.register("queue_duration_seconds", "Time spent waiting for an inference slot", queue.clone());
        registry.register(
            "instance_start_seconds",
            "Time to create a fresh instance, for requests the model answered",
            instance_start.clone(),
        );
        registry.register("fuel_consumed", "Fuel one request consumed", fuel.clone());
        registry.register("requests_in_flight", "Inferences running now", in_flight.clone());
        registry.register("queue_depth", "Requests waiting for an inference slot", queue_depth.clone());
        registry.register("open_connections", "Open client connections", connections.clone());
        registry.register("model_version_loaded", "1 for every loaded model version", loaded.clone());
        registry.register("traffic_weight_percent", "Share of a model's traffic per version", weight.clone());
        registry.register("shadow_agreement_ratio", "Share of shadow copies that agreed", agreement.clone());
        registry.register("version_changes", "Version loads, refusals, splits, rollbacks, unloads", changes.clone());
        registry.register(
            "rollout_decisions",
            "Rollout moves: start, advance, promote, rollback, pause, resume, abort",
            rollout_decisions.clone(),
        );
        registry.register("client_disconnects", "Requests whose client left before the answer", disconnects.clone());
        let registry_reachable = Family::<RegistryLabels, Gauge>::default();
        let registry_artifacts = Family::<RegistryOutcomeLabels, Counter>::default();
        registry.register(
            "registry_reachable",
            "1 while a followed registry repository answers its polls",
            registry_reachable.clone(),
        );
        registry.register(
            "registry_artifacts",
            "Followed registry artifacts by outcome (installed, refused) and failed polls (poll_failed)",
            registry_artifacts.clone(),
        );
        registry.register(
            "build",
            "edgeinfer build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            requests,
            duration,
            queue,
            instance_start,
            fuel,
            in_flight,
            queue_depth,
            connections,
            loaded,
            weight,
            agreement,
            changes,
            rollout_decisions,
            disconnects,
            accuracy,
            mae,
            rmse,
            psi,
            drifted,
            feedback,
            predictions_logged,
            predictions_dropped,
            alerts_firing,
            inferences,
            executions,
            registry_reachable,
            registry_artifacts,
            totals: std::sync::Mutex::default(),
            scrape: std::sync::Mutex::new(()),
        }
    }

    /// Labels of one model version.
    pub fn labels(model: &str, version: u64) -> VersionLabels {
        VersionLabels { model: model.to_string(), version: version.to_string() }
    }

    /// Counts one request's outcome.
    pub fn count(&self, labels: &VersionLabels, outcome: Outcome) {
        let key =
            RequestLabels { model: labels.model.clone(), version: labels.version.clone(), outcome: outcome.label() };
        self.requests.get_or_create(&key).inc();
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        match totals.get_mut(labels) {
            Some(count) => *count += 1,
            None => drop(totals.insert(labels.clone(), 1)),
        }
    }

    /// Requests counted per version of `model` (the sum of `edgeinfer_requests_total` over
    /// outcomes).
    pub fn request_totals(&self, model: &str) -> std::collections::BTreeMap<String, u64> {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.iter().filter(|(l, _)| l.model == model).map(|(l, n)| (l.version.clone(), *n)).collect()
    }

    /// Records a request that ran: its outcome, duration, queue time, instance start, fuel.
    pub fn record_run(&self, labels: &VersionLabels, outcome: Outcome, ran: Timings) {
        self.count(labels, outcome);
        self.duration.get_or_create(labels).observe(ran.duration.as_secs_f64());
        self.queue.get_or_create(labels).observe(ran.queue.as_secs_f64());
        if !ran.instance_start.is_zero() {
            self.instance_start.get_or_create(labels).observe(ran.instance_start.as_secs_f64());
        }
        if let Some(fuel) = ran.fuel {
            self.fuel.get_or_create(labels).observe(fuel as f64);
        }
    }

    /// Counts `rows` inferred by an answered request.
    pub fn record_rows(&self, labels: &VersionLabels, rows: u64) {
        self.inferences.get_or_create(labels).inc_by(rows);
    }

    /// Counts model calls.
    pub fn record_executions(&self, labels: &VersionLabels, executions: u64) {
        self.executions.get_or_create(labels).inc_by(executions);
    }

    /// Counts a logged registry change.
    pub fn change(&self, change: &Change) {
        let kind = match change.kind {
            ChangeKind::Load => "load",
            ChangeKind::Unload => "unload",
            ChangeKind::Refused => "refused",
            ChangeKind::Split => "split",
            ChangeKind::Rollback => "rollback",
            ChangeKind::Rollout => "rollout",
        };
        self.changes.get_or_create(&ChangeLabels { model: change.model.clone(), kind }).inc();
        if let Some(decision) = change.rollout.as_ref().and_then(|r| r["action"].as_str()) {
            let labels = RolloutLabels { model: change.model.clone(), decision: decision.to_string() };
            self.rollout_decisions.get_or_create(&labels).inc();
        }
    }

    /// The OpenMetrics text, with the gauges read from `admission`, `registry`, the
    /// observer and the alerts now.
    pub fn render(
        &self,
        admission: AdmissionSnapshot,
        registry: &ModelRegistry,
        observer: &Observer,
        alerts: &Alerts,
        follows: &[FollowFigures],
    ) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        self.in_flight.set(gauge(admission.in_flight));
        self.queue_depth.set(gauge(admission.queued));
        self.connections.set(gauge(admission.connections));
        let seen = self.disconnects.get();
        self.disconnects.inc_by(admission.client_disconnected.saturating_sub(seen));
        self.loaded.clear();
        self.weight.clear();
        self.agreement.clear();
        for (model, version, _) in registry.all_loaded() {
            self.loaded.get_or_create(&Self::labels(&model, version)).set(1);
        }
        for model in registry.model_names() {
            let Ok(view) = registry.traffic(&model) else { continue };
            for (version, percent) in &view.deployment.split {
                let labels = VersionLabels { model: model.clone(), version: version.clone() };
                self.weight.get_or_create(&labels).set(i64::from(*percent));
            }
            for pair in &view.agreement {
                let labels =
                    ShadowLabels { model: model.clone(), live: pair.live.clone(), shadow: pair.shadow.clone() };
                if let Some(rate) = pair.agreement_rate {
                    self.agreement.get_or_create(&labels).set(rate);
                }
            }
        }
        self.render_monitoring(registry, observer, alerts);
        for follow in follows {
            let labels = RegistryLabels { repository: follow.repository.clone() };
            self.registry_reachable.get_or_create(&labels).set(i64::from(follow.reachable));
            let (installed, refused, failed) = follow.counts;
            for (outcome, total) in [("installed", installed), ("refused", refused), ("poll_failed", failed)] {
                let counter = self
                    .registry_artifacts
                    .get_or_create(&RegistryOutcomeLabels { repository: follow.repository.clone(), outcome });
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}

impl Metrics {
    /// Quality, drift, feedback, prediction log and alert figures (scrape lock held).
    fn render_monitoring(&self, registry: &ModelRegistry, observer: &Observer, alerts: &Alerts) {
        for family in [&self.accuracy, &self.mae, &self.rmse, &self.drifted] {
            family.clear();
        }
        self.psi.clear();
        self.alerts_firing.clear();
        for model in registry.model_names() {
            for (version, view) in observer.quality(registry, &model) {
                let labels = Self::labels(&model, version);
                let figures = [(&self.accuracy, view.accuracy), (&self.mae, view.mae), (&self.rmse, view.rmse)];
                for (family, value) in figures {
                    if let Some(value) = value {
                        family.get_or_create(&labels).set(value);
                    }
                }
            }
            for view in observer.drift(registry, &model) {
                let labels = VersionLabels { model: model.clone(), version: view.version.clone() };
                self.drifted.get_or_create(&labels).set(view.drifted_share);
                for feature in view.features {
                    let labels =
                        FeatureLabels { model: model.clone(), version: view.version.clone(), feature: feature.name };
                    self.psi.get_or_create(&labels).set(feature.psi);
                }
            }
        }
        let (joined, unknown) = observer.feedback_counts();
        let catch_up = |counter: &Counter, total: u64| counter.inc_by(total.saturating_sub(counter.get()));
        catch_up(&self.feedback.get_or_create(&FeedbackLabels { result: "joined" }), joined);
        catch_up(&self.feedback.get_or_create(&FeedbackLabels { result: "unknown_id" }), unknown);
        let (written, dropped) = observer.log_counts();
        catch_up(&self.predictions_logged, written);
        catch_up(&self.predictions_dropped, dropped);
        for ((alertname, severity), count) in alerts.firing_counts() {
            self.alerts_firing.get_or_create(&AlertLabels { alertname, severity }).set(count);
        }
    }
}

/// What a request that ran took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Decode + infer + encode.
    pub duration: std::time::Duration,
    /// Waiting for a slot.
    pub queue: std::time::Duration,
    /// Creating the instance (zero when it failed before).
    pub instance_start: std::time::Duration,
    /// Fuel consumed, when known.
    pub fuel: Option<u64>,
}
