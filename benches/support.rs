//! Helpers shared by the benchmark binaries: fixtures, warm-up then timed repetitions,
//! sorted samples and percentiles (the shape of tract's own wasm bench).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeinfer::{CompileRequest, Limits, LoadedModel, Runtime, RuntimeConfig, compile_model};
use edgeinfer_oip::{Datatype, Tensor};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A runtime caching compiled code under the target directory, with or without fuel.
pub fn runtime(consume_fuel: bool) -> Arc<Runtime> {
    let cache_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-cache");
    Runtime::new(RuntimeConfig { cache_dir, consume_fuel, ..RuntimeConfig::default() }).expect("runtime")
}

/// Compiles a fixture into `repo` and returns the loaded model and the time it took.
pub fn compile(runtime: &Arc<Runtime>, repo: &Path, file: &str, name: &str) -> (LoadedModel, Duration) {
    let onnx = std::fs::read(fixture(file)).expect("fixture");
    let request = CompileRequest {
        onnx: &onnx,
        source_file: file.into(),
        name: name.into(),
        version: 1,
        repo: repo.to_path_buf(),
        limits: Limits::default(),
        examples: Vec::new(),
    };
    let started = Instant::now();
    let model = compile_model(runtime, &request, &|_: &str| {}).expect("compile");
    (model, started.elapsed())
}

/// One digits row and the SqueezeNet input, as tensors.
pub fn digits_input(rows: usize) -> Tensor {
    Tensor { name: "X".into(), datatype: Datatype::Fp32, shape: vec![rows as u64, 64], data: vec![0x3f; rows * 64 * 4] }
}

pub fn squeezenet_input() -> Tensor {
    let data = std::fs::read(fixture("squeezenet_input.bin")).expect("input");
    Tensor { name: "data_0".into(), datatype: Datatype::Fp32, shape: vec![1, 3, 224, 224], data }
}

/// Runs `f` `warmup` times untimed, then `runs` times timed; returns the sorted samples.
pub fn sample(warmup: usize, runs: usize, mut f: impl FnMut() -> Duration) -> Vec<Duration> {
    for _ in 0..warmup {
        f();
    }
    let mut samples: Vec<Duration> = (0..runs).map(|_| f()).collect();
    samples.sort();
    samples
}

/// Times one call.
pub fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// The `p`th percentile (0-100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[index]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

pub fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64().max(1e-12))
}
