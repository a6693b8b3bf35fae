//! Native kernels against everything else, warm call per model, all in one run: native tract
//! (same plan, in this process), onnxruntime native (1 thread, Python, `tests/zoo/ort_latency.py`),
//! onnxruntime-web (wasm SIMD, 1 thread, Node), the component on its own wasm kernels
//! (`RuntimeConfig::native_kernels = false`) and on the host's native kernels (the default).
//!
//! `cargo bench -p edgeinfer --features bench-native --bench kernels` prints the table; each
//! figure is the median of `EDGEINFER_BENCH_RUNS` calls (default 10) after warm-up, and the
//! ratios are between columns of the same run. Models: SqueezeNet (the fixture) and the CNNs
//! of the model zoo (`tests/zoo/models`, their recorded inputs).

#[path = "peers.rs"]
mod peers;
#[path = "support.rs"]
mod support;
#[path = "../tests/support/zoo_case.rs"]
mod zoo_case;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use edgeinfer_oip::Tensor;
use edgeinfer_runtime::{LimitOverrides, LoadedModel, Runtime, RuntimeConfig};
use support::*;
use tract_onnx::prelude::*;

const ZOO_MODELS: [&str; 4] = ["mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "resnet18"];

fn main() {
    let runs: usize = std::env::var("EDGEINFER_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let zoo = root.join("tests/zoo/models");
    let with_native = runtime(true);
    let cache_dir = root.join("target/bench-cache");
    let wasm_only = Runtime::new(RuntimeConfig { cache_dir, native_kernels: false, ..RuntimeConfig::default() })
        .expect("runtime without native kernels");
    let repo = tempfile::tempdir().expect("tempdir");

    // (name, file under tests/fixtures, inputs)
    let mut cases: Vec<(String, String, Vec<Tensor>)> =
        vec![("squeezenet".into(), "squeezenet.onnx".into(), vec![squeezenet_input()])];
    for name in ZOO_MODELS {
        cases.push((name.into(), format!("../zoo/models/{name}.onnx"), zoo_case::case_inputs(&zoo, name)));
    }
    let ort = onnxruntime_native(&zoo, runs);

    println!(
        "| model | native tract ms | onnxruntime ms (1 thread) | onnxruntime-web ms | wasm kernels ms | native kernels ms | native/wasm kernels | native kernels/native tract | native kernels/onnxruntime | native kernels/onnxruntime-web |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, relative, inputs) in &cases {
        let file = &fixture(relative);
        let (model, _) = compile(&with_native, repo.path(), relative, &name.replace('_', "-"));
        assert!(model.native_kernels(), "{name}: the default runtime links native kernels");
        let wasm = LoadedModel::load(&wasm_only, model.dir()).expect("load on wasm kernels");
        assert!(!wasm.native_kernels());

        let native_tract = native_tract(file, inputs, runs);
        let native_kernels = warm(&model, inputs, runs);
        let wasm_kernels = warm(&wasm, inputs, runs);
        let web = inputs.first().filter(|_| inputs.len() == 1).and_then(|input| peers::ort_web(file, input, runs));
        let onnxruntime = ort.get(name.as_str()).copied();
        let cell = |d: Option<Duration>| d.map_or("n/a".to_string(), ms);
        let over = |d: Option<Duration>| d.map_or("n/a".to_string(), |d| ratio(native_kernels, d));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ms(native_tract),
            cell(onnxruntime),
            cell(web),
            ms(wasm_kernels),
            ms(native_kernels),
            ratio(native_kernels, wasm_kernels),
            ratio(native_kernels, native_tract),
            over(onnxruntime),
            over(web),
        );
    }
}

/// Median warm call: one session, fresh limits per call.
fn warm(model: &LoadedModel, inputs: &[Tensor], runs: usize) -> Duration {
    let unlimited = LimitOverrides { fuel: Some(u64::MAX / 4), timeout_ms: Some(600_000), memory_mb: None };
    let mut session = model.session(unlimited).expect("session");
    let mut times = sample(3, runs, || timed(|| drop(session.infer(inputs.to_vec(), &[]).expect("infer"))));
    times.sort();
    percentile(&times, 50.0)
}

fn native_tract(file: &Path, inputs: &[Tensor], runs: usize) -> Duration {
    let plan = peers::native_plan(file);
    let values = || -> TVec<TValue> {
        inputs
            .iter()
            .map(|input| {
                let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
                // SAFETY: the recorded inputs of these models are little-endian f32 of this shape.
                let tensor =
                    unsafe { tract_onnx::prelude::Tensor::from_raw::<f32>(&shape, &input.data) }.expect("tensor");
                tensor.into_tvalue()
            })
            .collect()
    };
    let mut times = sample(3, runs, || timed(|| drop(plan.run(values()).expect("native run"))));
    times.sort();
    percentile(&times, 50.0)
}

/// onnxruntime's warm latency of each zoo model (empty, and why on stderr, without Python's
/// onnxruntime).
fn onnxruntime_native(zoo: &Path, runs: usize) -> BTreeMap<String, Duration> {
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/zoo/ort_latency.py");
    let output =
        std::process::Command::new("python3").arg(script).arg(zoo).arg(runs.to_string()).args(ZOO_MODELS).output();
    match output {
        Ok(output) if output.status.success() => {
            let report: BTreeMap<String, f64> = serde_json::from_slice(&output.stdout).unwrap_or_default();
            report.into_iter().map(|(name, ms)| (name, Duration::from_secs_f64(ms / 1e3))).collect()
        }
        Ok(output) => {
            eprintln!("onnxruntime column skipped: {}", String::from_utf8_lossy(&output.stderr).trim());
            BTreeMap::new()
        }
        Err(error) => {
            eprintln!("onnxruntime column skipped: python3: {error}");
            BTreeMap::new()
        }
    }
}
