//! The admin API: traffic split and shadow, rollback, history, and loading or unloading a
//! single version.
//!
//! - `GET  /v2/admin/models/{m}/traffic`
//! - `PUT  /v2/admin/models/{m}/traffic` with `{"split": {"1": 90, "2": 10}, "shadow": "3", "reason": "..."}`
//! - `POST /v2/admin/models/{m}/rollback` with an optional `{"reason": "..."}`
//! - `GET  /v2/admin/models/{m}/history`
//! - `POST /v2/admin/models/{m}/versions/{v}/load` and `.../unload`
//! - `GET  /v2/admin/models/{m}/rollout`
//! - `POST /v2/admin/models/{m}/rollout` with `{"candidate": "2", "policy": {...}, "reason": "..."}`
//! - `POST /v2/admin/models/{m}/rollout/{pause|resume|promote|abort}` with an optional `{"reason": "..."}`
//! - `POST /v2/admin/predictions/erase` with `{"request_id": "..."}` or `{"caller": "TOKEN"}` and
//!   an optional `"reason"`

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::App;
use super::body::{allow, blocking, parse_version, read_body};
use super::deployment::TrafficChange;
use super::response::{ApiError, Body, json_response, to_json};
use super::rollout::{Action, RolloutPolicy, Transition};
use edgeinfer_monitor::predictions::Erasure;

/// Answers `/v2/admin/models/{model}/{rest...}`.
pub async fn route(
    app: Arc<App>,
    request: Request<Incoming>,
    model: String,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    let registry = app.registry.clone();
    let value = match rest {
        ["traffic"] if method == Method::GET => to_json(&registry.traffic(&model)?),
        ["traffic"] => {
            allow(&method, Method::PUT)?;
            let body = read_body(&app, request).await?;
            let change = TrafficChange::parse(&body.bytes).map_err(ApiError::bad_request)?;
            to_json(&blocking(move || registry.set_traffic(&model, change).map_err(ApiError::from)).await?)
        }
        ["rollback"] => {
            allow(&method, Method::POST)?;
            let reason = reason(&read_body(&app, request).await?.bytes)?;
            to_json(&blocking(move || registry.rollback(&model, &reason).map_err(ApiError::from)).await?)
        }
        ["history"] => {
            allow(&method, Method::GET)?;
            let events = blocking(move || registry.history(&model).map_err(ApiError::from)).await?;
            json!({"events": events})
        }
        ["versions", version, action @ ("load" | "unload")] => {
            allow(&method, Method::POST)?;
            let version = parse_version(version)?;
            let reason = reason(&read_body(&app, request).await?.bytes)?;
            let load = *action == "load";
            to_json(
                &blocking(move || {
                    let reason = if reason.is_empty() {
                        format!("admin {}", if load { "load" } else { "unload" })
                    } else {
                        reason
                    };
                    let done = if load {
                        registry.load_version(&model, version, &reason)
                    } else {
                        registry.unload_version(&model, version, &reason)
                    };
                    done.map_err(ApiError::from)?;
                    registry.traffic(&model).map_err(ApiError::from)
                })
                .await?,
            )
        }
        ["rollout"] if method == Method::GET => {
            let app = app.clone();
            blocking(move || app.rollouts.status(&app.registry, &model).map_err(ApiError::from)).await?
        }
        ["rollout"] => {
            allow(&method, Method::POST)?;
            let start = RolloutStart::parse(&read_body(&app, request).await?.bytes)?;
            let app = app.clone();
            blocking(move || {
                app.registry
                    .start_rollout(&model, start.candidate, start.policy, &start.reason)
                    .map_err(ApiError::from)?;
                app.rollouts.status(&app.registry, &model).map_err(ApiError::from)
            })
            .await?
        }
        ["rollout", command] => {
            allow(&method, Method::POST)?;
            let action = match *command {
                "pause" => Action::Pause,
                "resume" => Action::Resume,
                "promote" => Action::Promote,
                "abort" => Action::Abort,
                other => {
                    return Err(ApiError::not_found(format!(
                        "unknown rollout command '{other}' (expected pause, resume, promote or abort)"
                    )));
                }
            };
            let reason = reason(&read_body(&app, request).await?.bytes)?;
            let app = app.clone();
            blocking(move || {
                let transition = Transition { action, reason, checks: Vec::new(), expected: None };
                app.registry.move_rollout(&model, transition).map_err(ApiError::from)?;
                app.rollouts.status(&app.registry, &model).map_err(ApiError::from)
            })
            .await?
        }
        _ => return Err(ApiError::not_found(format!("unknown admin endpoint for model '{model}'"))),
    };
    Ok(json_response(StatusCode::OK, &value))
}

/// `GET /v2/admin/server`: admission counters, and how often followed files (the tokens
/// file, TLS certificates) were reloaded or refused and the repository rescanned.
pub fn server(app: &App) -> Value {
    let mut view = to_json(&app.admission.snapshot());
    view["reloads"] = json!({
        "tokens": app.security.tokens.as_ref().map(|store| store.reloads()).unwrap_or_default(),
        "tls": app.tls.as_ref().map(|tls| tls.reloads()).unwrap_or_default(),
    });
    view["repository_rescans"] = to_json(&app.registry.rescans());
    #[cfg(feature = "oci")]
    {
        view["follow"] = app.follows.iter().map(|state| state.view()).collect();
    }
    view
}

