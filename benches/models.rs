//! Many models in one server: what each additional loaded model costs in memory and start-up.
//!
//! `cargo bench --bench models` generates 50 variants of one small MLP (30 features, ~17 KB of
//! ONNX each, `benches/make_mlp_variants.py`; needs Python's `onnx`), compiles them (reporting
//! the compile time per model with the runtime's code cached), then starts the real
//! `edgeinfer serve` binary on a repository holding one of them and on one holding all 50,
//! runs one inference on every model, and prints RSS, start-up time and the RSS each
//! additional model costs. Every model shares the runtime's compiled code (`shared_code`), so an
//! additional model should cost its own memory image (the shell's compiled size, printed
//! beside it) plus a few MB.
//! `EDGEINFER_BENCH_MODELS=N` changes the count.

#![allow(dead_code)]

#[path = "../tests/all/http.rs"]
mod http;
#[path = "../tests/support/soak_driver.rs"]
mod soak_driver;
#[path = "support.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use soak_driver::ServerProcess;

fn main() {
    let count: usize = std::env::var("EDGEINFER_BENCH_MODELS").ok().and_then(|n| n.parse().ok()).unwrap_or(50);
    let scratch = tempfile::tempdir().expect("tempdir");
    let onnx_dir = scratch.path().join("onnx");
    if !support::mlp_variants(count, &onnx_dir) {
        eprintln!("models needs Python's onnx and numpy: pip install -r tests/fixtures/requirements.txt");
        return;
    }

    let runtime = support::runtime(true);
    let all = scratch.path().join("all");
    let one = scratch.path().join("one");
    let mut compile_times = Vec::new();
    for index in 0..count {
        let onnx = std::fs::read(onnx_dir.join(format!("mlp{index}.onnx"))).expect("variant");
        let started = Instant::now();
        let model =
            support::compile_bytes(&runtime, &all, &onnx, &format!("mlp{index}.onnx"), &format!("mlp{index}"), 1);
        compile_times.push(started.elapsed());
        if index == 0 {
            copy_dir(model.dir(), &one.join("mlp0/1"));
        }
    }
    drop(runtime);
    compile_times.sort();
    let shell_bytes = support::memory_image_bytes(&all.join("mlp1/1/model.wasm"));

    let cache = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target/bench-cache");
    let (rss_one, start_one) = serve_and_measure(&one, &cache, 1);
    let (rss_all, start_all) = serve_and_measure(&all, &cache, count);
    let per_model = (rss_all as f64 - rss_one as f64) / (count - 1).max(1) as f64 / 1024.0;
    println!("\n{count} variants of a 30-feature MLP (~17 KB of ONNX each), one inference on each");
    println!(
        "compile to ready-to-serve, runtime code cached: median {} s, max {} s",
        secs(compile_times[count / 2]),
        secs(compile_times[count - 1])
    );
    println!();
    println!(
        "| models loaded | start-up to all ready s | RSS MiB | RSS per additional model MiB | model's own memory image MiB |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| 1 | {} | {:.1} | - | {:.2} |",
        secs(start_one),
        rss_one as f64 / 1024.0,
        shell_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "| {count} | {} | {:.1} | {per_model:.2} | {:.2} |",
        secs(start_all),
        rss_all as f64 / 1024.0,
        shell_bytes as f64 / (1 << 20) as f64
    );
}

/// Starts the server on `repo`, waits until `models` models are ready, infers once on each and
/// returns the RSS (KiB) and the time from spawn to all ready.
fn serve_and_measure(repo: &Path, cache: &Path, models: usize) -> (u64, Duration) {
    let started = Instant::now();
    let server = ServerProcess::start(repo, cache);
    for index in 0..models {
        let path = format!("/v2/models/mlp{index}/ready");
        while http::get(server.addr, &path).status != 200 {
            assert!(started.elapsed() < Duration::from_secs(600), "mlp{index} never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let start_up = started.elapsed();
    let body =
        serde_json::json!({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": vec![0.5f32; 30]}]});
    for index in 0..models {
        let reply = http::post_json(server.addr, &format!("/v2/models/mlp{index}/infer"), &body);
        assert_eq!(reply.status, 200, "mlp{index}: {}", reply.text());
    }
    std::thread::sleep(Duration::from_millis(500));
    (server.usage().rss_kib, start_up)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}
