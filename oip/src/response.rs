//! Building v2 REST answers: inference responses (JSON or JSON + binary), model metadata,
//! health and error bodies. The edgeinfer server and the model component's own HTTP handler
//! both answer through these, so the two speak byte-identical JSON.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{Bytes, Datatype, InferenceRequest, ProtocolError, ResponseOutput, Tensor, encode_output, wants_binary};

/// A v2 response and the binary part that follows its JSON (empty when every output is JSON).
#[derive(Debug, Clone)]
pub struct EncodedResponse {
    /// The JSON part.
    pub json: crate::InferenceResponse,
    /// Raw data of the outputs asked for with `binary_data`, in output order (the outputs'
    /// own buffers, not copies).
    pub binary: Vec<Bytes>,
}

/// An HTTP body ready to send: the JSON, then (for binary bodies) each binary output's
/// buffer, sent one after another without being copied into one.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpBody {
    /// The JSON part (the whole body when there is no binary part).
    pub json: Vec<u8>,
    /// The binary part, in pieces.
    pub binary: Vec<Bytes>,
    /// `application/json`, or `application/octet-stream` when a binary part follows the JSON.
    pub content_type: &'static str,
    /// The `Inference-Header-Content-Length` value (the JSON part's length) for binary bodies.
    pub header_length: Option<usize>,
}

/// The v2 response for `outputs`: each output as JSON data or, when the request asks for
/// it (`binary_data` per output or `binary_data_output` for all), as binary data.
pub fn encode_response(
    model_name: &str,
    model_version: &str,
    request: &InferenceRequest,
    outputs: &[Tensor],
) -> Result<EncodedResponse, ProtocolError> {
    let mut binary = Vec::new();
    let mut encoded = Vec::with_capacity(outputs.len());
    for tensor in outputs {
        let asked = request.outputs.iter().flatten().find(|o| o.name == tensor.name);
        let as_binary = wants_binary(request.parameters.as_ref(), asked.and_then(|o| o.parameters.as_ref()));
        encoded.push(encode_one(tensor, as_binary, &mut binary)?);
    }
    let json = crate::InferenceResponse {
        model_name: model_name.to_string(),
        model_version: model_version.to_string(),
        id: request.id.clone(),
        parameters: None,
        outputs: encoded,
    };
    Ok(EncodedResponse { json, binary })
}

impl EncodedResponse {
    /// The body to send: plain JSON, or JSON followed by the binary part.
    pub fn into_http_body(self) -> Result<HttpBody, ProtocolError> {
        let json = serde_json::to_vec(&self.json).map_err(|e| ProtocolError::request(e.to_string()))?;
        if self.binary.is_empty() && self.json.outputs.iter().all(|o| o.data.is_some()) {
            return Ok(HttpBody::json(json));
        }
        let header_length = json.len();
        Ok(HttpBody {
            json,
            binary: self.binary,
            content_type: "application/octet-stream",
            header_length: Some(header_length),
        })
    }
}

impl HttpBody {
    /// A plain JSON body.
    pub fn json(json: Vec<u8>) -> HttpBody {
        HttpBody { json, binary: Vec::new(), content_type: "application/json", header_length: None }
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.json.len() + self.binary.iter().map(Bytes::len).sum::<usize>()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pieces to send, in order.
    pub fn into_chunks(self) -> impl Iterator<Item = Bytes> {
        std::iter::once(Bytes::from(self.json)).chain(self.binary).filter(|chunk| !chunk.is_empty())
    }

    /// The whole body in one buffer (a copy of the binary part; for tests and small bodies).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        bytes.extend_from_slice(&self.json);
        self.binary.iter().for_each(|chunk| bytes.extend_from_slice(chunk));
        bytes
    }
}

fn encode_one(tensor: &Tensor, as_binary: bool, binary: &mut Vec<Bytes>) -> Result<ResponseOutput, ProtocolError> {
    if as_binary {
        let mut parameters = Map::new();
        parameters.insert("binary_data_size".into(), Value::from(tensor.data.len()));
        binary.push(tensor.data.clone());
        return Ok(ResponseOutput {
            name: tensor.name.clone(),
            datatype: tensor.datatype,
            shape: tensor.shape.clone(),
            parameters: Some(parameters),
            data: None,
        });
    }
    let data = encode_output(tensor)
        .map_err(|e| ProtocolError::tensor(&tensor.name, format!("{}; ask for it with binary_data", e.message)))?;
    Ok(ResponseOutput {
        name: tensor.name.clone(),
        datatype: tensor.datatype,
        shape: tensor.shape.clone(),
        parameters: None,
        data: Some(data),
    })
}

/// The output names a request asks for (empty: all).
pub fn requested_outputs(request: &InferenceRequest) -> Vec<String> {
    request.outputs.iter().flatten().map(|o| o.name.clone()).collect()
}

/// Model metadata (`GET /v2/models/{m}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// Versions available.
    pub versions: Vec<String>,
    /// The platform, `onnx_tract`.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// One input or output in [`ModelMetadata`]; -1 marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// Datatype.
    pub datatype: Datatype,
    /// Dimensions, -1 where dynamic.
    pub shape: Vec<i64>,
    /// Extra facts, e.g. `{"labels": ["setosa", "versicolor", "virginica"]}`: a classifier's
    /// class labels in the order of the last axis of its probability output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

/// The platform every edgeinfer model reports.
pub const PLATFORM: &str = "onnx_tract";

/// `{"live": true}`.
pub fn live_body() -> Value {
    json!({"live": true})
}

/// `{"ready": true}`.
pub fn ready_body() -> Value {
    json!({"ready": true})
}

/// `{"name": model, "ready": true}`.
pub fn model_ready_body(model: &str) -> Value {
    json!({"name": model, "ready": true})
}

/// `{"error": message}`, the body of every error answer.
pub fn error_body(message: &str) -> Value {
    json!({ "error": message })
}

/// The message for an input the model refused: `invalid input 'X': ...`.
pub fn invalid_input_message(input: &str, message: &str) -> String {
    if input.is_empty() { format!("invalid input: {message}") } else { format!("invalid input '{input}': {message}") }
}

/// The message for a model that failed on valid input.
pub fn model_error_message(message: &str) -> String {
    format!("model error: {message}")
}

/// The message for an unknown model.
pub fn unknown_model_message(model: &str) -> String {
    format!("unknown model '{model}'")
}

/// The message for a version that is not loaded.
pub fn unknown_version_message(model: &str, version: impl std::fmt::Display) -> String {
    format!("model '{model}' has no version {version} loaded")
}

/// The message for a model with no version to serve.
pub fn no_version_loaded_message(model: &str) -> String {
    format!("model '{model}' has no version loaded")
}

/// The message for a path no endpoint serves.
pub fn unknown_endpoint_message(path: &str) -> String {
    format!("unknown endpoint {path}")
}

/// The message for a method an endpoint does not take.
pub fn wrong_method_message(expected: &str, got: &str) -> String {
    format!("use {expected} here, not {got}")
}

/// The message for a body over the size limit.
pub fn body_too_large_message(limit: usize) -> String {
    format!("request body exceeds the limit of {limit} bytes")
}
