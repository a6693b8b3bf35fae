//! The HTTP server over real loopback sockets: every endpoint, JSON and binary tensors, the
//! repository and statistics extensions, a table of hostile requests, queueing and shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeinfer_runtime::{Limits, ModelRepository};
use edgeinfer_server::{ModelRegistry, RunningServer, ServerConfig, start};
use serde_json::{Value, json};

use crate::common::*;
use crate::hostile::{INFINITE_LOOP, componentize, hostile_core, install};
use crate::http::*;

pub struct TestServer {
    tokio: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
}

impl TestServer {
    pub fn start(repo: &Path, config: ServerConfig) -> TestServer {
        let registry = Arc::new(ModelRegistry::new(runtime(), ModelRepository::open(repo).expect("repo")));
        registry.load_all().expect("load");
        Self::with_registry(registry, ServerConfig { watch: false, ..config })
    }

    /// Serves an already loaded registry on a loopback port.
    pub fn with_registry(registry: Arc<ModelRegistry>, config: ServerConfig) -> TestServer {
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let config = ServerConfig { listen: "127.0.0.1:0".parse().expect("addr"), ..config };
        let server = tokio.block_on(start(registry, config)).expect("start");
        let (addr, admin_addr, grpc_addr) = (server.addr, server.admin_addr, server.grpc_addr);
        TestServer { tokio, server: Some(server), addr, admin_addr, grpc_addr }
    }

    pub fn fixtures() -> TestServer {
        Self::start(&fixtures().repo, ServerConfig::default())
    }

    /// The server's admission counters now.
    pub fn admission(&self) -> edgeinfer_server::AdmissionSnapshot {
        self.server.as_ref().expect("running").app().admission()
    }

    /// Waits (up to 10 s) until exactly `n` inferences are running.
    pub fn wait_running(&self, n: usize) {
        wait_until(&format!("{n} running"), Duration::from_secs(10), || self.admission().in_flight == n);
    }

    /// Waits (up to 15 s) until nothing is queued or running and no body is held.
    pub fn wait_idle(&self) -> edgeinfer_server::AdmissionSnapshot {
        let idle = |now: &edgeinfer_server::AdmissionSnapshot| {
            (now.queued, now.in_flight, now.body_bytes_reserved) == (0, 0, 0)
        };
        wait_until("an idle server", Duration::from_secs(15), || idle(&self.admission()));
        self.admission()
    }

    /// `GET /v2/admin/server`: admission, reload and rescan counters.
    pub fn server_view(&self) -> serde_json::Value {
        self.server.as_ref().expect("running").app().server_view()
    }

    pub fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            self.tokio.block_on(server.shutdown());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn digits_request(rows: usize) -> Value {
    let holdout = holdout();
    json!({
        "id": "req-7",
        "inputs": [{"name": holdout.input_name, "shape": [rows, 64], "datatype": "FP32", "data": &holdout.x[..rows]}],
    })
}

pub fn assert_healthy(addr: SocketAddr) {
    assert_eq!(get(addr, "/v2/health/live").status, 200);
    let reply = post_json(addr, "/v2/models/digits/infer", &digits_request(1));
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn health_server_and_model_metadata() {
    let server = TestServer::fixtures();
    let addr = server.addr;
    assert_eq!(get(addr, "/v2/health/live").json(), json!({"live": true}));
    assert_eq!(get(addr, "/v2/health/ready").json(), json!({"ready": true}));
    let meta = get(addr, "/v2").json();
    assert_eq!(meta["name"], "edgeinfer");
    assert!(meta["extensions"].as_array().expect("extensions").contains(&json!("binary_tensor_data")));
    for path in ["/v2/models/digits", "/v2/models/digits/versions/1"] {
        let model = get(addr, path).json();
        assert_eq!(model["name"], "digits");
        assert_eq!(model["versions"], json!(["1"]));
        assert_eq!(model["platform"], "onnx_tract");
        assert_eq!(model["inputs"], json!([{"name": "X", "datatype": "FP32", "shape": [-1, 64]}]));
        assert_eq!(model["outputs"][1], json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}));
    }
    assert_eq!(get(addr, "/v2/models/squeezenet/ready").json(), json!({"name": "squeezenet", "ready": true}));
    assert_eq!(get(addr, "/v2/models/digits/versions/1/ready").status, 200);
    assert_eq!(get(addr, "/v2/models/digits/versions/2/ready").status, 404);
}

