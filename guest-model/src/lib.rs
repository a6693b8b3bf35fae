//! The generic edgeinfer model runtime, compiled to a `wasm32-wasip2` component.
//!
//! `edgeinfer compile` calls `setup.load` once with the ONNX bytes, then snapshots the
//! instance (Wizer), so every instance of the resulting component starts with the model
//! parsed, optimized and ready for `model.infer` and for HTTP requests (`wasi:http`
//! incoming-handler, see `http.rs`), under edgeinfer, Spin or `wasmtime serve`.

#![allow(missing_docs)] // wit-bindgen generates undocumented items; this crate has no Rust users.

mod convert;
mod http;
mod loaded;
mod ml;
mod onnx_ops;
mod symbols;
mod text;

use edgeinfer::inference::types::{Error, ModelMetadata, Tensor};
use exports::edgeinfer::inference::model::Guest as ModelGuest;
use exports::edgeinfer::inference::profiling::{Guest as ProfilingGuest, PlanNode};
use exports::edgeinfer::inference::setup::Guest as SetupGuest;
use exports::edgeinfer::inference::text_setup::Guest as TextSetupGuest;

wit_bindgen::generate!({
    path: "../wit",
    world: "runtime-component",
});

struct Runtime;

impl ModelGuest for Runtime {
    fn metadata() -> ModelMetadata {
        loaded::with_model(|model| model.metadata.clone()).unwrap_or_else(|| ModelMetadata {
            name: String::new(),
            version: String::new(),
            platform: loaded::PLATFORM.to_string(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        })
    }

    fn infer(inputs: Vec<Tensor>, outputs: Vec<String>) -> Result<Vec<Tensor>, Error> {
        loaded::with_model(|model| model.infer(inputs, &outputs))
            .unwrap_or_else(|| Err(Error::Model(loaded::NO_MODEL.into())))
    }
}

impl SetupGuest for Runtime {
    fn load(onnx: Vec<u8>, name: String, version: String) -> Result<ModelMetadata, String> {
        let model = loaded::LoadedModel::parse(&onnx, name, version)?;
        let metadata = model.metadata.clone();
        loaded::install(model);
        Ok(metadata)
    }
}

impl ProfilingGuest for Runtime {
    fn start(inputs: Vec<Tensor>) -> Result<Vec<PlanNode>, Error> {
        let nodes = loaded::with_model(|model| loaded::start_profile(model, inputs))
            .unwrap_or_else(|| Err(Error::Model(loaded::NO_MODEL.into())))?;
        Ok(nodes.into_iter().map(|(name, op)| PlanNode { name, op }).collect())
    }

    fn step() -> Result<bool, Error> {
        loaded::step_profile()
    }
}

impl TextSetupGuest for Runtime {
    fn attach_tokenizer(tokenizer_json: Vec<u8>, labels: Vec<String>) -> Result<(), String> {
        loaded::with_model_mut(|model| model.attach_tokenizer(&tokenizer_json, labels))
            .unwrap_or_else(|| Err(loaded::NO_MODEL.into()))
    }
}

export!(Runtime);
