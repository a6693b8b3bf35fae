//! The infer endpoint: decode (JSON or binary extension), run, encode.

use std::time::Instant;

use bytes::Bytes;
use edgeinfer_oip::{
    HEADER_LENGTH, InferenceRequest, ResponseOutput, Tensor, decode_request_with_binary, encode_output, split_body,
    wants_binary,
};
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Map, Value};

use super::registry::ServedVersion;
use super::response::{ApiError, Body};
use crate::limits::LimitOverrides;
use crate::model::InferOutcome;

/// Runs one request on `served` (blocking: call from a blocking thread).
pub fn run(
    served: &ServedVersion,
    body: &[u8],
    header_length: Option<&str>,
    server_limits: LimitOverrides,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let (json, binary) = split_body(body, header_length)?;
    let (request, inputs) = decode_request_with_binary(json, binary)?;
    let wanted: Vec<String> = request.outputs.iter().flatten().map(|o| o.name.clone()).collect();
    served.stats.compute_input.record(started.elapsed());

    let infer_started = Instant::now();
    let limits = merge(served.limits, server_limits);
    let outcome = served.model.infer(inputs, &wanted, limits)?;
    served.stats.compute_infer.record(infer_started.elapsed());

    let output_started = Instant::now();
    let response = encode(served, &request, outcome)?;
    served.stats.compute_output.record(output_started.elapsed());
    Ok(response)
}

/// Server limits are a ceiling over the model's own overrides.
fn merge(model: LimitOverrides, server: LimitOverrides) -> LimitOverrides {
    LimitOverrides {
        fuel: server.fuel.or(model.fuel),
        timeout_ms: server.timeout_ms.or(model.timeout_ms),
        memory_mb: server.memory_mb.or(model.memory_mb),
    }
}

fn encode(
    served: &ServedVersion,
    request: &InferenceRequest,
    outcome: InferOutcome,
) -> Result<Response<Body>, ApiError> {
    let manifest = served.model.manifest();
    served.stats.fuel.fetch_add(outcome.fuel_used, std::sync::atomic::Ordering::Relaxed);
    let mut binary = Vec::new();
    let mut outputs = Vec::with_capacity(outcome.outputs.len());
    for tensor in outcome.outputs {
        let asked = request.outputs.iter().flatten().find(|o| o.name == tensor.name);
        let as_binary = wants_binary(request.parameters.as_ref(), asked.and_then(|o| o.parameters.as_ref()));
        outputs.push(output(tensor, as_binary, &mut binary)?);
    }
    let mut parameters = Map::new();
    parameters.insert("fuel_used".into(), Value::from(outcome.fuel_used));
    let body = edgeinfer_oip::InferenceResponse {
        model_name: manifest.name.clone(),
        model_version: manifest.version.to_string(),
        id: request.id.clone(),
        parameters: Some(parameters),
        outputs,
    };
    let json =
        serde_json::to_vec(&body).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if binary.is_empty() && !body.outputs.iter().any(|o| o.data.is_none()) {
        let mut response = Response::new(Full::new(Bytes::from(json)));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(response);
    }
    let json_length = json.len();
    let mut payload = json;
    payload.extend_from_slice(&binary);
    let mut response = Response::new(Full::new(Bytes::from(payload)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(json_length));
    Ok(response)
}

fn output(tensor: Tensor, as_binary: bool, binary: &mut Vec<u8>) -> Result<ResponseOutput, ApiError> {
    if as_binary {
        let mut parameters = Map::new();
        parameters.insert("binary_data_size".into(), Value::from(tensor.data.len()));
        binary.extend_from_slice(&tensor.data);
        return Ok(ResponseOutput {
            name: tensor.name,
            datatype: tensor.datatype,
            shape: tensor.shape,
            parameters: Some(parameters),
            data: None,
        });
    }
    let data =
        encode_output(&tensor).map_err(|e| ApiError::bad_request(format!("{e}; ask for it with binary_data")))?;
    Ok(ResponseOutput {
        name: tensor.name,
        datatype: tensor.datatype,
        shape: tensor.shape,
        parameters: None,
        data: Some(data),
    })
}
