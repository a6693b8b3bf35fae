//! The peers the benches compare the sandbox with: native tract running the same plan, and
//! onnxruntime-web (wasm SIMD, 1 thread) in Node.

use std::time::Duration;

use edgeinfer_oip::Tensor;
use tract_onnx::prelude::*;

#[path = "../guest-model/src/symbols.rs"]
mod symbols;

/// The model as the component plans it (unset dimensions become symbols, the batch `N`), so
/// native tract runs the same symbolic-batch plan, not one specialised to the input.
pub fn native_plan(file: &std::path::Path) -> Arc<TypedRunnableModel> {
    let mut model = tract_onnx::onnx().model_for_path(file).expect("onnx");
    symbols::name_unset_dimensions(&mut model).expect("symbolic facts");
    model.into_optimized().expect("optimize").into_runnable().expect("plan")
}

/// onnxruntime-web's median `session.run` time on `file` with `input`, or `None` (and why on
/// stderr) when Node or the package is not available.
pub fn ort_web(file: &std::path::Path, input: &Tensor, runs: usize) -> Option<Duration> {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("benches/ort-web");
    if !dir.join("node_modules/onnxruntime-web").exists() {
        let installed = std::process::Command::new("npm")
            .args(["install", "--silent"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("onnxruntime-web column skipped: `npm install --prefix benches/ort-web` failed");
            return None;
        }
    }
    let data = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(data.path(), &input.data).expect("input file");
    let dims: Vec<String> = input.shape.iter().map(u64::to_string).collect();
    let output = std::process::Command::new("node")
        .arg(dir.join("infer.mjs"))
        .arg(file)
        .arg(&input.name)
        .arg(data.path())
        .arg(dims.join(","))
        .arg(runs.to_string())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("infer.mjs prints JSON");
            report["median_ms"].as_f64().map(|ms| Duration::from_secs_f64(ms / 1e3))
        }
        Ok(output) => {
            eprintln!("onnxruntime-web failed on {}: {}", file.display(), String::from_utf8_lossy(&output.stderr));
            None
        }
        Err(error) => {
            eprintln!("onnxruntime-web column skipped: node: {error}");
            None
        }
    }
}
