//! Embedding edgeinfer with nothing but `edgeinfer-runtime`: compile an ONNX model into a
//! sandboxed component (once), load it from its repository, and infer under limits. No
//! server, no HTTP: the same calls work inside any Rust program.
//!
//! `cargo run --release -p edgeinfer-runtime --example embed [model.onnx] [repo-dir]`
//! (defaults: the digits fixture and `target/embed-repo`).

use std::path::PathBuf;
use std::sync::Arc;

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{
    CompileRequest, LimitOverrides, Limits, ModelRepository, Runtime, RuntimeConfig, compile_model,
};

fn main() -> edgeinfer_runtime::Result<()> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut args = std::env::args().skip(1);
    let onnx_path = args.next().map_or_else(|| root.join("tests/fixtures/digits.onnx"), PathBuf::from);
    let repo_dir = args.next().map_or_else(|| root.join("target/embed-repo"), PathBuf::from);

    // One runtime per process: the wasmtime engine, the code cache, the epoch ticker.
    let runtime: Arc<Runtime> = Runtime::new(RuntimeConfig::default())?;

    // ONNX -> component, written as <repo>/digits/1/{model.wasm, manifest.toml}.
    if !repo_dir.join("digits/1/manifest.toml").exists() {
        let onnx = std::fs::read(&onnx_path).map_err(|e| edgeinfer_runtime::Error::io("reading the model", e))?;
        let request = CompileRequest {
            onnx: &onnx,
            source_file: onnx_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            name: "digits".into(),
            version: 1,
            repo: repo_dir.clone(),
            limits: Limits::default(),
            examples: Vec::new(),
            reference: None,
            text: None,
        };
        compile_model(&runtime, &request, &|step: &str| eprintln!("compile: {step}"))?;
    }

    // Load the newest version: its sha256 is checked against the manifest before compiling.
    let repo = ModelRepository::open(&repo_dir)?;
    let model = repo.load(&runtime, "digits", None)?;
    let inputs = &model.manifest().inputs;
    println!("loaded {} v{} with inputs {:?}", model.manifest().name, model.manifest().version, inputs);

    // One 8x8 image (pixels 0..1): a fresh sandbox, fuel and deadline from the manifest.
    let pixels: Vec<f32> = (0..64).map(|i| if (i % 8) == 3 || (i % 8) == 4 { 1.0 } else { 0.0 }).collect();
    let image = Tensor {
        name: "X".into(),
        datatype: Datatype::Fp32,
        shape: vec![1, 64],
        data: pixels.iter().flat_map(|p| p.to_le_bytes()).collect(),
    };
    let outcome = model.infer(vec![image], &[], LimitOverrides::default())?;
    for output in &outcome.outputs {
        println!("{} {:?} {:?}: {} bytes", output.name, output.datatype, output.shape, output.data.len());
    }
    println!("fuel used: {}", outcome.fuel_used);
    Ok(())
}
