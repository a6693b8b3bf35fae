//! The live status page (`GET /ui`, one embedded HTML file, no external assets) and the JSON
//! it polls (`GET /v2/monitor`), plus the quality and drift views of one model.

use std::time::Duration;

use hyper::Response;
use serde_json::{Value, json};

use super::App;
use super::response::{ApiError, Body, to_json};

#[cfg(feature = "status-page")]
const PAGE: &str = include_str!("ui.html");
/// History events shown per model.
const HISTORY_SHOWN: usize = 20;

/// The page (404, naming the cargo feature, in a build without `status-page`).
#[cfg(not(feature = "status-page"))]
pub fn page() -> Result<Response<Body>, ApiError> {
    Err(ApiError::new(
        hyper::StatusCode::NOT_FOUND,
        "this build of edgeinfer leaves out the status page (cargo feature `status-page`); /v2/monitor serves its data",
    ))
}

/// The page.
#[cfg(feature = "status-page")]
pub fn page() -> Result<Response<Body>, ApiError> {
    use bytes::Bytes;
    use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
    let mut response = Response::new(Body::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"),
    );
    Ok(response)
}

/// `GET /v2/models/{m}/quality`.
pub fn quality(app: &App, model: &str) -> Value {
    let settings = &app.config.monitoring;
    let versions: Vec<Value> = app
        .observer
        .quality(&app.registry, model)
        .into_iter()
        .map(|(version, view)| {
            let mut value = to_json(&view);
            value["version"] = Value::from(version.to_string());
            value
        })
        .collect();
    let (joined, unknown) = app.observer.feedback_counts();
    json!({
        "model": model,
        "window": {"labelled": settings.quality_window, "seconds": settings.quality_window_s},
        "versions": versions,
        "feedback": {"joined": joined, "unknown_ids": unknown},
    })
}

/// `GET /v2/models/{m}/drift`.
pub fn drift(app: &App, model: &str) -> Value {
    let settings = &app.config.monitoring;
    json!({
        "model": model,
        "window_rows": settings.drift_window,
        "psi_warn": settings.psi_warn,
        "psi_drift": settings.psi_drift,
        "versions": to_json(&app.observer.drift(&app.registry, model)),
    })
}

/// `GET /v2/monitor`: everything the page shows.
pub fn data(app: &App) -> Value {
    let models: Vec<Value> = app
        .registry
        .model_names()
        .into_iter()
        .map(|model| {
            let traffic = app.registry.traffic(&model).ok();
            let mut history = app.registry.history(&model).unwrap_or_default();
            let history = history.split_off(history.len().saturating_sub(HISTORY_SHOWN));
            let stats: Vec<Value> = app
                .registry
                .loaded(&model)
                .into_iter()
                .map(|(version, served)| served.stats.to_json(&model, version))
                .collect();
            json!({
                "name": model,
                "traffic": traffic.as_ref().map(to_json),
                "requests": app.metrics.request_totals(&model),
                "stats": stats,
                "last_minute": to_json(&app.series.window(&model, Duration::from_secs(60))),
                "chart": to_json(&app.series.chart(&model, Duration::from_secs(60), 60)),
                "quality": quality(app, &model)["versions"],
                "drift": drift(app, &model)["versions"],
                "history": to_json(&history),
                "rollout": app.rollouts.status(&app.registry, &model).ok(),
            })
        })
        .collect();
    let (written, dropped) = app.observer.log_counts();
    json!({
        "server": {"version": env!("CARGO_PKG_VERSION"), "time": edgeinfer_runtime::clock::now_rfc3339()},
        "admission": to_json(&app.admission.snapshot()),
        "prediction_log": {
            "written": written,
            "dropped": dropped,
            "queued_bytes": app.observer.log_queued_bytes(),
        },
        "models": models,
        "alerts": to_json(&app.alerts.active()),
    })
}
