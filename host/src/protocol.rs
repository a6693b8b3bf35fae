//! Open Inference Protocol v2 on top of a loaded model: JSON request in, v2 response out.

use edgeinfer_oip::{InferenceResponse, ProtocolError, ResponseOutput, decode_request, encode_output};
use serde_json::{Map, Value};

use crate::limits::LimitOverrides;
use crate::model::{InferOutcome, LoadedModel};
use crate::{Error, Result};

impl From<ProtocolError> for Error {
    fn from(error: ProtocolError) -> Self {
        Error::InvalidInput { input: error.tensor.unwrap_or_default(), message: error.message }
    }
}

/// Decodes a v2 JSON request, runs it, and builds the v2 JSON response.
pub fn infer_json(model: &LoadedModel, body: &[u8], overrides: LimitOverrides) -> Result<InferenceResponse> {
    let (request, inputs) = decode_request(body)?;
    let wanted: Vec<String> = request.outputs.iter().flatten().map(|o| o.name.clone()).collect();
    let outcome = model.infer(inputs, &wanted, overrides)?;
    build_response(model, request.id, &outcome)
}

/// The v2 response for an outcome: outputs as JSON data, fuel used in `parameters`.
pub fn build_response(model: &LoadedModel, id: Option<String>, outcome: &InferOutcome) -> Result<InferenceResponse> {
    let outputs = outcome
        .outputs
        .iter()
        .map(|tensor| {
            Ok(ResponseOutput {
                name: tensor.name.clone(),
                datatype: tensor.datatype,
                shape: tensor.shape.clone(),
                parameters: None,
                data: Some(encode_output(tensor).map_err(|e| Error::Model(e.to_string()))?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut parameters = Map::new();
    parameters.insert("fuel_used".into(), Value::from(outcome.fuel_used));
    Ok(InferenceResponse {
        model_name: model.manifest().name.clone(),
        model_version: model.manifest().version.to_string(),
        id,
        parameters: Some(parameters),
        outputs,
    })
}
