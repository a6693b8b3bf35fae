//! The footprint of `edgeinfer serve` on an edge device, full build against lean build
//! (`--no-default-features`: no gRPC, no batch scoring with Arrow/Parquet, no status page), in
//! one run: binary size, start to ready with the code cached, RSS with one small model (the
//! digits classifier) after 300 requests, and RSS per additional model (24 distinct MLPs from
//! `benches/make_mlp_variants.py`, one request each).
//!
//! ```sh
//! cargo build --release --no-default-features --bin edgeinfer --target-dir target/lean
//! cargo bench --bench footprint
//! ```
//!
//! Without the lean binary the lean rows say so. RSS is `VmRSS` from `/proc`, split into
//! anonymous memory (`RssAnon`: heap, pools, instance memory) and file pages (`RssFile`: the
//! binary and the compiled code mapped from the cache, clean and shared with the page cache).

#![allow(dead_code)]

#[path = "../tests/all/http.rs"]
mod http;
#[path = "../tests/support/soak_driver.rs"]
mod soak_driver;
#[path = "support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use soak_driver::{ServerProcess, Usage};

/// Extra models in the many-models repository.
const EXTRA_MODELS: usize = 24;
/// Requests before the one-model RSS is read.
const REQUESTS: usize = 300;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn start(binary: &Path, repo: &Path, cache: &Path) -> (ServerProcess, Duration) {
    let started = Instant::now();
    let server = ServerProcess::start_program(Command::new(binary), repo, cache, &[], Duration::from_secs(300));
    (server, started.elapsed())
}

fn digits_request() -> Vec<u8> {
    let row: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    serde_json::json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": row}]})
        .to_string()
        .into_bytes()
}

fn mlp_request() -> Vec<u8> {
    let row: Vec<f32> = (0..30).map(|i| i as f32 / 30.0).collect();
    serde_json::json!({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FP32", "data": row}]})
        .to_string()
        .into_bytes()
}

/// One build measured: the table row's figures.
struct Row {
    label: &'static str,
    binary_mb: f64,
    ready: Duration,
    one: Usage,
    per_extra_kib: f64,
}

fn measure(label: &'static str, binary: &Path, one: &Path, many: &Path, cache: &Path) -> Row {
    // Warm the code cache for both repositories, then time cached starts (median of 5).
    for repo in [one, many] {
        drop(start(binary, repo, cache));
    }
    let mut readies: Vec<Duration> = (0..5).map(|_| start(binary, one, cache).1).collect();
    readies.sort();
    let (server, _) = start(binary, one, cache);
    let mut connection = http::KeepAlive::connect(server.addr);
    let body = digits_request();
    for _ in 0..REQUESTS {
        assert_eq!(connection.post_json("/v2/models/digits/infer", &body).status, 200);
    }
    let one_memory = server.usage();
    drop(server);
    let (server, _) = start(binary, many, cache);
    let mut connection = http::KeepAlive::connect(server.addr);
    for _ in 0..REQUESTS {
        assert_eq!(connection.post_json("/v2/models/digits/infer", &body).status, 200);
    }
    let mlp = mlp_request();
    for index in 0..EXTRA_MODELS {
        let reply = connection.post_json(&format!("/v2/models/mlp{index}/infer"), &mlp);
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
    let many_memory = server.usage();
    Row {
        label,
        binary_mb: std::fs::metadata(binary).expect("binary").len() as f64 / 1e6,
        ready: readies[2],
        one: one_memory,
        per_extra_kib: (many_memory.rss_kib as f64 - one_memory.rss_kib as f64) / EXTRA_MODELS as f64,
    }
}

fn main() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let scratch = tempfile::tempdir().expect("tempdir");
    let onnx_dir = scratch.path().join("onnx");
    if !support::mlp_variants(EXTRA_MODELS, &onnx_dir) {
        eprintln!("footprint needs Python's onnx and numpy: pip install -r tests/fixtures/requirements.txt");
        return;
    }
    let runtime = support::runtime(true);
    let one = scratch.path().join("one");
    let many = scratch.path().join("many");
    let (digits, _) = support::compile(&runtime, &one, "digits.onnx", "digits");
    support::compile(&runtime, &many, "digits.onnx", "digits");
    for index in 0..EXTRA_MODELS {
        let onnx = std::fs::read(onnx_dir.join(format!("mlp{index}.onnx"))).expect("variant");
        support::compile_bytes(&runtime, &many, &onnx, &format!("mlp{index}.onnx"), &format!("mlp{index}"), 1);
    }
    let image_mib = support::memory_image_bytes(&many.join("mlp0/1/model.wasm")) as f64 / (1 << 20) as f64;
    drop(digits);
    drop(runtime);
    let cache = root.join("target/bench-cache");
    let full = PathBuf::from(env!("CARGO_BIN_EXE_edgeinfer"));
    let lean = root.join("target/lean/release/edgeinfer");
    let mut rows = vec![measure("full (default features)", &full, &one, &many, &cache)];
    if lean.is_file() {
        rows.push(measure("lean (--no-default-features)", &lean, &one, &many, &cache));
    } else {
        eprintln!("no lean build at {}: see this bench's header", lean.display());
    }
    println!(
        "| build | binary MB | start to ready, code cached, ms | RSS, 1 model, {REQUESTS} requests MiB | of which anonymous / file MiB | RSS per additional model MiB |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.1} | {:.1} / {:.1} | {:.2} |",
            row.label,
            row.binary_mb,
            row.ready.as_secs_f64() * 1e3,
            mib(row.one.rss_kib),
            mib(row.one.rss_anon_kib),
            mib(row.one.rss_file_kib),
            row.per_extra_kib / 1024.0,
        );
    }
    println!("\neach MLP's own memory image (weights and tract's plan): {image_mib:.2} MiB");
    if let [full, lean] = &rows[..] {
        println!(
            "\nlean / full: binary {:.2}x, RSS {:.2}x",
            lean.binary_mb / full.binary_mb,
            lean.one.rss_kib as f64 / full.one.rss_kib as f64,
        );
    }
}
