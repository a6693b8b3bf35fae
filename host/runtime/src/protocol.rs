//! Open Inference Protocol v2 on top of a loaded model: decoded request in, v2 response out.
//! The one place responses are built; [`crate::pipeline`] uses it for every transport.

use edgeinfer_oip::InferenceRequest;
pub use edgeinfer_oip::{EncodedResponse, requested_outputs};
use serde_json::{Map, Value};

use crate::Result;
use crate::model::{InferOutcome, LoadedModel};

/// The v2 response for an outcome (outputs as JSON or, when asked, binary data), with the
/// fuel used in `parameters`.
pub fn encode_response(
    model: &LoadedModel,
    request: &InferenceRequest,
    outcome: &InferOutcome,
) -> Result<EncodedResponse> {
    let manifest = model.manifest();
    let mut encoded =
        edgeinfer_oip::encode_response(&manifest.name, &manifest.version.to_string(), request, &outcome.outputs)?;
    let mut parameters = Map::new();
    parameters.insert("fuel_used".into(), Value::from(outcome.fuel_used));
    encoded.json.parameters = Some(parameters);
    Ok(encoded)
}