#[test]
fn json_inference_matches_onnxruntime() {
    let server = TestServer::fixtures();
    let holdout = holdout();
    for path in ["/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"] {
        let reply = post_json(server.addr, path, &digits_request(5));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["model_name"], "digits");
        assert_eq!(body["model_version"], "1");
        assert_eq!(body["id"], "req-7");
        assert_eq!(body["parameters"]["fuel_used"], digits_fuel(5, &[]));
        assert_eq!(body["outputs"][0]["data"], json!(&holdout.ort_labels[..5]));
        let probabilities: Vec<f32> = body["outputs"][1]["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let expected: Vec<f32> = holdout.ort_probabilities[..5].iter().flatten().copied().collect();
        assert_close(&probabilities, &expected, 1e-5, 1e-4);
    }
    // Nested data and a requested subset of outputs.
    let mut request = digits_request(2);
    request["outputs"] = json!([{"name": "label"}]);
    let body = post_json(server.addr, "/v2/models/digits/infer", &request).json();
    assert_eq!(body["outputs"].as_array().expect("outputs").len(), 1);
    assert_eq!(body["outputs"][0]["name"], "label");
}

#[test]
fn binary_tensor_round_trip_matches_onnxruntime() {
    let server = TestServer::fixtures();
    let input = std::fs::read(fixture("squeezenet_input.bin")).expect("input");
    let expected = f32s(&std::fs::read(fixture("squeezenet_expected.bin")).expect("expected"));
    let header = json!({
        "inputs": [{"name": "data_0", "shape": [1, 3, 224, 224], "datatype": "FP32",
                    "parameters": {"binary_data_size": input.len()}}],
        "outputs": [{"name": "softmaxout_1", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&input);
    let reply = request(
        server.addr,
        "POST",
        "/v2/models/squeezenet/infer",
        &[
            ("Inference-Header-Content-Length", header.len().to_string()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        &body,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json_len: usize = reply.header("inference-header-content-length").expect("header").parse().expect("number");
    let head: Value = serde_json::from_slice(&reply.body[..json_len]).expect("json part");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 4000);
    assert!(head["outputs"][0].get("data").is_none());
    assert_close(&f32s(&reply.body[json_len..]), &expected, 1e-6, 1e-3);

    // JSON in, binary out for every output via the request-wide parameter.
    let mut request_body = digits_request(3);
    request_body["parameters"] = json!({"binary_data_output": true});
    let reply = post_json(server.addr, "/v2/models/digits/infer", &request_body);
    let json_len: usize = reply.header("inference-header-content-length").expect("header").parse().expect("number");
    assert_eq!(i64s(&reply.body[json_len..json_len + 24]), holdout().ort_labels[..3]);
}

#[test]
fn repository_extension_unloads_and_reloads() {
    let temp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixtures().repo.join("digits"), &temp.path().join("digits"));
    // A tampered version sits beside the good one: reported, never served.
    copy_version(&temp.path().join("digits/1"), &temp.path().join("digits/2"), 2);
    let wasm = temp.path().join("digits/2/model.wasm");
    let mut bytes = std::fs::read(&wasm).expect("read");
    bytes[4096] ^= 1;
    std::fs::write(&wasm, bytes).expect("write");

    let server = TestServer::start(temp.path(), ServerConfig::default());
    let addr = server.addr;
    let index = request(addr, "POST", "/v2/repository/index", &[], b"").json();
    assert_eq!(index[0], json!({"name": "digits", "version": "1", "state": "READY"}));
    assert_eq!(index[1]["state"], "UNAVAILABLE");
    assert!(index[1]["reason"].as_str().expect("reason").contains("integrity mismatch"), "{index}");
    assert_eq!(post_json(addr, "/v2/models/digits/versions/2/infer", &digits_request(1)).status, 404);
    assert_eq!(post_json(addr, "/v2/models/digits/infer", &digits_request(1)).json()["model_version"], "1");

    assert_eq!(request(addr, "POST", "/v2/repository/models/digits/unload", &[], b"").status, 200);
    let reply = post_json(addr, "/v2/models/digits/infer", &digits_request(1));
    assert_eq!(reply.status, 404);
    assert_eq!(request(addr, "POST", "/v2/repository/index", &[], br#"{"ready": true}"#).json(), json!([]));
    assert_eq!(request(addr, "POST", "/v2/repository/models/digits/load", &[], b"").status, 200);
    assert_healthy(addr);
    let missing = request(addr, "POST", "/v2/repository/models/nope/load", &[], b"");
    assert_eq!(missing.status, 404, "{}", missing.text());
}

#[test]
fn per_model_config_sets_the_default_version_and_limits() {
    let temp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixtures().repo.join("digits"), &temp.path().join("digits"));
    copy_version(&temp.path().join("digits/1"), &temp.path().join("digits/2"), 2);

    let server = TestServer::start(temp.path(), ServerConfig::default());
    assert_eq!(post_json(server.addr, "/v2/models/digits/infer", &digits_request(1)).json()["model_version"], "2");
    assert_eq!(get(server.addr, "/v2/models/digits").json()["versions"], json!(["1", "2"]));
    drop(server);

    std::fs::write(temp.path().join("digits/config.toml"), "default_version = 1\n[limits]\nfuel = 1000\n")
        .expect("write");
    let server = TestServer::start(temp.path(), ServerConfig::default());
    let reply = post_json(server.addr, "/v2/models/digits/infer", &digits_request(1));
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.json()["error"].as_str().expect("error").contains("fuel exhausted"), "{}", reply.text());
    drop(server);

    std::fs::write(temp.path().join("digits/config.toml"), "default_version = 1\n").expect("write");
    let server = TestServer::start(temp.path(), ServerConfig::default());
    let reply = post_json(server.addr, "/v2/models/digits/infer", &digits_request(1));
    assert_eq!(reply.json()["model_version"], "1", "{}", reply.text());
    drop(server);

    std::fs::write(temp.path().join("digits/config.toml"), "default_versoin = 1\n").expect("write");
    let server = TestServer::start(temp.path(), ServerConfig::default());
    let index = request(server.addr, "POST", "/v2/repository/index", &[], b"").json();
    let reason = index[0]["reason"].as_str().expect("reason").to_string();
    assert!(reason.contains("config.toml") && reason.contains("default_versoin"), "{reason}");
    assert_eq!(post_json(server.addr, "/v2/models/digits/infer", &digits_request(1)).status, 404);
}

#[test]
fn statistics_count_successes_and_failures() {
    let server = TestServer::fixtures();
    let addr = server.addr;
    for _ in 0..3 {
        assert_eq!(post_json(addr, "/v2/models/digits/infer", &digits_request(2)).status, 200);
    }
    assert_eq!(post_json(addr, "/v2/models/digits/infer", &json!({"inputs": []})).status, 400);
    let stats = get(addr, "/v2/models/digits/stats").json();
    let row = &stats["model_stats"][0];
    assert_eq!(row["name"], "digits");
    assert_eq!(row["version"], "1");
    assert_eq!(row["inference_count"], 6, "rows, as Triton counts them");
    assert_eq!(row["execution_count"], 4, "model calls: the three answers and the empty request the guest refused");
    assert_eq!(row["inference_stats"]["success"]["count"], 3);
    assert_eq!(row["inference_stats"]["fail"]["count"], 1);
    assert!(row["inference_stats"]["compute_infer"]["ns"].as_u64().expect("ns") > 0);
    assert_eq!(row["fuel_used"], 3 * digits_fuel(2, &[]), "fuel of the three successes, exactly");
    let all = get(addr, "/v2/models/stats").json();
    assert_eq!(all["model_stats"].as_array().expect("rows").len(), 2);
    assert_eq!(get(addr, "/v2/models/digits/versions/1/stats").json()["model_stats"][0]["version"], "1");
}

#[test]
fn malformed_and_hostile_requests_get_clear_errors() {
    let config = ServerConfig { max_body_bytes: 1 << 20, request_read_timeout_ms: 1500, ..ServerConfig::default() };
    let server = TestServer::start(&fixtures().repo, config);
    let addr = server.addr;
    let infer = "/v2/models/digits/infer";
    let tensor = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "X", "shape": shape, "datatype": datatype, "data": data}]});
    let zeros = |n: usize| json!(vec![0.0; n]);
    let binary_request = |size: usize, shape: Value, extra: &[u8]| -> Vec<u8> {
        let header = json!({"inputs": [{"name": "X", "shape": shape, "datatype": "FP32", "parameters": {"binary_data_size": size}}]}).to_string();
        let mut raw = build(
            "POST",
            infer,
            &[("Inference-Header-Content-Length", header.len().to_string())],
            &[header.as_bytes(), extra].concat(),
        );
        raw.shrink_to_fit();
        raw
    };
    let json_raw = |body: Value| build("POST", infer, &[], body.to_string().as_bytes());
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("truncated JSON", build("POST", infer, &[], b"{\"inputs\": ["), 400, "malformed inference request JSON"),
        ("inputs not a list", json_raw(json!({"inputs": 3})), 400, "malformed inference request JSON"),
        ("no inputs field", json_raw(json!({"id": "x"})), 400, "missing field `inputs`"),
        ("input not an object", json_raw(json!({"inputs": [7]})), 400, "must be an object"),
        (
            "input without name",
            json_raw(json!({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]})),
            400,
            "no string 'name'",
        ),
        (
            "wrong datatype",
            json_raw(tensor(json!([1, 64]), "FP64", zeros(64))),
            400,
            "datatype FP64 does not match the model's FP32",
        ),
        ("unknown datatype", json_raw(tensor(json!([1, 64]), "FLOAT32", zeros(64))), 400, "unknown datatype 'FLOAT32'"),
        (
            "shape/data mismatch",
            json_raw(tensor(json!([2, 64]), "FP32", zeros(64))),
            400,
            "needs 128 elements but 'data' holds 64",
        ),
        (
            "wrong shape",
            json_raw(tensor(json!([1, 63]), "FP32", zeros(63))),
            400,
            "shape [1, 63] does not match the model's [-1, 64]",
        ),
        (
            "negative shape",
            json_raw(tensor(json!([-1, 64]), "FP32", zeros(64))),
            400,
            "shape dimension -1 is not a non-negative integer",
        ),
        ("huge shape", json_raw(tensor(json!([u64::MAX, 64]), "FP32", zeros(64))), 400, "is too large"),
        (
            "non-numeric data",
            json_raw(tensor(json!([1, 2]), "FP32", json!(["a", "b"]))),
            400,
            "value \"a\" is not a valid FP32",
        ),
        (
            "no shape",
            json_raw(json!({"inputs": [{"name": "X", "datatype": "FP32", "data": [1]}]})),
            400,
            "input 'X': has no 'shape' array",
        ),
        ("missing input", json_raw(json!({"inputs": []})), 400, "invalid input 'X': missing input"),
        (
            "unknown input",
            json_raw(
                json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": zeros(64)}, {"name": "Z", "shape": [1], "datatype": "FP32", "data": [1]}]}),
            ),
            400,
            "invalid input 'Z': unknown input",
        ),
        (
            "duplicate input",
            json_raw(
                json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": zeros(64)}, {"name": "X", "shape": [1, 64], "datatype": "FP32", "data": zeros(64)}]}),
            ),
            400,
            "appears more than once",
        ),
        (
            "unknown output",
            json_raw(
                json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": zeros(64)}], "outputs": [{"name": "logits"}]}),
            ),
            400,
            "'logits': unknown output",
        ),
        (
            "FP16 as JSON",
            json_raw(tensor(json!([1, 64]), "FP16", zeros(64))),
            400,
            "FP16 data must be sent with the binary tensor data extension",
        ),
        ("unknown model", build("POST", "/v2/models/nope/infer", &[], b"{}"), 404, "unknown model 'nope'"),
        (
            "unknown version",
            build("POST", "/v2/models/digits/versions/9/infer", &[], b"{}"),
            404,
            "has no version 9 loaded",
        ),
        (
            "version not a number",
            build("GET", "/v2/models/digits/versions/latest", &[], b""),
            400,
            "version 'latest' is not a number",
        ),
        ("wrong method", build("GET", infer, &[], b""), 405, "use POST here, not GET"),
        ("unknown endpoint", build("GET", "/v3/models", &[], b""), 404, "unknown endpoint /v3/models"),
        (
            "body over the limit",
            build("POST", infer, &[], &vec![b' '; 11 << 20]),
            413,
            "exceeds the limit of 1048576 bytes",
        ),
        (
            "binary header longer than body",
            build("POST", infer, &[("Inference-Header-Content-Length", "999999".into())], b"{}"),
            400,
            "exceeds the body's 2 bytes",
        ),
        (
            "binary header not a number",
            build("POST", infer, &[("Inference-Header-Content-Length", "ten".into())], b"{}"),
            400,
            "is not a byte count",
        ),
        (
            "binary size past the end",
            binary_request(256, json!([1, 64]), &[0; 100]),
            400,
            "runs past the end of the binary part",
        ),
        (
            "binary size lies about the shape",
            binary_request(8, json!([1, 64]), &[0; 8]),
            400,
            "binary_data_size 8 does not match shape [1, 64]",
        ),
        ("binary bytes left over", binary_request(256, json!([1, 64]), &[0; 300]), 400, "add up to 256"),
        (
            "binary size and data both",
            json_raw(
                json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": zeros(64), "parameters": {"binary_data_size": 256}}]}),
            ),
            400,
            "has both 'data' and binary_data_size",
        ),
        ("bad index body", build("POST", "/v2/repository/index", &[], b"{nope"), 400, "malformed index request JSON"),
    ];
    for (name, raw, status, message) in &cases {
        let reply = send_raw(addr, raw);
        assert_eq!(reply.status, *status, "{name}: {}", reply.text());
        let error = reply.json()["error"].as_str().map(str::to_string).unwrap_or_default();
        assert!(error.contains(message), "{name}: {error:?} does not contain {message:?}");
    }

    let idle = server.wait_idle();
    assert_eq!((idle.queued, idle.in_flight, idle.body_bytes_reserved), (0, 0, 0), "{idle:?}");

    // Slow loris: a body that never completes is answered with 408 once the read timeout passes.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(
        &mut stream,
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inp",
    )
    .expect("write");
    let started = Instant::now();
    let reply = read_reply(stream);
    assert_eq!(reply.status, 408, "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_healthy(addr);
}

