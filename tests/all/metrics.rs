//! `GET /metrics` scraped after a known mix of requests and parsed by the official Python
//! client's OpenMetrics parser: every count equals what the clients sent.

use std::path::Path;

use edgeinfer_runtime::Limits;
use edgeinfer_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::*;
use crate::hostile::{INFINITE_LOOP, componentize, hostile_core, install};
use crate::http::*;
use crate::server::{TestServer, digits_request};

/// Every sample as (name, labels, value).
pub fn scrape(addr: std::net::SocketAddr) -> Vec<(String, Value, f64)> {
    let reply = get(addr, "/metrics");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/python/parse_metrics.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (pip install -r tests/python/requirements.txt)");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &reply.body).expect("feed");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the official parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let sample: Value = serde_json::from_str(line).expect("json");
            (
                sample["name"].as_str().expect("name").to_string(),
                sample["labels"].clone(),
                sample["value"].as_f64().expect("value"),
            )
        })
        .collect()
}

pub fn value(samples: &[(String, Value, f64)], name: &str, labels: Value) -> f64 {
    let wanted = labels.as_object().expect("object");
    samples.iter().filter(|(n, l, _)| n == name && wanted.iter().all(|(k, v)| &l[k] == v)).map(|(_, _, v)| *v).sum()
}

#[test]
fn metrics_count_exactly_what_clients_sent() {
    if std::env::var("EDGEINFER_SKIP_PYTHON_CLIENT").is_ok_and(|v| v == "1") && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED metrics_count_exactly_what_clients_sent: EDGEINFER_SKIP_PYTHON_CLIENT=1");
        return;
    }
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    let wasm = componentize(&hostile_core(INFINITE_LOOP, ""));
    install(&repo.path().join("slow/1"), &wasm, Limits { fuel: u64::MAX / 2, timeout_ms: 300, memory_mb: 64 });
    let config = ServerConfig { max_concurrent_inferences: 1, max_queue: 0, ..ServerConfig::default() };
    let server = TestServer::start(repo.path(), config);
    let addr = server.addr;
    for _ in 0..7 {
        assert_eq!(post_json(addr, "/v2/models/digits/infer", &digits_request(2)).status, 200);
    }
    let wrong_shape = json!({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    for _ in 0..3 {
        assert_eq!(post_json(addr, "/v2/models/digits/infer", &wrong_shape).status, 400);
    }
    let slow = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
    let running = {
        let slow = slow.clone();
        std::thread::spawn(move || post_json(addr, "/v2/models/slow/infer", &slow))
    };
    server.wait_running(1);
    assert_eq!(post_json(addr, "/v2/models/slow/infer", &slow).status, 503, "the only slot is taken");
    assert_eq!(running.join().expect("thread").status, 500);

    let samples = scrape(addr);
    let digits = |outcome: &str| {
        value(&samples, "edgeinfer_requests_total", json!({"model": "digits", "version": "1", "outcome": outcome}))
    };
    assert_eq!((digits("success"), digits("invalid_input"), digits("trap")), (7.0, 3.0, 0.0));
    let slow_outcome =
        |outcome: &str| value(&samples, "edgeinfer_requests_total", json!({"model": "slow", "outcome": outcome}));
    assert_eq!((slow_outcome("deadline_exceeded"), slow_outcome("rejected")), (1.0, 1.0));
    let one = json!({"model": "digits", "version": "1"});
    assert_eq!(value(&samples, "edgeinfer_request_duration_seconds_count", one.clone()), 10.0);
    assert_eq!(value(&samples, "edgeinfer_queue_duration_seconds_count", one.clone()), 10.0);
    assert_eq!(value(&samples, "edgeinfer_fuel_consumed_count", one.clone()), 7.0);
    assert_eq!(value(&samples, "edgeinfer_fuel_consumed_sum", one.clone()), 7.0 * digits_fuel(2, &[]) as f64);
    assert_eq!(
        value(&samples, "edgeinfer_instance_start_seconds_count", one.clone()),
        7.0,
        "timed on answered requests"
    );
    assert_eq!(value(&samples, "edgeinfer_model_version_loaded", one.clone()), 1.0);
    assert_eq!(value(&samples, "edgeinfer_inference_count_total", one.clone()), 14.0, "rows of the 7 answers");
    assert_eq!(
        value(&samples, "edgeinfer_execution_count_total", one.clone()),
        10.0,
        "calls: the 7 answers and the 3 the guest refused"
    );
    assert_eq!(value(&samples, "edgeinfer_traffic_weight_percent", one), 100.0);
    assert_eq!(value(&samples, "edgeinfer_requests_in_flight", json!({})), 0.0);
    assert_eq!(value(&samples, "edgeinfer_queue_depth", json!({})), 0.0);
    assert_eq!(
        value(&samples, "edgeinfer_version_changes_total", json!({"model": "digits", "kind": "load"})),
        0.0,
        "loaded before the server started"
    );
    assert_eq!(value(&samples, "edgeinfer_build_info", json!({"version": env!("CARGO_PKG_VERSION")})), 1.0);

    // A change after start-up is counted.
    assert_eq!(request(addr, "POST", "/v2/repository/models/digits/unload", &[], b"").status, 200);
    assert_eq!(request(addr, "POST", "/v2/repository/models/digits/load", &[], b"").status, 200);
    let samples = scrape(addr);
    assert_eq!(value(&samples, "edgeinfer_version_changes_total", json!({"model": "digits", "kind": "unload"})), 1.0);
    assert_eq!(value(&samples, "edgeinfer_version_changes_total", json!({"model": "digits", "kind": "load"})), 1.0);
}
