//! The infer endpoint over HTTP: admission (body budget, queue, slot), then the shared
//! pipeline on a blocking thread that owns the slot, then the HTTP framing.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};

use super::App;
use super::admission::DisconnectWatch;
use super::body::{blocking, read_body};
use super::registry::Route;
use super::registry::ServedVersion;
use super::response::{ApiError, Body};
use super::security::{AuditEvent, AuditKind, Caller};
use super::series::Ending;
use super::shadow::ShadowJob;
use super::telemetry::{Metrics, Outcome, Timings, VersionLabels};
use crate::Error;
use crate::monitor::predictions::Role;
use crate::pipeline::{self, Options, RequestBody};

/// Answers `POST .../infer` on `route`. The inference runs to its end (and is counted) even
/// when the client goes away meanwhile; the slot it holds is released only then.
pub async fn handle(
    app: Arc<App>,
    route: Route,
    request: Request<Incoming>,
    caller: Caller,
) -> Result<Response<Body>, ApiError> {
    let watch = DisconnectWatch::new(&app.admission);
    let answer = answer(app.clone(), route, request, caller).await;
    watch.done();
    answer
}

/// Reads, admits, runs and frames one request; dropped midway when the client goes away.
async fn answer(
    app: Arc<App>,
    route: Route,
    request: Request<Incoming>,
    caller: Caller,
) -> Result<Response<Body>, ApiError> {
    let action = format!("{} {}", request.method(), request.uri().path());
    let labels = Metrics::labels(&route.live.model.manifest().name, route.live.version());
    let model_name = route.live.model.manifest().name.clone();
    let rejected = |error: ApiError| {
        app.metrics.count(&labels, Outcome::Rejected);
        app.series.record(&model_name, Ending::of_status(error.status.as_u16()), None);
        error
    };
    let quota_key = caller.quota_key();
    if let Err(throttle) = app.security.quotas.admit(&quota_key, caller.limits()) {
        app.security.audit(AuditKind::Throttled, &caller, &action, "429", &throttle.to_string());
        return Err(rejected(throttle.into()));
    }
    let header_length = request
        .headers()
        .get(edgeinfer_oip::HEADER_LENGTH)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("Inference-Header-Content-Length is not text"))?;
    let body = read_body(&app, request)
        .await
        .map_err(|e| if e.status == hyper::StatusCode::SERVICE_UNAVAILABLE { rejected(e) } else { e })?;
    let queued = Instant::now();
    let slot = app.admission.inference_slot().await.map_err(|refusal| rejected(refusal.into()))?;
    let queue_time = queued.elapsed();
    let task_app = app.clone();
    let inline = app.inline.try_enter(route.live.stats.recent_infer.get());
    let work = move || {
        let _slot = slot;
        let Route { live, shadow } = route;
        let limits = task_app.config.limits.over(live.limits);
        let observer = &task_app.observer;
        let sampled = observer.sampled(&live);
        let keep_tensors = shadow.is_some() || observer.wants_tensors(&live, sampled);
        let options = Options { limits, keep_tensors, assign_id: true };
        let request = RequestBody { bytes: &body.bytes, header_length: header_length.as_deref() };
        let result = pipeline::run(&live.model, request, options);
        live.stats.record_request(queue_time, &result);
        record_metrics(&task_app, &labels, queue_time, &result);
        charge_and_audit(&task_app, &caller, &quota_key, &action, &live, &result);
        let answer = result.map_err(|failure| ApiError::from(*failure.error))?;
        if let Some(kept) = answer.tensors {
            let copy = shadow.map(|shadow| (shadow, kept.clone()));
            observer.observe(&live, Role::Live, answer.id.as_deref(), kept, sampled);
            if let Some((shadow, kept)) = copy {
                task_app.shadow.submit(ShadowJob {
                    live_version: live.version(),
                    live_outputs: kept.outputs,
                    shadow,
                    inputs: kept.inputs,
                    requested: kept.requested,
                    limits,
                    id: answer.id,
                    sampled,
                });
            }
        }
        Ok(answer.body)
    };
    let result = match inline {
        Some(_pass) => work(),
        None => blocking(work).await,
    };
    let body = result?;
    let mut response = Response::new(Full::new(Bytes::from(body.bytes)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
    if let Some(length) = body.header_length {
        response.headers_mut().insert(edgeinfer_oip::HEADER_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
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
