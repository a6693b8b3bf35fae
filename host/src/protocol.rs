//! Open Inference Protocol v2 on top of a loaded model: decoded request in, v2 response out.
//! The one place responses are built, for the CLI and the server alike.

use edgeinfer_oip::{
    InferenceRequest, InferenceResponse, ProtocolError, ResponseOutput, Tensor, decode_request, encode_output,
    wants_binary,
};
use serde_json::{Map, Value};

use crate::limits::LimitOverrides;
use crate::model::{InferOutcome, LoadedModel};
use crate::{Error, Result};

impl From<ProtocolError> for Error {
    fn from(error: ProtocolError) -> Self {
        Error::InvalidInput { input: error.tensor.unwrap_or_default(), message: error.message }
    }
}

/// A v2 response and the binary part that follows its JSON (empty when every output is JSON).
#[derive(Debug, Clone)]
pub struct EncodedResponse {
    /// The JSON part.
    pub json: InferenceResponse,
    /// Raw data of the outputs asked for with `binary_data`, in output order.
    pub binary: Vec<u8>,
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

/// The output names a request asks for (empty: all).
pub fn requested_outputs(request: &InferenceRequest) -> Vec<String> {
    request.outputs.iter().flatten().map(|o| o.name.clone()).collect()
}

/// The v2 response for an outcome: each output as JSON data or, when asked, binary data;
/// the fuel used in `parameters`.
pub fn encode_response(
    model: &LoadedModel,
    request: &InferenceRequest,
    outcome: InferOutcome,
) -> Result<EncodedResponse> {
    let mut binary = Vec::new();
    let mut outputs = Vec::with_capacity(outcome.outputs.len());
    for tensor in outcome.outputs {
        let asked = request.outputs.iter().flatten().find(|o| o.name == tensor.name);
        let as_binary = wants_binary(request.parameters.as_ref(), asked.and_then(|o| o.parameters.as_ref()));
        outputs.push(encode_one(tensor, as_binary, &mut binary)?);
    }
    let mut parameters = Map::new();
    parameters.insert("fuel_used".into(), Value::from(outcome.fuel_used));
    let json = InferenceResponse {
        model_name: model.manifest().name.clone(),
        model_version: model.manifest().version.to_string(),
        id: request.id.clone(),
        parameters: Some(parameters),
        outputs,
    };
    Ok(EncodedResponse { json, binary })
}

fn encode_one(tensor: Tensor, as_binary: bool, binary: &mut Vec<u8>) -> Result<ResponseOutput> {
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
    let data = encode_output(&tensor).map_err(|e| Error::InvalidInput {
        input: tensor.name.clone(),
        message: format!("{}; ask for it with binary_data", e.message),
    })?;
    Ok(ResponseOutput {
        name: tensor.name,
        datatype: tensor.datatype,
        shape: tensor.shape,
        parameters: None,
        data: Some(data),
    })
}
