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
use super::response::{ApiError, Body};
use super::shadow::ShadowJob;
use crate::pipeline::{self, Options, RequestBody};

/// Answers `POST .../infer` on `route`. The inference runs to its end (and is counted) even
/// when the client goes away meanwhile; the slot it holds is released only then.
pub async fn handle(app: Arc<App>, route: Route, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let watch = DisconnectWatch::new(&app.admission);
    let answer = answer(app.clone(), route, request).await;
    watch.done();
    answer
}

/// Reads, admits, runs and frames one request; dropped midway when the client goes away.
async fn answer(app: Arc<App>, route: Route, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let header_length = request
        .headers()
        .get(edgeinfer_oip::HEADER_LENGTH)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("Inference-Header-Content-Length is not text"))?;
    let body = read_body(&app, request).await?;
    let queued = Instant::now();
    let slot = app.admission.inference_slot().await?;
    let queue_time = queued.elapsed();
    let task_app = app.clone();
    let result = blocking(move || {
        let _slot = slot;
        let Route { live, shadow } = route;
        let limits = task_app.config.limits.over(live.limits);
        let options = Options { limits, keep_tensors: shadow.is_some() };
        let request = RequestBody { bytes: &body.bytes, header_length: header_length.as_deref() };
        let result = pipeline::run(&live.model, request, options);
        live.stats.record_request(queue_time, &result);
        let answer = result.map_err(|failure| ApiError::from(*failure.error))?;
        if let (Some(shadow), Some(kept)) = (shadow, answer.tensors) {
            task_app.shadow.submit(ShadowJob {
                live_version: live.version(),
                live_outputs: kept.outputs,
                shadow,
                inputs: kept.inputs,
                requested: kept.requested,
                limits,
            });
        }
        Ok(answer.body)
    })
    .await;
    let body = result?;
    let mut response = Response::new(Full::new(Bytes::from(body.bytes)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
    if let Some(length) = body.header_length {
        response.headers_mut().insert(edgeinfer_oip::HEADER_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}
