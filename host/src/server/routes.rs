//! Routing of the Open Inference Protocol v2 REST API and its extensions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use edgeinfer_oip::{ModelMetadata, TensorMetadata};

use super::App;
use super::infer;
use super::registry::Route;
use super::response::{ApiError, Body, json_response};
use crate::model::LoadedModel;

/// Answers one request; every failure becomes `{"error": ...}` with its status.
pub async fn handle(app: Arc<App>, request: Request<Incoming>) -> Response<Body> {
    route(app, request).await.unwrap_or_else(ApiError::into_response)
}

async fn route(app: Arc<App>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = request.method().clone();
    let ok = |value: Value| Ok(json_response(StatusCode::OK, &value));
    match segments.as_slice() {
        ["v2", "health", "live"] => {
            allow(&method, Method::GET)?;
            ok(edgeinfer_oip::live_body())
        }
        ["v2", "health", "ready"] => {
            allow(&method, Method::GET)?;
            ok(edgeinfer_oip::ready_body())
        }
        ["v2"] => {
            allow(&method, Method::GET)?;
            ok(json!({
                "name": "edgeinfer",
                "version": env!("CARGO_PKG_VERSION"),
                "extensions": ["binary_tensor_data", "model_repository", "statistics", "traffic_admin"],
            }))
        }
        ["v2", "models", "stats"] => {
            allow(&method, Method::GET)?;
            ok(stats(&app, None, None))
        }
        ["v2", "repository", "index"] => {
            allow(&method, Method::POST)?;
            let body = read_body(&app, request).await?;
            let ready_only = if body.is_empty() {
                false
            } else {
                let value: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("malformed index request JSON: {e}")))?;
                value.get("ready").and_then(Value::as_bool).unwrap_or(false)
            };
            let registry = app.registry.clone();
            ok(blocking(move || registry.index(ready_only).map_err(ApiError::from)).await?)
        }
        ["v2", "repository", "models", model, action @ ("load" | "unload")] => {
            allow(&method, Method::POST)?;
            let (registry, model, load) = (app.registry.clone(), model.to_string(), *action == "load");
            blocking(move || {
                if load { registry.load_model(&model).map(drop) } else { registry.unload_model(&model) }
                    .map_err(ApiError::from)
            })
            .await?;
            ok(json!({}))
        }
        ["v2", "admin", "models", model, rest @ ..] => {
            super::admin::route(app.clone(), request, model.to_string(), rest).await
        }
        ["v2", "models", model, rest @ ..] => {
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] => (Some(parse_version(v)?), rest),
                rest => (None, rest),
            };
            match rest {
                [] => {
                    allow(&method, Method::GET)?;
                    let served = app.registry.resolve(model, version)?;
                    ok(metadata(&served.model, &app.registry.versions(model)))
                }
                ["ready"] => {
                    allow(&method, Method::GET)?;
                    app.registry.resolve(model, version)?;
                    ok(edgeinfer_oip::model_ready_body(model))
                }
                ["stats"] => {
                    allow(&method, Method::GET)?;
                    app.registry.resolve(model, version)?;
                    ok(stats(&app, Some(model), version))
                }
                ["infer"] => {
                    allow(&method, Method::POST)?;
                    let route = app.registry.route(model, version)?;
                    infer_request(app, route, request).await
                }
                _ => Err(ApiError::not_found(edgeinfer_oip::unknown_endpoint_message(&path))),
            }
        }
        _ => Err(ApiError::not_found(edgeinfer_oip::unknown_endpoint_message(&path))),
    }
}

async fn infer_request(app: Arc<App>, route: Route, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let Route { live: served, shadow } = route;
    let header_length = request
        .headers()
        .get(edgeinfer_oip::HEADER_LENGTH)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("Inference-Header-Content-Length is not text"))?;
    let body = read_body(&app, request).await?;
    let queued = Instant::now();
    let _permit = acquire_slot(&app).await?;
    served.stats.queue.record(queued.elapsed());
    let started = Instant::now();
    let limits = app.config.limits;
    let task_served = served.clone();
    let task_app = app.clone();
    let result = blocking(move || {
        let shadow = shadow.map(|s| (s, &task_app.shadow));
        infer::run(&task_served, &body, header_length.as_deref(), limits, shadow)
    })
    .await;
    served.stats.touch();
    match &result {
        Ok(_) => served.stats.record_success(started.elapsed()),
        Err(_) => served.stats.fail.record(started.elapsed()),
    }
    result
}

/// Waits for an inference slot, or refuses with 503 when the queue is full.
async fn acquire_slot(app: &App) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    if let Ok(permit) = app.slots.clone().try_acquire_owned() {
        return Ok(permit);
    }
    if app.waiting.fetch_add(1, Ordering::SeqCst) >= app.config.max_queue {
        app.waiting.fetch_sub(1, Ordering::SeqCst);
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server busy: the inference queue is full");
        error.retry_after = Some(1);
        return Err(error);
    }
    let permit = app.slots.clone().acquire_owned().await;
    app.waiting.fetch_sub(1, Ordering::SeqCst);
    permit.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down"))
}

/// Runs blocking work (compiles, inferences) off the async reactor.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("worker failed: {e}")))?
}

/// Reads the whole body within the size and time limits (413 / 408).
pub(super) async fn read_body(app: &App, request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let max = app.config.max_body_bytes;
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, edgeinfer_oip::body_too_large_message(max));
    let declared =
        request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let deadline = Duration::from_millis(app.config.request_read_timeout_ms);
    let body = request.into_body();
    if declared.is_some_and(|len| len > max as u64) {
        drain(body, deadline).await;
        return Err(too_large());
    }
    match tokio::time::timeout(deadline, Limited::new(body, max).collect()).await {
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time")),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err(ApiError::bad_request(format!("cannot read the request body: {error}"))),
    }
}

/// Reads and discards an oversized body (bounded), so the client can read our 413.
async fn drain(mut body: Incoming, deadline: Duration) {
    let mut left: u64 = 256 << 20;
    let _ = tokio::time::timeout(deadline, async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            left = left.saturating_sub(len);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

pub(super) fn allow(method: &Method, expected: Method) -> Result<(), ApiError> {
    if *method == expected {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            edgeinfer_oip::wrong_method_message(expected.as_str(), method.as_str()),
        ))
    }
}

pub(super) fn parse_version(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request(format!("version '{text}' is not a number")))
}

fn metadata(model: &LoadedModel, versions: &[u64]) -> Value {
    let manifest = model.manifest();
    let tensors = |sigs: &[crate::manifest::TensorSignature]| -> Vec<TensorMetadata> {
        sigs.iter()
            .map(|s| TensorMetadata { name: s.name.clone(), datatype: s.datatype, shape: s.shape.clone() })
            .collect()
    };
    let metadata = ModelMetadata {
        name: manifest.name.clone(),
        versions: versions.iter().map(u64::to_string).collect(),
        platform: edgeinfer_oip::PLATFORM.into(),
        inputs: tensors(&manifest.inputs),
        outputs: tensors(&manifest.outputs),
    };
    serde_json::to_value(metadata).unwrap_or_default()
}

fn stats(app: &App, model: Option<&str>, version: Option<u64>) -> Value {
    let rows: Vec<Value> = app
        .registry
        .all_loaded()
        .into_iter()
        .filter(|(name, v, _)| model.is_none_or(|m| m == name) && version.is_none_or(|want| want == *v))
        .map(|(name, v, served)| served.stats.to_json(&name, v))
        .collect();
    json!({ "model_stats": rows })
}
