//! Image-sized tensors over loopback HTTP: what the prediction log, page faults and copies
//! cost a request. One client, binary tensors both ways (as Triton's Python client sends
//! them), sequential requests; five servers in one process: log off, log on with the
//! defaults (tensors over 1 MiB logged as digests), log on with every tensor in full, every
//! tensor in full under a 1 MiB/s budget (a disk that cannot keep up), and the default log on
//! a runtime keeping only 4 MiB of each pool slot resident (the previous default).
//! Rounds are interleaved; each row gives the median of the rounds' p50s, the median of each
//! round's ratio to log-off in the same round, and per request the
//! minor page faults and CPU time of the whole process (server and client), from
//! /proc/self/stat. A second table gives each server's prediction-log counts as its status
//! page (`GET /v2/monitor`) shows them.
//!
//! Models: tests/fixtures/large_identity.onnx and large_relu.onnx (1x96x112x112 FP32, 4.8 MB
//! in and out), and SqueezeNet (600 KB in).
//!
//! `cargo bench -p edgeinfer --bench large_tensors` prints a table.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edgeinfer_oip::Tensor;
use edgeinfer_runtime::ModelRepository;
use edgeinfer_server::{ModelRegistry, MonitoringConfig, ServerConfig, start};
use support::*;

/// The allocator the `edgeinfer` binary uses (host/cli/src/main.rs), so faults are its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REQUESTS: usize = 20;
const ROUNDS: usize = 5;

