//! Open Inference Protocol v2 on top of a loaded model: decoded request in, v2 response out.
//! The one place responses are built, for the CLI and the server alike.

pub use edgeinfer_oip::{EncodedResponse, requested_outputs};
use edgeinfer_oip::{InferenceRequest, InferenceResponse, ProtocolError, decode_request};
use serde_json::{Map, Value};

use crate::limits::LimitOverrides;
use crate::model::{InferOutcome, LoadedModel};
use crate::{Error, Result};

impl From<ProtocolError> for Error {
    fn from(error: ProtocolError) -> Self {
        Error::InvalidInput { input: error.tensor.unwrap_or_default(), message: error.message }
    }
}

/// Decodes a v2 JSON request, runs it, and builds the v2 JSON response (no binary outputs).
pub fn infer_json(model: &LoadedModel, body: &[u8], overrides: LimitOverrides) -> Result<InferenceResponse> {
    let (request, inputs) = decode_request(body)?;
    let outcome = model.infer(inputs, &requested_outputs(&request), overrides)?;
    let encoded = encode_response(model, &request, outcome)?;
    if !encoded.binary.is_empty() {
        return Err(Error::InvalidInput {
            input: String::new(),
            message: "binary outputs need the HTTP binary tensor extension; drop binary_data here".into(),
        });
    }
    Ok(encoded.json)
}

/// The v2 response for an outcome (outputs as JSON or, when asked, binary data), with the
/// fuel used in `parameters`.
pub fn encode_response(
    model: &LoadedModel,
    request: &InferenceRequest,
    outcome: InferOutcome,
) -> Result<EncodedResponse> {
    let manifest = model.manifest();
    let mut encoded =
        edgeinfer_oip::encode_response(&manifest.name, &manifest.version.to_string(), request, outcome.outputs)?;
    let mut parameters = Map::new();
    parameters.insert("fuel_used".into(), Value::from(outcome.fuel_used));
    encoded.json.parameters = Some(parameters);
    Ok(encoded)
}
