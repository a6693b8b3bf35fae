//! Loopback load on `edgeinfer serve`'s HTTP API: requests/s and p50/p99 latency at
//! concurrency 1, 8 and 64 for the digits model, JSON and binary, next to the same model's
//! in-process latency (fresh instance per request), so HTTP overhead is a ratio.
//!
//! `cargo bench --bench http_load` prints a table.

#[path = "support.rs"]
mod support;

use std::sync::Arc;

use edgeinfer::server::{ModelRegistry, ServerConfig, start};
use edgeinfer::{LimitOverrides, ModelRepository};
use support::*;

const REQUESTS_PER_LEVEL: usize = 3000;

fn main() {
    let repo = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(true);
    let (model, _) = compile(&runtime, repo.path(), "digits.onnx", "digits");
    let input = digits_input(1);
    let in_process = sample(200, 2000, || {
        timed(|| drop(model.infer(vec![input.clone()], &[], LimitOverrides::default()).expect("infer")))
    });

    let registry = Arc::new(ModelRegistry::new(runtime, ModelRepository::open(repo.path()).expect("repo")));
    registry.load_all().expect("load");
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let config =
        ServerConfig { listen: "127.0.0.1:0".parse().expect("addr"), max_queue: 1024, ..ServerConfig::default() };
    let server = tokio.block_on(start(registry, config)).expect("server");
    let url = format!("http://{}/v2/models/digits/infer", server.addr);

    let row: Vec<f32> = vec![0.25; 64];
    let json_body =
        serde_json::json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": row}]}).to_string();
    let header = serde_json::json!({
        "inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}],
        "parameters": {"binary_data_output": true}
    })
    .to_string();
    let mut binary_body = header.clone().into_bytes();
    binary_body.extend(row.iter().flat_map(|v| v.to_le_bytes()));

    println!(
        "in-process (fresh instance + infer): p50 {} ms, p99 {} ms",
        ms(percentile(&in_process, 50.0)),
        ms(percentile(&in_process, 99.0))
    );
    println!();
    println!("| body | concurrency | requests/s | p50 ms | p99 ms | p50 / in-process p50 |");
    println!("|---|---|---|---|---|---|");
    for (label, body, header_len) in
        [("JSON", json_body.into_bytes(), None), ("binary", binary_body, Some(header.len()))]
    {
        for concurrency in [1usize, 8, 64] {
            let (elapsed, latencies) = tokio.block_on(load(&url, &body, header_len, concurrency, REQUESTS_PER_LEVEL));
            println!(
                "| {label} | {concurrency} | {:.0} | {} | {} | {} |",
                latencies.len() as f64 / elapsed.as_secs_f64(),
                ms(percentile(&latencies, 50.0)),
                ms(percentile(&latencies, 99.0)),
                ratio(percentile(&latencies, 50.0), percentile(&in_process, 50.0)),
            );
        }
    }
    tokio.block_on(server.shutdown());
}
