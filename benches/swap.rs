//! Latency while a model's versions change under load, against steady state in the same
//! run: 8 keep-alive HTTP clients on the digits model while (a) nothing changes, (b) the
//! traffic split flips every 20 ms, (c) versions are unloaded, reloaded (verify, code cache,
//! warm-up) and switched to in a loop.
//!
//! `cargo bench --bench swap` prints a table.

#[path = "support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use edgeinfer_runtime::ModelRepository;
use edgeinfer_server::{ModelRegistry, ServerConfig, start};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use support::*;

const REQUESTS: usize = 4000;
const CLIENTS: usize = 8;

fn main() {
    let repo = tempfile::tempdir().expect("tempdir");
    let runtime = runtime(true);
    for version in [1, 2] {
        compile_version(&runtime, repo.path(), "digits.onnx", "digits", version);
    }
    let history = ModelRegistry::default_history_path(repo.path());
    let repository = ModelRepository::open(repo.path()).expect("repo");
    let registry = Arc::new(ModelRegistry::with_history(runtime, repository, &history).expect("registry"));
    registry.load_all().expect("load");
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        max_queue: 1024,
        watch: false,
        ..ServerConfig::default()
    };
    let server = tokio.block_on(start(registry, config)).expect("server");
    let base = format!("http://{}", server.addr);
    let infer_url = format!("{base}/v2/models/digits/infer");
    let body = json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": vec![0.25f32; 64]}]})
        .to_string()
        .into_bytes();

    tokio.block_on(async {
        let admin = Admin::new(&base);
        admin.send("PUT", "traffic", json!({"split": {"1": 100}})).await;
        let _ = load(&infer_url, &body, None, CLIENTS, REQUESTS / 4).await; // warm-up
        let (steady_time, steady) = load(&infer_url, &body, None, CLIENTS, REQUESTS).await;

        let flips = during(&admin, |admin, n| async move {
            let split = [json!({"1": 100}), json!({"2": 100}), json!({"1": 50, "2": 50})][n % 3].clone();
            admin.send("PUT", "traffic", json!({"split": split})).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        let (flip_time, flipped) = load(&infer_url, &body, None, CLIENTS, REQUESTS).await;
        let flip_count = flips.finish().await;

        admin.send("PUT", "traffic", json!({"split": {"1": 100}})).await;
        let reloads = during(&admin, |admin, n| async move {
            // Version `spare` is idle: unload it, load it again (verify, cached code, warm-up),
            // move all traffic to it. The next round does the same with the other version.
            let spare = if n % 2 == 0 { 2 } else { 1 };
            admin.send("POST", &format!("versions/{spare}/unload"), json!({})).await;
            admin.send("POST", &format!("versions/{spare}/load"), json!({})).await;
            admin.send("PUT", "traffic", json!({"split": {spare.to_string(): 100}})).await;
        });
        let (reload_time, reloaded) = load(&infer_url, &body, None, CLIENTS, REQUESTS).await;
        let reload_count = reloads.finish().await;

        println!("| phase ({CLIENTS} clients, {REQUESTS} requests) | changes | requests/s | p50 ms | p99 ms | p50 / steady | p99 / steady |");
        println!("|---|---|---|---|---|---|---|");
        for (label, changes, time, latencies) in [
            ("steady state", 0, steady_time, &steady),
            ("split flips every 20 ms", flip_count, flip_time, &flipped),
            ("unload + reload + switch, back to back", reload_count, reload_time, &reloaded),
        ] {
            println!(
                "| {label} | {changes} | {:.0} | {} | {} | {} | {} |",
                latencies.len() as f64 / time.as_secs_f64(),
                ms(percentile(latencies, 50.0)),
                ms(percentile(latencies, 99.0)),
                ratio(percentile(latencies, 50.0), percentile(&steady, 50.0)),
                ratio(percentile(latencies, 99.0), percentile(&steady, 99.0)),
            );
        }
    });
    tokio.block_on(server.shutdown());
}

/// The admin API of the digits model.
#[derive(Clone)]
struct Admin {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: String,
}

impl Admin {
    fn new(base: &str) -> Admin {
        Admin { client: Client::builder(TokioExecutor::new()).build_http(), base: base.to_string() }
    }

    async fn send(&self, method: &str, action: &str, body: serde_json::Value) {
        let url = format!("{}/v2/admin/models/digits/{action}", self.base);
        let request = hyper::Request::builder()
            .method(method)
            .uri(&url)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let response = self.client.request(request).await.expect("admin response");
        let status = response.status();
        let text = response.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&text));
    }
}

/// Changes running in a loop beside the load until `finish`.
struct Changes {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Changes {
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("changes task");
        self.count.load(Ordering::Relaxed)
    }
}

fn during<F, Fut>(admin: &Admin, step: F) -> Changes
where
    F: Fn(Admin, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (task_stop, task_count, admin) = (stop.clone(), count.clone(), admin.clone());
    let task = tokio::spawn(async move {
        while !task_stop.load(Ordering::Relaxed) {
            step(admin.clone(), task_count.load(Ordering::Relaxed)).await;
            task_count.fetch_add(1, Ordering::Relaxed);
        }
    });
    Changes { stop, count, task }
}
