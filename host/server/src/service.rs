//! The transport-neutral service: one inference whatever the transport (REST or gRPC):
//! quota, body, the shared pipeline (inline for fast versions, else on a blocking thread that
//! owns the slot; through the version's dynamic batcher when it batches), settled into
//! statistics, metrics, the prediction log and shadow traffic; and the statistics view both
//! transports serve.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::App;
use super::body::{InferenceBody, blocking};
use super::coalescer::{CallReport, Enrolled, Finish, run_call};
use super::metrics::{Metrics, Outcome, Timings, VersionLabels};
use super::registry::{Route, ServedVersion};
use super::response::ApiError;
use super::security::{AuditEvent, AuditKind, Caller};
use super::shadow::ShadowJob;
use super::timeseries::Ending;
use crate::Error;
use crate::observer::Observed;
use edgeinfer_monitor::predictions::Role;
use edgeinfer_runtime::coalesce::{BatchKey, Member};
use edgeinfer_runtime::pipeline::{self, Options, ResponseBody};

use serde_json::{Value, json};

/// One inference whatever the transport (HTTP, gRPC): the caller's quota, then `body` (a
/// v2 HTTP body, or tensors the transport decoded), then the pipeline alone or through the
/// version's batch queue, counted and settled. Answers in the form the request came in.
/// A client's `deadline_ms` (gRPC's `grpc-timeout`) shortens the request's deadline, never
/// lengthens it.
pub async fn run(
    app: Arc<App>,
    route: Route,
    caller: Caller,
    action: String,
    body: impl std::future::Future<Output = Result<InferenceBody, ApiError>>,
    deadline_ms: Option<u64>,
) -> Result<ResponseBody, ApiError> {
    let labels = Metrics::labels(&route.live.model.manifest().name, route.live.version());
    let quota_key = caller.quota_key();
    if let Err(throttle) = app.security.quotas.admit(&quota_key, caller.limits()) {
        app.security.audit(AuditKind::Throttled, &caller, &action, "429", &throttle.to_string());
        return Err(rejected(&app, &labels, throttle.into()));
    }
    let body = body
        .await
        .map_err(|e| if e.status == hyper::StatusCode::SERVICE_UNAVAILABLE { rejected(&app, &labels, e) } else { e })?;
    let Route { live, shadow } = route;
    let mut limits = app.config.limits.over(live.limits);
    if let Some(client) = deadline_ms {
        let configured = limits.timeout_ms.unwrap_or(live.model.manifest().limits.timeout_ms);
        limits.timeout_ms = Some(configured.min(client.max(1)));
    }
    let sampled = app.observer.sampled(&live);
    let keep_tensors = shadow.is_some() || app.observer.wants_tensors(&live, sampled);
    let options = Options { limits, keep_tensors, assign_id: true };
    let request = Arc::new(InferRequest { app, caller, quota_key, action, labels, live, shadow, options, sampled });
    if request.live.batching.is_some() { batched(request, body).await } else { alone(request, body).await }
}

/// A refusal before running, counted as such.
fn rejected(app: &App, labels: &VersionLabels, error: ApiError) -> ApiError {
    app.metrics.count(labels, Outcome::Rejected);
    app.series.record(labels.model(), Ending::of_status(error.status.as_u16()), None);
    error
}

/// One admitted request and what settling it needs.
struct InferRequest {
    app: Arc<App>,
    caller: Caller,
    quota_key: String,
    action: String,
    labels: VersionLabels,
    live: Arc<ServedVersion>,
    shadow: Option<Arc<ServedVersion>>,
    options: Options,
    sampled: bool,
}

