//! One model on each edge platform's local runtime next to `edgeinfer serve`, in one run:
//! the packaged Cloudflare Worker under `workerd` and the browser package in headless
//! Chromium, for digits (one row, JSON), the scikit-learn pipeline (8 rows, JSON) and
//! SqueezeNet (one image, binary). Per model: the package's size (raw and gzip, what the
//! platforms' script limits count), latency p50 per platform and its ratio to `edgeinfer
//! serve`, the first request's time (compiling and instantiating the component: what
//! Workers' startup limit counts) and workerd's resident memory after the requests.
//!
//! ```sh
//! tests/setup.sh             # installs workerd into target/npm, and Chromium
//! cargo bench --bench platforms
//! ```

#![allow(dead_code)]

#[path = "../tests/support/edge_hosts.rs"]
mod edge_hosts;
#[path = "../tests/all/http.rs"]
mod http;
#[path = "../tests/support/soak_driver.rs"]
mod soak_driver;
#[path = "support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edge_hosts::{Browser, StaticServer, Workerd, package_ok};
use serde_json::{Value, json};
use soak_driver::{ServerProcess, process_usage};
use support::{ms, percentile, ratio, sample};

/// One model's request and how many timed runs it gets.
struct Model {
    name: &'static str,
    file: &'static str,
    body: Vec<u8>,
    header_length: Option<usize>,
    runs: usize,
}

impl Model {
    fn headers(&self) -> Vec<(&'static str, String)> {
        match self.header_length {
            Some(length) => vec![
                ("content-type", "application/octet-stream".into()),
                ("inference-header-content-length", length.to_string()),
            ],
            None => vec![("content-type", "application/json".into())],
        }
    }

    fn path(&self) -> String {
        format!("/v2/models/{}/infer", self.name)
    }

    /// Sends the request once to `addr`; it must succeed.
    fn send(&self, addr: SocketAddr) -> Duration {
        let started = Instant::now();
        let reply = http::request(addr, "POST", &self.path(), &self.headers(), &self.body);
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 200, "{}: {}", self.name, reply.text());
        elapsed
    }
}

fn models() -> Vec<Model> {
    let row: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    let digits = json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": row}]});
    let pipeline = std::fs::read(support::fixture("pipeline_request.json")).expect("pipeline request");
    let image = std::fs::read(support::fixture("squeezenet_input.bin")).expect("squeezenet input");
    let header = json!({"inputs": [{"name": "data_0", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                    "parameters": {"binary_data_size": image.len()}}]})
    .to_string();
    let mut squeezenet = header.clone().into_bytes();
    squeezenet.extend_from_slice(&image);
    vec![
        Model {
            name: "digits",
            file: "digits.onnx",
            body: digits.to_string().into_bytes(),
            header_length: None,
            runs: 200,
        },
        Model { name: "pipeline", file: "pipeline.onnx", body: pipeline, header_length: None, runs: 200 },
        Model {
            name: "squeezenet",
            file: "squeezenet.onnx",
            body: squeezenet,
            header_length: Some(header.len()),
            runs: 20,
        },
    ]
}