#[test]
fn full_queue_answers_503_with_retry_after_and_shutdown_lets_requests_finish() {
    let temp = tempfile::tempdir().expect("tempdir");
    let wasm = componentize(&hostile_core(INFINITE_LOOP, ""));
    install(&temp.path().join("spin/1"), &wasm, Limits { fuel: u64::MAX / 2, timeout_ms: 1500, memory_mb: 64 });
    let config = ServerConfig { max_concurrent_inferences: 1, max_queue: 0, ..ServerConfig::default() };
    let mut server = TestServer::start(temp.path(), config);
    let addr = server.addr;
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
    let first = {
        let body = body.clone();
        std::thread::spawn(move || post_json(addr, "/v2/models/spin/infer", &body))
    };
    server.wait_running(1);
    let busy = post_json(addr, "/v2/models/spin/infer", &body);
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(busy.json()["error"].as_str().expect("error").contains("queue is full"));

    // Shut down while the first request is still running: it gets its answer, not a reset.
    server.wait_running(1);
    server.shutdown();
    let first = first.join().expect("thread");
    assert_eq!(first.status, 500, "{}", first.text());
    assert!(first.json()["error"].as_str().expect("error").contains("deadline exceeded"), "{}", first.text());
    let late = std::net::TcpStream::connect(addr);
    assert!(late.is_err(), "the listener is closed after shutdown");
}