/// The request in its own call: a slot, then the whole pipeline, inline when the version is
/// fast (see `inline.rs`), else on a blocking thread that owns the slot.
async fn alone(request: Arc<InferRequest>, body: InferenceBody) -> Result<ResponseBody, ApiError> {
    let app = request.app.clone();
    let queued = Instant::now();
    let slot =
        app.admission.inference_slot().await.map_err(|refusal| rejected(&app, &request.labels, refusal.into()))?;
    let queue_time = queued.elapsed();
    let live = request.live.clone();
    let (body, budget) = body.into_parts();
    let work = move || {
        let _held = (slot, budget);
        let result = pipeline::run(&request.live.model, body, request.options);
        // A body that does not decode never reaches the model.
        let executions = match &result {
            Err(failure) if failure.times.infer.is_zero() => 0,
            _ => 1,
        };
        request.record_executions(executions);
        request.settle(queue_time, result)
    };
    run_inference(&app, &live, work).await
}

/// Runs `work` (which owns its slot) on this thread when the version is fast enough (see
/// `inline.rs`), else on a blocking thread.
async fn run_inference<T: Send + 'static>(
    app: &App,
    live: &ServedVersion,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    match app.inline.try_enter(live.stats.recent_infer.get()) {
        Some(_pass) => work(),
        None => blocking(work).await,
    }
}

/// The request through its version's batch queue (see `coalescer.rs`): decoded here, run in
/// whichever call takes it, settled by that call.
async fn batched(request: Arc<InferRequest>, body: InferenceBody) -> Result<ResponseBody, ApiError> {
    let app = request.app.clone();
    let live = request.live.clone();
    let queue = live.batching.as_ref().expect("batched() is only called for versions with a batch queue");
    let queued = Instant::now();
    let (body, budget) = body.into_parts();
    let (inputs, pending) = match pipeline::decode(body, request.options) {
        Ok(decoded) => decoded,
        Err(failure) => return request.settle(Duration::ZERO, Err(failure)),
    };
    let key = BatchKey::of(&inputs, &pending.requested).map(|(key, _)| key);
    let member = Member { inputs, rows: pending.rows, limits: request.options.limits };
    let requested = pending.requested.clone();
    let (reply, mut replied) = tokio::sync::oneshot::channel();
    let settling = request.clone();
    let finish: Finish = Box::new(move |outcome, call: &CallReport| {
        let _budget = budget; // the body's share of the budget is held until the request is settled
        let result = pipeline::answer(&settling.live.model, pending, outcome, call.infer_time);
        let queue_time = call.started.saturating_duration_since(queued);
        let _ = reply.send(settling.settle(queue_time, result));
    });
    let enrolled = Enrolled::new(queue, queue.enqueue(key, requested, member, finish));
    let lost = || ApiError::new(hyper::StatusCode::INTERNAL_SERVER_ERROR, "the batch running this request failed");
    tokio::select! {
        biased;
        answered = &mut replied => return answered.unwrap_or_else(|_| Err(lost())),
        slot = app.admission.inference_slot() => match slot {
            Err(refusal) => {
                if queue.withdraw(enrolled.ticket) {
                    return Err(rejected(&app, &request.labels, refusal.into()));
                }
            }
            Ok(slot) => {
                queue.await_company(enrolled.ticket).await;
                if let Some(call) = queue.take(enrolled.ticket) {
                    let caller = request.clone();
                    let work = move || {
                        let _slot = slot;
                        caller.record_executions(run_call(&caller.live.model, call));
                        Ok(())
                    };
                    run_inference(&app, &live, work).await?;
                }
            }
        }
    }
    replied.await.unwrap_or_else(|_| Err(lost()))
}

impl InferRequest {
    /// Counts model calls (one for a request alone; a batch's calls once, by its leader) in
    /// the statistics and the metrics.
    fn record_executions(&self, executions: u64) {
        self.live.stats.record_executions(executions);
        self.app.metrics.record_executions(&self.labels, executions);
    }

