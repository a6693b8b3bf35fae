//! What monitoring costs: digits over loopback HTTP (8 keep-alive clients) with the
//! prediction log (sample rate 1.0), the feedback index and drift against a reference on,
//! next to the same server with them off and to one whose log is sealed with a data key
//! (AES-256-GCM), interleaved rounds in one process. Prometheus metrics and the time series
//! are always on, in all. Then replay speed over the plain and the sealed logs just written.
//!
//! `cargo bench --bench monitoring` prints a table.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use edgeinfer_monitor::replay::{ReplayFilter, replay};
use edgeinfer_runtime::{Manifest, ModelRepository};
use edgeinfer_server::{ModelRegistry, MonitoringConfig, ServerConfig, start};
use support::*;

const REQUESTS: usize = 4000;
const ROUNDS: usize = 3;
const CLIENTS: usize = 8;

fn copy_version(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

fn main() {
    let runtime = runtime(true);
    let plain = tempfile::tempdir().expect("tempdir");
    let (model, _) = compile(&runtime, plain.path(), "digits.onnx", "digits");
    let watched = tempfile::tempdir().expect("tempdir");
    let dir = watched.path().join("digits/1");
    copy_version(model.dir(), &dir);
    let manifest_path = dir.join("manifest.toml");
    let mut manifest = Manifest::load(&manifest_path).expect("manifest");
    edgeinfer_runtime::reference::attach_reference(
        &dir,
        &mut manifest,
        &edgeinfer_monitor::samples::SampleFile(fixture("digits_reference.csv")),
    )
    .expect("reference");
    manifest.save(&manifest_path).expect("save");
    let log_dir = tempfile::tempdir().expect("tempdir");
    let sealed_dir = tempfile::tempdir().expect("tempdir");
    let key_dir = tempfile::tempdir().expect("tempdir");
    let key_file = key_dir.path().join("data.key");
    edgeinfer_monitor::keys::create_key_file(&key_file).expect("data key");

    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let serve = |repo: &Path, monitoring: MonitoringConfig, data_key_file: Option<&Path>| {
        let registry = Arc::new(ModelRegistry::new(runtime.clone(), ModelRepository::open(repo).expect("repo")));
        registry.load_all().expect("load");
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            max_queue: 1024,
            monitoring,
            data_key_file: data_key_file.map(Path::to_path_buf),
            ..ServerConfig::default()
        };
        tokio.block_on(start(registry, config)).expect("server")
    };
    let off = serve(plain.path(), MonitoringConfig { predictions: false, ..MonitoringConfig::default() }, None);
    let logging_to =
        |dir: &Path| MonitoringConfig { predictions_dir: Some(dir.to_path_buf()), ..MonitoringConfig::default() };
    let on = serve(watched.path(), logging_to(log_dir.path()), None);
    let sealed = serve(watched.path(), logging_to(sealed_dir.path()), Some(&key_file));
    let row: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    let body = serde_json::json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": row}]})
        .to_string()
        .into_bytes();

    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (index, server) in [&off, &on, &sealed].into_iter().enumerate() {
            let url = format!("http://{}/v2/models/digits/infer", server.addr);
            let (elapsed, latencies) = tokio.block_on(load(&url, &body, None, CLIENTS, REQUESTS));
            rates[index].push(latencies.len() as f64 / elapsed.as_secs_f64());
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (off_rate, on_rate, sealed_rate) = (median(&mut rates[0]), median(&mut rates[1]), median(&mut rates[2]));
    println!("| monitoring | requests/s (median of {ROUNDS} rounds, {CLIENTS} clients) | vs off |");
    println!("|---|---|---|");
    println!("| off (metrics only) | {off_rate:.0} | 1.00x |");
    println!("| prediction log 1.0 + feedback index + drift | {on_rate:.0} | {:.3}x |", on_rate / off_rate);
    println!(
        "| the same, log sealed (AES-256-GCM) | {sealed_rate:.0} | {:.3}x ({:.3}x of the plain log) |",
        sealed_rate / off_rate,
        sealed_rate / on_rate
    );
    tokio.block_on(sealed.shutdown());
    tokio.block_on(on.shutdown());
    tokio.block_on(off.shutdown());

    std::thread::sleep(std::time::Duration::from_millis(300));
    let keys = edgeinfer_monitor::keys::Keyring::load(&key_file).expect("keys");
    let on_disk = |dir: &Path, keys| edgeinfer_monitor::predictions::read_log(dir, keys).expect("log").records.len();
    let sent = ROUNDS * REQUESTS;
    println!();
    println!(
        "records on disk of {sent} sent: plain log {}, sealed log {} (the writer yields to requests: \
         records it cannot keep up with are dropped and counted, never waited for)",
        on_disk(log_dir.path(), None),
        on_disk(sealed_dir.path(), Some(&keys))
    );
    for (name, dir, keys) in [("plain", log_dir.path(), None), ("sealed", sealed_dir.path(), Some(&keys))] {
        let started = Instant::now();
        let report = replay(&runtime, watched.path(), dir, &ReplayFilter::default(), keys).expect("replay");
        let elapsed = started.elapsed();
        assert_eq!(report.identical, report.replayed, "every replay bit-identical");
        assert!(report.missing.is_empty() && report.unreadable.is_empty());
        println!(
            "replay ({name} log): {} predictions in {:.2} s = {:.0} predictions/s on one thread, all bit-identical",
            report.replayed,
            elapsed.as_secs_f64(),
            report.replayed as f64 / elapsed.as_secs_f64()
        );
    }
    let mut data = vec![7u8; 64 << 20];
    let started = Instant::now();
    keys.seal(b"bench", &mut data).expect("seal");
    println!("sealing 64 MiB: {:.2} GB/s on one thread", (64 << 20) as f64 / started.elapsed().as_secs_f64() / 1e9);
}