#[test]
fn invalid_config_is_refused_with_file_key_and_reason() {
    let temp = tempfile::tempdir().expect("tempdir");
    let path = temp.path().join("edgeinfer.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nmax_queue = 4\nmax_qeueu = 5\n").expect("write");
    let error = ServerConfig::load(&path).expect_err("must fail").to_string();
    assert!(error.contains("edgeinfer.toml") && error.contains("max_qeueu"), "{error}");
    std::fs::write(&path, "max_concurrent_inferences = 0\n").expect("write");
    let error = ServerConfig::load(&path).expect_err("must fail").to_string();
    assert!(error.contains("max_concurrent_inferences"), "{error}");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nmax_queue = 4\n[limits]\nfuel = 1000\n").expect("write");
    let config = ServerConfig::load(&path).expect("valid");
    assert_eq!((config.max_queue, config.limits.fuel), (4, Some(1000)));

    // The CLI fails before binding: the port stays free.
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nbogus = true\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
        .args(["serve", "--config", path.to_str().expect("utf8"), "--repo", fixtures().repo.to_str().expect("utf8")])
        .env("EDGEINFER_CACHE_DIR", cache_dir())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bogus") && stderr.contains("edgeinfer.toml"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}

/// Triton's own Python HTTP client (`tritonclient[http]`, installed by `.ci/run`) against
/// the server. EDGEINFER_SKIP_PYTHON_CLIENT=1 skips it where Python is missing (reported on
/// stderr); under CI (`CI` set) it never skips.
#[test]
fn triton_python_client_works_unchanged() {
    let skip = std::env::var("EDGEINFER_SKIP_PYTHON_CLIENT").is_ok_and(|v| v == "1");
    if skip {
        assert!(std::env::var_os("CI").is_none(), "EDGEINFER_SKIP_PYTHON_CLIENT must not be set in CI");
        eprintln!("SKIPPED triton_python_client_works_unchanged: EDGEINFER_SKIP_PYTHON_CLIENT=1");
        return;
    }
    let server = TestServer::fixtures();
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/python/triton_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(server.addr.to_string())
        .arg(fixture("digits_holdout.json"))
        .output()
        .expect("python3 runs (set EDGEINFER_SKIP_PYTHON_CLIENT=1 where it is missing)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("ok"), "{text}");
}
