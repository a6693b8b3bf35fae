//! The demo model embedded in the binary: `edgeinfer serve` with no repository serves it.

use std::path::PathBuf;
use std::sync::Arc;

use edgeinfer_runtime::{CompileRequest, Limits, Manifest, RUNTIME_SHA256, Runtime, compile_model, sha256_hex};

/// The demo model (scikit-learn digits classifier) shipped inside the binary.
pub const DEMO_MODEL_ONNX: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/digits.onnx"));

/// A repository holding the demo model, compiled into the cache directory on first use.
pub fn demo_repository(runtime: &Arc<Runtime>) -> edgeinfer_runtime::Result<PathBuf> {
    let repo = runtime.config().cache_dir.join("demo-repo");
    let version_dir = repo.join("digits/1");
    let current = Manifest::load(&version_dir.join("manifest.toml")).ok().is_some_and(|m| {
        m.source.sha256 == sha256_hex(DEMO_MODEL_ONNX) && m.component.runtime_sha256 == RUNTIME_SHA256
    });
    if current {
        return Ok(repo);
    }
    if version_dir.exists() {
        std::fs::remove_dir_all(&version_dir)
            .map_err(|e| edgeinfer_runtime::Error::io("replacing the stale demo model", e))?;
    }
    tracing::info!("compiling the embedded demo model (first run only)");
    let request = CompileRequest {
        onnx: DEMO_MODEL_ONNX,
        source_file: "digits.onnx".into(),
        name: "digits".into(),
        version: 1,
        repo: repo.clone(),
        limits: Limits::default(),
        examples: Vec::new(),
        reference: None,
        text: None,
    };
    compile_model(runtime, &request, &|step: &str| tracing::info!("{step}"))?;
    Ok(repo)
}
