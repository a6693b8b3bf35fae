//! The infer endpoint over HTTP: reads the request under admission, runs it through the
//! transport-neutral [`crate::service`], and frames the v2 response.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};

use super::App;
use super::admission::DisconnectWatch;
use super::body::read_body;
use super::registry::Route;
use super::response::{ApiError, Body};
use super::security::Caller;
use super::service::run;

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
    let header_length = request
        .headers()
        .get(edgeinfer_oip::HEADER_LENGTH)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::bad_request("Inference-Header-Content-Length is not text"))?;
    let reader = app.clone();
    let body = async move { Ok(read_body(&reader, request).await?.into_inference(header_length)) };
    let body = run(app, route, caller, action, body, None).await?.into_http()?;
    let content_type = HeaderValue::from_static(body.content_type);
    let header_length = body.header_length;
    let mut response = Response::new(Body::from_chunks(body.into_chunks()));
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    if let Some(length) = header_length {
        response.headers_mut().insert(edgeinfer_oip::HEADER_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}
