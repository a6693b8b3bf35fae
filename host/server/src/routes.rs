//! Routing of the Open Inference Protocol v2 REST API and its extensions.

use std::sync::Arc;

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use edgeinfer_oip::{ModelMetadata, TensorMetadata};

use super::body::{allow, blocking, parse_version, read_body};
use super::infer;
use super::response::{ApiError, Body, json_response, to_json};
use super::security::{AuditKind, Caller, required_scope};
use super::{App, ListenerRole};
use edgeinfer_runtime::model::LoadedModel;

/// Answers one request; every failure becomes `{"error": ...}` with its status.
pub async fn handle(app: Arc<App>, request: Request<Incoming>, peer: IpAddr, role: ListenerRole) -> Response<Body> {
    let path = request.uri().path().to_string();
    route(app.clone(), request, peer, role).await.unwrap_or_else(|error| {
        app.error_log.request_failed(error.status.as_u16(), &path, &error.message);
        error.into_response()
    })
}

async fn route(
    app: Arc<App>,
    request: Request<Incoming>,
    peer: IpAddr,
    role: ListenerRole,
) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let is_admin = matches!(segments.as_slice(), ["v2", "admin", ..]);
    let is_health = matches!(segments.as_slice(), ["v2", "health", ..]);
    let here = match role {
        ListenerRole::Main { admin } => admin || !is_admin,
        ListenerRole::Admin => is_admin || is_health,
    };
    if !here {
        return Err(ApiError::not_found(edgeinfer_oip::unknown_endpoint_message(&path)));
    }
    let method = request.method().clone();
    let request_line = format!("{method} {path}");
    let needed = required_scope(&method, &segments);
    let authorization = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    let caller = app.security.admit(peer, authorization, needed.as_ref(), &request_line)?;
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
            ok(super::service::statistics(&app, None, None))
        }
        ["v2", "repository", "index"] => {
            allow(&method, Method::POST)?;
            let body = read_body(&app, request).await?;
            let ready_only = if body.bytes.is_empty() {
                false
            } else {
                let value: Value = serde_json::from_slice(&body.bytes)
                    .map_err(|e| ApiError::bad_request(format!("malformed index request JSON: {e}")))?;
                value.get("ready").and_then(Value::as_bool).unwrap_or(false)
            };
            let registry = app.registry.clone();
            let index = blocking(move || registry.index(ready_only).map_err(ApiError::from)).await?;
            ok(to_json(&index))
        }
        ["v2", "repository", "models", model, action @ ("load" | "unload")] => {
            allow(&method, Method::POST)?;
            let (registry, model, load) = (app.registry.clone(), model.to_string(), *action == "load");
            let done = blocking(move || {
                if load { registry.load_model(&model).map(drop) } else { registry.unload_model(&model) }
                    .map_err(ApiError::from)
            })
            .await;
            audit_change(&app, &caller, &request_line, &done);
            done?;
            ok(json!({}))
        }
        ["metrics"] => {
            allow(&method, Method::GET)?;
            let text = app.metrics.render(
                app.admission.snapshot(),
                &app.registry,
                &app.observer,
                &app.alerts,
                &app.follow_figures(),
            );
            let mut response = Response::new(Body::new(text));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(super::metrics::CONTENT_TYPE),
            );
            Ok(response)
        }
        ["ui"] => {
            allow(&method, Method::GET)?;
            super::ui::page()
        }
        ["v2", "monitor"] => {
            allow(&method, Method::GET)?;
            ok(super::ui::data(&app))
        }
        ["v2", "batch", "jobs"] if method == Method::POST => {
            let body = read_body(&app, request).await?;
            let (jobs, registry) = (app.batch.clone(), app.registry.clone());
            let job = blocking(move || jobs.submit(&registry, &body.bytes).map_err(ApiError::from)).await?;
            audit_change(&app, &caller, &request_line, &Ok::<(), ApiError>(()));
            Ok(json_response(StatusCode::ACCEPTED, &super::jobs::to_json(&job)))
        }
        ["v2", "batch", "jobs"] => {
            allow(&method, Method::GET)?;
            let jobs = app.batch.list()?;
            ok(json!({"jobs": jobs.iter().map(super::jobs::to_json).collect::<Vec<_>>()}))
        }
        ["v2", "batch", "jobs", id] => match method {
            Method::GET => ok(super::jobs::to_json(&app.batch.get(id)?)),
            Method::DELETE => {
                let job = app.batch.cancel(id)?;
                audit_change(&app, &caller, &request_line, &Ok::<(), ApiError>(()));
                ok(super::jobs::to_json(&job))
            }
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                edgeinfer_oip::wrong_method_message("GET or DELETE", method.as_str()),
            )),
        },
        ["v2", "alerts"] => {
            allow(&method, Method::GET)?;
            ok(app.alerts.to_json())
        }
        ["v2", "admin", "server"] => {
            allow(&method, Method::GET)?;
            ok(super::admin::server(&app))
        }
        ["v2", "admin", "tokens"] => {
            allow(&method, Method::GET)?;
            ok(super::admin::tokens(&app))
        }
        ["v2", "admin", "predictions", "erase"] => {
            ok(super::admin::erase_predictions(app.clone(), request, &caller, &request_line).await?)
        }
        ["v2", "admin", "models", model, rest @ ..] => {
            let answer = super::admin::route(app.clone(), request, model.to_string(), rest).await;
            if method != Method::GET {
                audit_change(&app, &caller, &request_line, &answer);
            }
            answer
        }
        ["v2", "models", model, rest @ ..] => {
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] => (Some(parse_version(v)?), rest),
                rest => (None, rest),
            };
            match rest {
                [] => {
                    allow(&method, Method::GET)?;
                    let served = app.registry.describe(model, version)?;
                    ok(metadata(&served.model, &app.registry.versions(model)))
                }
                ["ready"] => {
                    allow(&method, Method::GET)?;
                    app.registry.describe(model, version)?;
                    ok(edgeinfer_oip::model_ready_body(model))
                }
                ["stats"] => {
                    allow(&method, Method::GET)?;
                    app.registry.describe(model, version)?;
                    ok(super::service::statistics(&app, Some(model), version))
                }
                ["feedback"] if version.is_none() => {
                    allow(&method, Method::POST)?;
                    app.registry.describe(model, None)?;
                    let body = read_body(&app, request).await?;
                    let value: Value = serde_json::from_slice(&body.bytes)
                        .map_err(|e| ApiError::bad_request(format!("malformed feedback JSON: {e}")))?;
                    let report = app.observer.feedback(&app.registry, model, &value).map_err(ApiError::bad_request)?;
                    ok(to_json(&report))
                }
                ["quality"] if version.is_none() => {
                    allow(&method, Method::GET)?;
                    app.registry.describe(model, None)?;
                    ok(super::ui::quality(&app, model))
                }
                ["drift"] if version.is_none() => {
                    allow(&method, Method::GET)?;
                    app.registry.describe(model, None)?;
                    ok(super::ui::drift(&app, model))
                }
                ["infer"] => {
                    allow(&method, Method::POST)?;
                    let route = app.registry.route(model, version)?;
                    infer::handle(app, route, request, caller).await
                }
                _ => Err(ApiError::not_found(edgeinfer_oip::unknown_endpoint_message(&path))),
            }
        }
        _ => Err(ApiError::not_found(edgeinfer_oip::unknown_endpoint_message(&path))),
    }
}

/// Audits an admin change and how it ended.
fn audit_change<T>(app: &App, caller: &Caller, request_line: &str, done: &Result<T, ApiError>) {
    let (outcome, reason) = match done {
        Ok(_) => ("200".to_string(), "done"),
        Err(error) => (error.status.as_u16().to_string(), error.message.as_str()),
    };
    app.security.audit(AuditKind::AdminChange, caller, request_line, &outcome, reason);
}

fn metadata(model: &LoadedModel, versions: &[u64]) -> Value {
    let manifest = model.manifest();
    let tensors = |sigs: &[edgeinfer_runtime::manifest::TensorSignature]| -> Vec<TensorMetadata> {
        sigs.iter()
            .map(|s| TensorMetadata {
                name: s.name.clone(),
                datatype: s.datatype,
                shape: s.shape.clone(),
                parameters: (!s.labels.is_empty()).then(|| serde_json::json!({ "labels": s.labels })),
            })
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
