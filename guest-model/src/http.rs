//! The component's own HTTP face: `wasi:http/incoming-handler` (Spin's `#[http_component]`)
//! answering the Open Inference Protocol v2 REST subset for the one model it carries, with
//! the codec and bodies shared with the edgeinfer server (`edgeinfer-oip`).

use edgeinfer_oip as oip;
use serde_json::Value;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use crate::edgeinfer::inference::types::{Datatype, Error, Tensor as WitTensor};
use crate::loaded::{self, LoadedModel};

/// Largest request body accepted, as `edgeinfer serve`'s default.
const MAX_BODY_BYTES: usize = 8 << 20;

/// An answer: status and JSON body, or a ready body with its framing.
enum Answer {
    Json(u16, Value),
    Body(oip::HttpBody),
}

#[http_component]
fn handle(request: Request) -> Response {
    let answer =
        loaded::with_model(|model| route(model, request)).unwrap_or_else(|| Err((500, loaded::NO_MODEL.to_string())));
    let answer = answer.unwrap_or_else(|(status, message)| Answer::Json(status, oip::error_body(&message)));
    match answer {
        Answer::Json(status, value) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(value.to_string())
            .build(),
        Answer::Body(body) => {
            let mut builder = Response::builder();
            builder.status(200).header("content-type", body.content_type);
            if let Some(length) = body.header_length {
                builder.header(oip::HEADER_LENGTH, length.to_string());
            }
            builder.body(body.to_vec()).build()
        }
    }
}

fn route(model: &LoadedModel, request: Request) -> Result<Answer, (u16, String)> {
    let path = request.path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = &request.method().clone();
    let ok = |value: Value| Ok(Answer::Json(200, value));
    match segments.as_slice() {
        ["v2", "health", "live"] => allow(method, Method::Get).and_then(|()| ok(oip::live_body())),
        ["v2", "health", "ready"] => allow(method, Method::Get).and_then(|()| ok(oip::ready_body())),
        ["v2", "models", name, rest @ ..] => {
            let metadata = &model.metadata;
            if *name != metadata.name {
                return Err((404, oip::unknown_model_message(name)));
            }
            let rest = match rest {
                ["versions", version, rest @ ..] if *version == metadata.version => rest,
                ["versions", version, ..] => {
                    return Err((404, oip::unknown_version_message(name, version)));
                }
                rest => rest,
            };
            match rest {
                [] => allow(method, Method::Get).and_then(|()| ok(metadata_json(model))),
                ["ready"] => allow(method, Method::Get).and_then(|()| ok(oip::model_ready_body(name))),
                ["infer"] => {
                    allow(method, Method::Post)?;
                    infer(model, request).map(Answer::Body)
                }
                _ => Err((404, oip::unknown_endpoint_message(&path))),
            }
        }
        _ => Err((404, oip::unknown_endpoint_message(&path))),
    }
}

fn allow(method: &Method, expected: Method) -> Result<(), (u16, String)> {
    if *method == expected {
        Ok(())
    } else {
        Err((405, oip::wrong_method_message(&expected.to_string(), &method.to_string())))
    }
}

fn infer(model: &LoadedModel, request: Request) -> Result<oip::HttpBody, (u16, String)> {
    if request.body().len() > MAX_BODY_BYTES {
        return Err((413, oip::body_too_large_message(MAX_BODY_BYTES)));
    }
    let bad = |e: oip::ProtocolError| (400, e.to_string());
    let header_length = request
        .header(oip::HEADER_LENGTH)
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| (400, "Inference-Header-Content-Length is not text".to_string()))
        })
        .transpose()?;
    let body = oip::Bytes::from(request.into_body());
    let (json, binary) = oip::split_body(&body, header_length.as_deref()).map_err(bad)?;
    let (decoded, inputs) = oip::decode_request_with_binary(&json, &binary).map_err(bad)?;
    let inputs = inputs.into_iter().map(to_wit).collect();
    let outputs = model.infer(inputs, &oip::requested_outputs(&decoded)).map_err(|error| match error {
        Error::InvalidInput(invalid) => (400, oip::invalid_input_message(&invalid.input, &invalid.message)),
        Error::Model(message) => (500, oip::model_error_message(&message)),
    })?;
    let outputs: Vec<oip::Tensor> = outputs.into_iter().map(from_wit).collect();
    let metadata = &model.metadata;
    let encoded = oip::encode_response(&metadata.name, &metadata.version, &decoded, &outputs).map_err(bad)?;
    encoded.into_http_body().map_err(|e| (500, e.to_string()))
}

fn metadata_json(model: &LoadedModel) -> Value {
    let metadata = &model.metadata;
    let tensors = |specs: &[crate::edgeinfer::inference::types::TensorSpec]| -> Vec<oip::TensorMetadata> {
        specs
            .iter()
            .map(|s| oip::TensorMetadata {
                name: s.name.clone(),
                datatype: to_oip(s.datatype),
                shape: s.shape.clone(),
                parameters: crate::ml::zipmap_labels(&s.name).map(|labels| serde_json::json!({ "labels": labels })),
            })
            .collect()
    };
    let value = oip::ModelMetadata {
        name: metadata.name.clone(),
        versions: vec![metadata.version.clone()],
        platform: metadata.platform.clone(),
        inputs: tensors(&metadata.inputs),
        outputs: tensors(&metadata.outputs),
    };
    serde_json::to_value(value).unwrap_or_default()
}

const DATATYPES: [(Datatype, oip::Datatype); 13] = [
    (Datatype::Bool, oip::Datatype::Bool),
    (Datatype::Uint8, oip::Datatype::Uint8),
    (Datatype::Uint16, oip::Datatype::Uint16),
    (Datatype::Uint32, oip::Datatype::Uint32),
    (Datatype::Uint64, oip::Datatype::Uint64),
    (Datatype::Int8, oip::Datatype::Int8),
    (Datatype::Int16, oip::Datatype::Int16),
    (Datatype::Int32, oip::Datatype::Int32),
    (Datatype::Int64, oip::Datatype::Int64),
    (Datatype::Fp16, oip::Datatype::Fp16),
    (Datatype::Fp32, oip::Datatype::Fp32),
    (Datatype::Fp64, oip::Datatype::Fp64),
    (Datatype::Bytes, oip::Datatype::Bytes),
];

fn to_oip(datatype: Datatype) -> oip::Datatype {
    DATATYPES.iter().find(|(w, _)| *w == datatype).map_or(oip::Datatype::Bytes, |(_, o)| *o)
}

fn to_wit_datatype(datatype: oip::Datatype) -> Datatype {
    DATATYPES.iter().find(|(_, o)| *o == datatype).map_or(Datatype::Bytes, |(w, _)| *w)
}

fn to_wit(tensor: oip::Tensor) -> WitTensor {
    WitTensor {
        name: tensor.name,
        datatype: to_wit_datatype(tensor.datatype),
        shape: tensor.shape,
        data: tensor.data.into(),
    }
}

fn from_wit(tensor: WitTensor) -> oip::Tensor {
    oip::Tensor { name: tensor.name, datatype: to_oip(tensor.datatype), shape: tensor.shape, data: tensor.data.into() }
}
