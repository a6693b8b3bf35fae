//! Open Inference Protocol v2 codec, shared by the edgeinfer host and model components.
//!
//! Turns v2 JSON requests into raw little-endian [`Tensor`]s and raw outputs back into
//! v2 JSON responses, with errors that name the tensor at fault.

pub use bytes::Bytes;

mod binary;
mod datatype;
mod json;
mod response;

pub use binary::{HEADER_LENGTH, decode_request_with_binary, raw_tensor, split_body, wants_binary};
pub use datatype::Datatype;
pub use json::{
    InferenceRequest, InferenceResponse, RequestedOutput, ResponseOutput, bytes_items, check_unique, decode_request,
    encode_output,
};
pub use response::{
    EncodedResponse, HttpBody, ModelMetadata, PLATFORM, TensorMetadata, body_too_large_message, encode_response,
    error_body, invalid_input_message, live_body, model_error_message, model_ready_body, no_version_loaded_message,
    ready_body, requested_outputs, unknown_endpoint_message, unknown_model_message, unknown_version_message,
    wrong_method_message,
};

/// A tensor with row-major, little-endian raw data (BYTES: 4-byte length-prefixed items).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub datatype: Datatype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Raw element data: reference-counted, so a tensor taken from a request body, handed to
    /// the prediction log or written into a response is never copied for it.
    pub data: Bytes,
}

/// A request the protocol cannot accept, naming the tensor at fault when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", match .tensor { Some(t) => format!("input '{t}': {}", .message), None => .message.clone() })]
pub struct ProtocolError {
    /// The tensor concerned, if any.
    pub tensor: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ProtocolError {
    /// An error about the request as a whole.
    pub fn request(message: impl Into<String>) -> Self {
        ProtocolError { tensor: None, message: message.into() }
    }

    /// An error about one tensor.
    pub fn tensor(name: &str, message: impl Into<String>) -> Self {
        ProtocolError { tensor: Some(name.to_string()), message: message.into() }
    }
}

/// The number of elements a shape holds, or `None` on overflow.
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}
