//! Soak: the real `edgeinfer serve` binary under minutes of mixed load with clients that
//! disconnect at every stage; RSS, open file descriptors and threads sampled every few
//! seconds. Growth after warm-up means a leak.
//!
//! `cargo bench --bench soak` (default 180 s; `EDGEINFER_SOAK_SECS=600` for longer) prints a
//! table of samples and the growth from the first sample after warm-up to the last.

#![allow(dead_code)]

#[path = "../tests/all/http.rs"]
mod http;
#[path = "../tests/support/soak_driver.rs"]
mod soak_driver;
#[path = "support.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use soak_driver::{Churn, ServerProcess, Usage};

const WARMUP: Duration = Duration::from_secs(20);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const CLIENTS: usize = 32;

fn main() {
    let total =
        Duration::from_secs(std::env::var("EDGEINFER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(180));
    let repo = tempfile::tempdir().expect("tempdir");
    let runtime = support::runtime(true);
    support::compile(&runtime, repo.path(), "digits.onnx", "digits");
    drop(runtime);
    let cache = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target/bench-cache");
    let server = ServerProcess::start(repo.path(), &cache);
    let rows: Vec<Vec<f32>> = vec![vec![0.5; 64]];
    let body = serde_json::json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": rows}]})
        .to_string()
        .into_bytes();
    let churn = Churn::default();
    soak_driver::churn(server.addr, CLIENTS, WARMUP, &body, &churn);
    println!("| t (s) | RSS MiB | open fds | threads | requests answered | disconnects |");
    println!("|---|---|---|---|---|---|");
    let started = Instant::now();
    let mut samples: Vec<Usage> = Vec::new();
    while started.elapsed() < total {
        let usage = server.usage();
        println!(
            "| {} | {:.1} | {} | {} | {} | {} |",
            started.elapsed().as_secs(),
            usage.rss_kib as f64 / 1024.0,
            usage.fds,
            usage.threads,
            churn.answered.load(Ordering::Relaxed),
            churn.disconnects.load(Ordering::Relaxed)
        );
        samples.push(usage);
        soak_driver::churn(server.addr, CLIENTS, SAMPLE_EVERY, &body, &churn);
    }
    std::thread::sleep(Duration::from_secs(2));
    let last = server.usage();
    let first = samples.first().copied().unwrap_or(last);
    println!();
    println!(
        "after warm-up -> end (idle): RSS {:+.1} MiB, fds {:+}, threads {:+}; unexpected answers: {}",
        (last.rss_kib as f64 - first.rss_kib as f64) / 1024.0,
        last.fds as i64 - first.fds as i64,
        last.threads as i64 - first.threads as i64,
        churn.unexpected.load(Ordering::Relaxed)
    );
}