/// `GET /v2/admin/tokens`: every token (never a secret or hash) with its use in the current
/// quota window, and the addresses seen when authentication is off.
pub fn tokens(app: &App) -> Value {
    let usage = app.security.quotas.usage();
    let entries = app.security.tokens.as_ref().map(|store| store.entries()).unwrap_or_default();
    let tokens: Vec<Value> = entries
        .values()
        .map(|t| {
            json!({
                "name": t.name,
                "scopes": t.scopes,
                "created": t.created,
                "expires": t.expires,
                "revoked": t.revoked,
                "limits": t.limits,
                "usage": usage.get(&format!("token:{}", t.name)).copied().unwrap_or_default(),
            })
        })
        .collect();
    let addresses: serde_json::Map<String, Value> = usage
        .iter()
        .filter_map(|(key, use_)| key.strip_prefix("addr:").map(|addr| (addr.to_string(), to_json(use_))))
        .collect();
    json!({"auth": app.security.tokens.is_some(), "tokens": tokens, "addresses": addresses})
}

/// `POST /v2/admin/predictions/erase`: removes one request's or one caller's records from the
/// prediction log (the file being written included) and audits what was erased.
pub async fn erase_predictions(
    app: Arc<App>,
    request: Request<Incoming>,
    caller: &crate::security::Caller,
    request_line: &str,
) -> Result<Value, ApiError> {
    allow(request.method(), Method::POST)?;
    let body = read_body(&app, request).await?;
    let value: Value =
        serde_json::from_slice(&body.bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    let object = value.as_object().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !["request_id", "caller", "reason"].contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown field `{unknown}` (expected request_id or caller, reason)"
        )));
    }
    let text = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(other) => Err(ApiError::bad_request(format!("`{key}` must be a non-empty string, got {other}"))),
    };
    let which = match (text("request_id")?, text("caller")?) {
        (Some(id), None) => Erasure::RequestId(id),
        (None, Some(caller)) => Erasure::Caller(caller),
        _ => return Err(ApiError::bad_request("give exactly one of `request_id` and `caller`")),
    };
    let reason = reason_field(object)?;
    let observer = app.clone();
    let whose = which.to_string();
    let report =
        blocking(move || observer.observer.erase(which).map_err(|e| ApiError::new(StatusCode::CONFLICT, e))).await;
    let (outcome, summary) = match &report {
        Ok(report) if report.complete() => ("200".to_string(), format!("erased {} records of {whose}", report.erased)),
        Ok(report) => (
            "200".to_string(),
            format!(
                "erased {} records of {whose}; not searched: {} files of other servers, {} unreadable files",
                report.erased,
                report.files_being_written.len(),
                report.files_unreadable.len()
            ),
        ),
        Err(error) => (error.status.as_u16().to_string(), error.message.clone()),
    };
    let summary = if reason.is_empty() { summary } else { format!("{summary}: {reason}") };
    app.security.audit(crate::security::AuditKind::AdminChange, caller, request_line, &outcome, &summary);
    let report = report?;
    let mut value = to_json(&report);
    value["complete"] = json!(report.complete());
    Ok(value)
}

/// The optional `{"reason": "..."}` body of rollback, load and unload.
fn reason(body: &[u8]) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
    let object = value.as_object().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| *k != "reason") {
        return Err(ApiError::bad_request(format!("unknown field `{unknown}` (expected reason)")));
    }
    reason_field(object)
}

/// The optional `reason` string of a JSON body.
fn reason_field(object: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    match object.get("reason") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(other) => Err(ApiError::bad_request(format!("`reason` must be a string, got {other}"))),
    }
}

/// The body of `POST /v2/admin/models/{m}/rollout`.
struct RolloutStart {
    candidate: u64,
    policy: Option<RolloutPolicy>,
    reason: String,
}

impl RolloutStart {
    fn parse(body: &[u8]) -> Result<RolloutStart, ApiError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
        let object = value.as_object().ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
        if let Some(unknown) = object.keys().find(|k| !["candidate", "policy", "reason"].contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown field `{unknown}` (expected candidate, policy, reason)"
            )));
        }
        let candidate = match object.get("candidate") {
            Some(Value::String(text)) => parse_version(text)?,
            Some(Value::Number(n)) => {
                n.as_u64().ok_or_else(|| ApiError::bad_request(format!("`candidate`: version {n} is not valid")))?
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!("`candidate` must be a version like \"2\", got {other}")));
            }
            None => return Err(ApiError::bad_request("missing `candidate`, e.g. {\"candidate\": \"2\"}")),
        };
        let policy = match object.get("policy") {
            None | Some(Value::Null) => None,
            Some(value) => Some(RolloutPolicy::from_json(value).map_err(ApiError::bad_request)?),
        };
        Ok(RolloutStart { candidate, policy, reason: reason_field(object)? })
    }
}