    /// Records a finished request (statistics, metrics, quota, audit, prediction log,
    /// shadow copy) and turns it into the HTTP answer.
    fn settle(
        &self,
        queue_time: Duration,
        result: Result<pipeline::Answer, pipeline::Failure>,
    ) -> Result<ResponseBody, ApiError> {
        let app = &self.app;
        let live = &self.live;
        live.stats.record_request(queue_time, &result);
        if let Err(failure) = &result
            && ApiError::status_of(&failure.error).is_server_error()
        {
            live.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        record_metrics(app, &self.labels, queue_time, &result);
        if let Ok(answer) = &result {
            app.metrics.record_rows(&self.labels, answer.rows);
        }
        charge_and_audit(app, &self.caller, &self.quota_key, &self.action, live, &result);
        let answer = result.map_err(|failure| ApiError::from(*failure.error))?;
        if let Some(kept) = answer.tensors {
            let sampled = self.sampled;
            let copy = self.shadow.clone().map(|shadow| (shadow, kept.clone()));
            let caller = self.caller.token.as_ref().map(|t| t.name.as_str());
            let request = Observed { id: answer.id.as_deref(), caller, sampled };
            app.observer.observe(live, Role::Live, request, kept);
            if let Some((shadow, kept)) = copy {
                app.shadow.submit(ShadowJob {
                    live_version: live.version(),
                    live_outputs: kept.outputs,
                    shadow,
                    inputs: kept.inputs,
                    requested: kept.requested,
                    limits: self.options.limits,
                    id: answer.id,
                    caller: caller.map(str::to_string),
                    sampled,
                });
            }
        }
        Ok(answer.body)
    }
}

/// Feeds the request's outcome and timings to the metrics.
fn record_metrics(
    app: &App,
    labels: &VersionLabels,
    queue: std::time::Duration,
    result: &Result<pipeline::Answer, pipeline::Failure>,
) {
    let (outcome, times, fuel) = match result {
        Ok(answer) => (Outcome::Success, answer.times, Some(answer.fuel_used)),
        Err(failure) => (Outcome::of(&failure.error), failure.times, None),
    };
    let duration = times.total();
    app.metrics.record_run(labels, outcome, Timings { duration, queue, instance_start: times.instantiate, fuel });
    let ending = match result {
        Ok(_) => Ending::Answered,
        Err(failure) => Ending::of_status(ApiError::status_of(&failure.error).as_u16()),
    };
    app.series.record(labels.model(), ending, Some(duration));
}

/// Charges the fuel a request consumed to its caller, and audits what the sandbox stopped.
fn charge_and_audit(
    app: &App,
    caller: &Caller,
    quota_key: &str,
    action: &str,
    live: &ServedVersion,
    result: &Result<pipeline::Answer, pipeline::Failure>,
) {
    let failure = match result {
        Ok(answer) => {
            app.security.quotas.charge(quota_key, answer.fuel_used);
            return;
        }
        Err(failure) => &failure.error,
    };
    let stopped = match failure.as_ref() {
        Error::FuelExhausted { budget } => {
            app.security.quotas.charge(quota_key, *budget);
            true
        }
        Error::DeadlineExceeded { .. } | Error::MemoryLimit { .. } | Error::GuestTrap(_) | Error::OutputLimit(_) => {
            true
        }
        _ => false,
    };
    if stopped {
        let event = AuditEvent::new(AuditKind::GuestTrap, action, "500", &failure.to_string());
        let event =
            AuditEvent { model: Some(live.model.manifest().name.clone()), version: Some(live.version()), ..event };
        app.security.audit_event(caller.stamp(event));
    }
}

/// The statistics of the loaded versions (of `model`, of `version`), as
/// `{"model_stats": [...]}`.
pub(crate) fn statistics(app: &App, model: Option<&str>, version: Option<u64>) -> Value {
    let rows: Vec<Value> = app
        .registry
        .all_loaded()
        .into_iter()
        .filter(|(name, v, _)| model.is_none_or(|m| m == name) && version.is_none_or(|want| want == *v))
        .map(|(name, v, served)| served.stats.to_json(&name, v))
        .collect();
    json!({ "model_stats": rows })
}
