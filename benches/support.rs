//! Helpers shared by the benchmark binaries: fixtures, warm-up then timed repetitions,
//! sorted samples and percentiles (the shape of tract's own wasm bench).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{CompileRequest, Limits, LoadedModel, Runtime, RuntimeConfig, compile_model};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/fixtures").join(name)
}

/// A runtime caching compiled code under the target directory, with or without fuel.
pub fn runtime(consume_fuel: bool) -> Arc<Runtime> {
    let cache_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target/bench-cache");
    Runtime::new(RuntimeConfig { cache_dir, consume_fuel, ..RuntimeConfig::default() }).expect("runtime")
}

/// A fueled runtime that returns every instance's pages to the kernel (keeps none resident,
/// `RuntimeConfig::keep_resident_bytes = 0`), to compare with the default.
#[allow(dead_code)]
pub fn runtime_returning_pages() -> Arc<Runtime> {
    let cache_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target/bench-cache");
    Runtime::new(RuntimeConfig { cache_dir, keep_resident_bytes: 0, ..RuntimeConfig::default() }).expect("runtime")
}

/// Compiles a fixture into `repo` and returns the loaded model and the time it took.
pub fn compile(runtime: &Arc<Runtime>, repo: &Path, file: &str, name: &str) -> (LoadedModel, Duration) {
    compile_version(runtime, repo, file, name, 1)
}

/// Compiles ONNX bytes (read from `source_file`) as version `version` of `name` into `repo`,
/// with default limits.
pub fn compile_bytes(
    runtime: &Arc<Runtime>,
    repo: &Path,
    onnx: &[u8],
    source_file: &str,
    name: &str,
    version: u64,
) -> LoadedModel {
    let request = CompileRequest {
        onnx,
        source_file: source_file.into(),
        name: name.into(),
        version,
        repo: repo.to_path_buf(),
        limits: Limits::default(),
        examples: Vec::new(),
        reference: None,
        text: None,
    };
    compile_model(runtime, &request, &|_: &str| {}).expect("compile")
}

/// Writes `count` variants of a 30-feature MLP (`mlp0.onnx`...) into `dir` with
/// `benches/make_mlp_variants.py`; false when Python's onnx or numpy is missing.
pub fn mlp_variants(count: usize, dir: &Path) -> bool {
    let generator = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("benches/make_mlp_variants.py");
    let generated = std::process::Command::new("python3").arg(generator).arg(count.to_string()).arg(dir).status();
    generated.is_ok_and(|s| s.success())
}

/// The size of a model's own compiled part: its component's data segments (weights and
/// parsed plan), the memory image an additional model cannot share.
pub fn memory_image_bytes(component: &Path) -> usize {
    let wasm = std::fs::read(component).expect("component");
    wasmparser::Parser::new(0)
        .parse_all(&wasm)
        .filter_map(|payload| match payload {
            Ok(wasmparser::Payload::DataSection(reader)) => Some(reader.range().len()),
            _ => None,
        })
        .sum()
}

/// Compiles a fixture as version `version` of `name`.
pub fn compile_version(
    runtime: &Arc<Runtime>,
    repo: &Path,
    file: &str,
    name: &str,
    version: u64,
) -> (LoadedModel, Duration) {
    let onnx = std::fs::read(fixture(file)).expect("fixture");
    let started = Instant::now();
    let model = compile_bytes(runtime, repo, &onnx, file, name, version);
    (model, started.elapsed())
}

/// One digits row and the SqueezeNet input, as tensors.
pub fn digits_input(rows: usize) -> Tensor {
    Tensor {
        name: "X".into(),
        datatype: Datatype::Fp32,
        shape: vec![rows as u64, 64],
        data: vec![0x3f; rows * 64 * 4].into(),
    }
}

pub fn squeezenet_input() -> Tensor {
    let data = std::fs::read(fixture("squeezenet_input.bin")).expect("input");
    Tensor { name: "data_0".into(), datatype: Datatype::Fp32, shape: vec![1, 3, 224, 224], data: data.into() }
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

/// `concurrency` keep-alive HTTP clients share `requests` requests; every reply must be 200.
pub async fn load(
    url: &str,
    body: &[u8],
    header_len: Option<usize>,
    concurrency: usize,
    requests: usize,
) -> (Duration, Vec<Duration>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = Bytes::copy_from_slice(body);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, body, url) = (client.clone(), body.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for _ in 0..requests / concurrency {
                let mut request = hyper::Request::post(&url).body(Full::new(body.clone())).expect("request");
                if let Some(len) = header_len {
                    request.headers_mut().insert("inference-header-content-length", len.into());
                }
                let sent = Instant::now();
                let response = client.request(request).await.expect("response");
                let status = response.status();
                let bytes = response.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    all.sort();
    (elapsed, all)
}