/// Minor page faults and CPU time (user + system) of this process so far.
fn process_counters() -> (u64, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |field: usize| fields[field - 3].parse::<u64>().expect("a number");
    let ticks = number(14) + number(15);
    (number(10), Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

/// A binary-extension request for `input`, asking for binary outputs.
fn binary_request(input: &Tensor) -> (Vec<u8>, usize) {
    let header = serde_json::json!({
        "inputs": [{
            "name": input.name,
            "datatype": input.datatype.to_string(),
            "shape": input.shape,
            "parameters": {"binary_data_size": input.data.len()},
        }],
        "parameters": {"binary_data_output": true},
    })
    .to_string()
    .into_bytes();
    let length = header.len();
    let mut body = header;
    body.extend_from_slice(&input.data);
    (body, length)
}

struct Row {
    p50: Vec<Duration>,
    faults: u64,
    cpu: Duration,
    requests: u64,
}

fn main() {
    let runtime = runtime(true);
    let repo = tempfile::tempdir().expect("tempdir");
    for (file, name) in
        [("large_identity.onnx", "identity"), ("large_relu.onnx", "relu"), ("squeezenet.onnx", "squeezenet")]
    {
        let (model, _) = compile(&runtime, repo.path(), file, name);
        let memory = model.request_memory_bytes().unwrap_or_default();
        println!("{name}: a request reaches {:.1} MiB of linear memory", memory as f64 / (1 << 20) as f64);
    }
    println!();
    let large = || Tensor {
        name: "x".into(),
        datatype: edgeinfer_oip::Datatype::Fp32,
        shape: vec![1, 96, 112, 112],
        data: (0..96 * 112 * 112).flat_map(|i: u32| ((i % 251) as f32 - 125.0).to_le_bytes()).collect(),
    };
    let models = [("identity", large()), ("relu", large()), ("squeezenet", squeezenet_input())];

    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let logs = tempfile::tempdir().expect("tempdir");
    // The runtime's default keeps up to 64 MiB of each pool slot's memory resident between
    // instances; the last row keeps 4 MiB, the default before.
    let small_resident = {
        let cache_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target/bench-cache");
        edgeinfer_runtime::Runtime::new(edgeinfer_runtime::RuntimeConfig {
            cache_dir,
            keep_resident_bytes: 4 << 20,
            ..edgeinfer_runtime::RuntimeConfig::default()
        })
        .expect("runtime")
    };
    let serve = |repo: &Path, monitoring: MonitoringConfig, runtime: &Arc<edgeinfer_runtime::Runtime>| {
        let registry = Arc::new(ModelRegistry::new(runtime.clone(), ModelRepository::open(repo).expect("repo")));
        registry.load_all().expect("load");
        let config =
            ServerConfig { listen: "127.0.0.1:0".parse().expect("addr"), monitoring, ..ServerConfig::default() };
        tokio.block_on(start(registry, config)).expect("server")
    };
    let configs = [
        ("log off", MonitoringConfig { predictions: false, ..MonitoringConfig::default() }),
        (
            "log on (default: > 1 MiB as digest)",
            MonitoringConfig { predictions_dir: Some(logs.path().join("default")), ..MonitoringConfig::default() },
        ),
        (
            "log on, every tensor in full",
            MonitoringConfig {
                predictions_dir: Some(logs.path().join("full")),
                predictions_full_tensor_bytes: 0,
                ..MonitoringConfig::default()
            },
        ),
        (
            "log on, every tensor in full, 1 MiB/s budget (slow disk)",
            MonitoringConfig {
                predictions_dir: Some(logs.path().join("slow")),
                predictions_full_tensor_bytes: 0,
                predictions_bytes_per_second: 1 << 20,
                ..MonitoringConfig::default()
            },
        ),
        (
            "log on (default), 4 MiB kept resident (previous default)",
            MonitoringConfig { predictions_dir: Some(logs.path().join("resident")), ..MonitoringConfig::default() },
        ),
    ];
    let servers: Vec<_> = configs
        .iter()
        .enumerate()
        .map(|(i, (_, monitoring))| {
            serve(repo.path(), monitoring.clone(), if i == configs.len() - 1 { &small_resident } else { &runtime })
        })
        .collect();

    println!("| model | prediction log | p50 ms | vs log off | minor faults / request | CPU ms / request |");
    println!("|---|---|---|---|---|---|");
    for (model, input) in &models {
        let (body, header_length) = binary_request(input);
        let mut rows: Vec<Row> =
            configs.iter().map(|_| Row { p50: Vec::new(), faults: 0, cpu: Duration::ZERO, requests: 0 }).collect();
        for server in &servers {
            // Warm up: instances, code, allocator.
            let url = format!("http://{}/v2/models/{model}/infer", server.addr);
            tokio.block_on(load(&url, &body, Some(header_length), 1, 3));
        }
        for _ in 0..ROUNDS {
            for (row, server) in rows.iter_mut().zip(&servers) {
                let url = format!("http://{}/v2/models/{model}/infer", server.addr);
                let (faults_before, cpu_before) = process_counters();
                let (_, latencies) = tokio.block_on(load(&url, &body, Some(header_length), 1, REQUESTS));
                let (faults_after, cpu_after) = process_counters();
                row.p50.push(percentile(&latencies, 50.0));
                row.faults += faults_after - faults_before;
                row.cpu += cpu_after - cpu_before;
                row.requests += latencies.len() as u64;
            }
        }
        let median = |mut samples: Vec<f64>| {
            samples.sort_by(f64::total_cmp);
            samples[samples.len() / 2]
        };
        let baseline = rows[0].p50.clone();
        for ((label, _), row) in configs.iter().zip(&rows) {
            let p50 = median(row.p50.iter().map(Duration::as_secs_f64).collect());
            // Each round's p50 against log-off's in the same round, then the median: adjacent
            // measurements share the machine's state, so the ratio is steadier than p50s.
            let ratio = median(row.p50.iter().zip(&baseline).map(|(a, b)| a.as_secs_f64() / b.as_secs_f64()).collect());
            println!(
                "| {model} | {label} | {:.1} | {ratio:.2}x | {} | {:.1} |",
                p50 * 1000.0,
                row.faults / row.requests,
                row.cpu.as_secs_f64() * 1000.0 / row.requests as f64
            );
        }
    }
    println!();
    println!("| server | records written | records dropped | queued bytes |");
    println!("|---|---|---|---|");
    for ((label, _), server) in configs.iter().zip(&servers) {
        let status = tokio.block_on(get_json(&format!("http://{}/v2/monitor", server.addr)));
        let log = &status["prediction_log"];
        println!("| {label} | {} | {} | {} |", log["written"], log["dropped"], log["queued_bytes"]);
    }
}

/// A JSON document from the server.
async fn get_json(url: &str) -> serde_json::Value {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client.get(url.parse().expect("url")).await.expect("response");
    let body = response.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("JSON")
}
