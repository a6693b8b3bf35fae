//! The infer endpoint: decode (JSON or binary extension), run, frame the response.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use edgeinfer_oip::{HEADER_LENGTH, decode_request_with_binary, split_body};
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};

use super::registry::ServedVersion;
use super::response::{ApiError, Body};
use super::shadow::{ShadowJob, ShadowRunner};
use crate::limits::LimitOverrides;
use crate::protocol::{encode_response, requested_outputs};

/// Runs one request on `served` (blocking: call from a blocking thread); when `shadow` is
/// given, a copy of a successful request is queued for the shadow version.
pub fn run(
    served: &ServedVersion,
    body: &[u8],
    header_length: Option<&str>,
    server_limits: LimitOverrides,
    shadow: Option<(Arc<ServedVersion>, &ShadowRunner)>,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let (json, binary) = split_body(body, header_length)?;
    let (request, inputs) = decode_request_with_binary(json, binary)?;
    served.stats.compute_input.record(started.elapsed());

    let infer_started = Instant::now();
    let limits = merge(served.limits, server_limits);
    let requested = requested_outputs(&request);
    let shadow_inputs = shadow.as_ref().map(|_| inputs.clone());
    let outcome = served.model.infer(inputs, &requested, limits)?;
    served.stats.compute_infer.record(infer_started.elapsed());
    if let (Some((shadow, runner)), Some(inputs)) = (shadow, shadow_inputs) {
        runner.submit(ShadowJob {
            live_version: served.version(),
            live_outputs: outcome.outputs.clone(),
            shadow,
            inputs,
            requested,
            limits,
        });
    }
    served.stats.fuel.fetch_add(outcome.fuel_used, std::sync::atomic::Ordering::Relaxed);

    let output_started = Instant::now();
    let encoded = encode_response(&served.model, &request, outcome)?;
    let body = encoded.into_http_body()?;
    let mut response = Response::new(Full::new(Bytes::from(body.bytes)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type));
    if let Some(length) = body.header_length {
        response.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(length));
    }
    served.stats.compute_output.record(output_started.elapsed());
    Ok(response)
}

/// The server-wide overrides (edgeinfer.toml) win over the model's config.toml.
fn merge(model: LimitOverrides, server: LimitOverrides) -> LimitOverrides {
    LimitOverrides {
        fuel: server.fuel.or(model.fuel),
        timeout_ms: server.timeout_ms.or(model.timeout_ms),
        memory_mb: server.memory_mb.or(model.memory_mb),
    }
}