/// Bytes of the Worker's files, raw and gzip-compressed (`gzip -6`, per file, summed).
fn package_size(dir: &Path) -> (u64, u64) {
    let (mut raw, mut gzipped) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("package").flatten() {
        let path = entry.path();
        let counted = path.extension().is_some_and(|e| e == "js" || e == "wasm");
        if !counted {
            continue;
        }
        raw += entry.metadata().expect("metadata").len();
        let output = std::process::Command::new("gzip").arg("-6c").arg(&path).output().expect("gzip");
        gzipped += output.stdout.len() as u64;
    }
    (raw, gzipped)
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// Waits for `ready` to hold, checking every 5 ms, for up to `patience`.
fn wait_for(what: &str, patience: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < patience, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The browser page: per model, the first `handle()` call (fetching, compiling and
/// instantiating the component) and then `runs` timed calls; posts the figures.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<script type="module">
  const unbase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const cases = await (await fetch("./cases.json")).json();
  const report = {};
  for (const c of cases) {
    const started = performance.now();
    const module = await import(`./${c.model}/edgeinfer.js`);
    const body = unbase64(c.body);
    const call = async () => {
      const answer = await module.handle({ method: "POST", pathWithQuery: c.path, headers: c.headers, body });
      if (answer.status !== 200) throw new Error(`${c.model}: HTTP ${answer.status}`);
    };
    await call();
    const first = performance.now() - started;
    const samples = [];
    for (let i = 0; i < 3; i++) await call();
    for (let i = 0; i < c.runs; i++) {
      const t = performance.now();
      await call();
      samples.push(performance.now() - t);
    }
    samples.sort((a, b) => a - b);
    report[c.model] = { first_ms: first, p50_ms: samples[Math.floor((samples.length - 1) / 2)] };
  }
  await fetch("./results", { method: "POST", body: JSON.stringify(report) });
</script>
"#;

/// Runs the browser page over the packages under `site`; per model (first call, p50).
fn browser_figures(chromium: &Path, site: &Path, models: &[Model]) -> Value {
    let cases: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({"model": m.name, "path": m.path(), "headers": m.headers(), "body": BASE64.encode(&m.body), "runs": m.runs})
        })
        .collect();
    std::fs::write(site.join("cases.json"), Value::Array(cases).to_string()).expect("cases");
    std::fs::write(site.join("bench.html"), PAGE).expect("page");
    let files = StaticServer::start(site.to_path_buf());
    let _browser = Browser::open(chromium, &format!("http://{}/bench.html", files.addr));
    let mut report = None;
    wait_for("the browser's figures", Duration::from_secs(600), || {
        report = files.take_results();
        report.is_some()
    });
    serde_json::from_str(&report.expect("report")).expect("report JSON")
}

fn main() {
    let Some(workerd) = edge_hosts::workerd_binary() else {
        println!("platforms bench: needs workerd (tests/setup.sh installs it into target/npm); nothing measured");
        return;
    };
    let browser = edge_hosts::chromium();
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = temp.path().join("repo");
    let runtime = support::runtime(true);
    let models = models();
    // The largest linear memory a request reaches (measured at load): what the instance
    // holds inside an isolate's memory limit, whichever host runs it.
    let mut linear_memory = Vec::new();
    for model in &models {
        let (loaded, _) = support::compile_version(&runtime, &repo, model.file, model.name, 1);
        linear_memory.push(loaded.request_memory_bytes().unwrap_or(0));
    }
    drop(runtime);
    let cache = edge_hosts::repo_root().join("target/bench-cache");
    let server = ServerProcess::start(&repo, &cache);
    let site = temp.path().join("site");

    let mut rows = Vec::new();
    for (model, memory) in models.iter().zip(&linear_memory) {
        let worker_dir = temp.path().join(format!("worker-{}", model.name));
        package_ok(&repo, model.name, "cloudflare", &worker_dir);
        package_ok(&repo, model.name, "browser", &site.join(model.name));
        let (raw, gzipped) = package_size(&worker_dir);
        let serve = sample(3, model.runs, || model.send(server.addr));

        let started = Instant::now();
        let worker = Workerd::start(&workerd, &worker_dir);
        wait_for("workerd", Duration::from_secs(120), || std::net::TcpStream::connect(worker.addr).is_ok());
        model.send(worker.addr);
        let cold = started.elapsed();
        let on_workerd = sample(3, model.runs, || model.send(worker.addr));
        let rss = process_usage(worker.pid()).rss_kib;
        rows.push((model, raw, gzipped, serve, on_workerd, cold, rss, *memory));
    }
    drop(server);
    let in_browser = browser.as_deref().map(|chromium| browser_figures(chromium, &site, &models));

    println!("\nplatforms: latency per request, p50 (ratio to edgeinfer serve in the same run)\n");
    println!(
        "| model | Worker package MB (gzip) | edgeinfer serve ms | workerd ms | browser ms | workerd start to first answer ms | browser first call ms | linear memory MiB | workerd RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (model, raw, gzipped, serve, on_workerd, cold, rss, memory) in &rows {
        let serve_p50 = percentile(serve, 50.0);
        let workerd_p50 = percentile(on_workerd, 50.0);
        let (browser_p50, browser_first) = match &in_browser {
            Some(report) => {
                let p50 = Duration::from_secs_f64(report[model.name]["p50_ms"].as_f64().expect("p50") / 1e3);
                let first = report[model.name]["first_ms"].as_f64().expect("first");
                (format!("{} ({})", ms(p50), ratio(p50, serve_p50)), format!("{first:.0}"))
            }
            None => ("(no Chromium)".into(), "-".into()),
        };
        println!(
            "| {} | {} ({}) | {} | {} ({}) | {} | {:.0} | {} | {:.1} | {:.0} |",
            model.name,
            mb(*raw),
            mb(*gzipped),
            ms(serve_p50),
            ms(workerd_p50),
            ratio(workerd_p50, serve_p50),
            browser_p50,
            cold.as_secs_f64() * 1e3,
            browser_first,
            *memory as f64 / (1024.0 * 1024.0),
            *rss as f64 / 1024.0,
        );
    }
}
