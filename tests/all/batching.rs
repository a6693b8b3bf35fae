//! Dynamic batching over real loopback HTTP: many concurrent clients with distinct inputs
//! each get exactly their own rows (bit for bit the unbatched answer, with their own id), a
//! hostile member fails alone, other shapes never join a call, and bad `[batching]` configs
//! are refused at load naming the model.

use std::sync::{Arc, Barrier};

use edgeinfer_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::*;
use crate::http::*;
use crate::metrics::{scrape, value};
use crate::server::TestServer;

/// A digits repository whose `config.toml` is `config`.
fn digits_repo(config: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    std::fs::write(repo.path().join("digits/config.toml"), config).expect("config");
    repo
}

/// Client `i`'s request: 1 to 3 held-out rows starting at a row of its own, its own id.
fn client_request(i: usize) -> Value {
    let holdout = holdout();
    let rows = 1 + i % 3;
    let start = (i * 7) % (holdout.x.len() - rows);
    json!({
        "id": format!("client-{i}"),
        "inputs": [{"name": holdout.input_name, "shape": [rows, 64], "datatype": "FP32", "data": &holdout.x[start..start + rows]}],
    })
}

/// Sends every request at once from its own thread; the replies in request order.
fn concurrently(addr: std::net::SocketAddr, requests: Vec<Value>) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let threads: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                post_json(addr, "/v2/models/digits/infer", &request)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("client thread")).collect()
}

fn stats(addr: std::net::SocketAddr) -> Value {
    get(addr, "/v2/models/digits/stats").json()["model_stats"][0].clone()
}

#[test]
fn every_caller_gets_its_own_rows_bit_for_bit() {
    let requests: Vec<Value> = (0..64).map(client_request).collect();
    let plain = digits_repo("");
    let unbatched = TestServer::start(plain.path(), ServerConfig::default());
    let expected: Vec<Value> = requests
        .iter()
        .map(|request| {
            let reply = post_json(unbatched.addr, "/v2/models/digits/infer", request);
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.json()
        })
        .collect();
    assert_eq!(stats(unbatched.addr)["execution_count"], 64, "unbatched: one call per request");
    drop(unbatched);

    let repo = digits_repo("[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 20000\n");
    let server = TestServer::start(repo.path(), ServerConfig { max_queue: 256, ..ServerConfig::default() });
    let replies = concurrently(server.addr, requests.clone());
    for (i, (reply, expected)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(reply.status, 200, "client {i}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["id"], format!("client-{i}"));
        assert_eq!(body["outputs"], expected["outputs"], "client {i} got other bits than unbatched");
    }
    let total_rows: u64 = (0..64).map(|i| 1 + i as u64 % 3).sum();
    let row = stats(server.addr);
    assert_eq!(row["inference_count"], total_rows, "{row}");
    let executions = row["execution_count"].as_u64().expect("execution_count");
    assert!(executions < 64, "64 concurrent requests with a 20 ms delay ran in {executions} calls: no batching");
    let samples = scrape(server.addr);
    let one = json!({"model": "digits", "version": "1"});
    assert_eq!(value(&samples, "edgeinfer_inference_count_total", one.clone()), total_rows as f64);
    assert_eq!(value(&samples, "edgeinfer_execution_count_total", one.clone()), executions as f64);
    let fuel: u64 = replies.iter().map(|r| r.json()["parameters"]["fuel_used"].as_u64().expect("fuel")).sum();
    assert_eq!(row["fuel_used"], fuel, "the members' fuel shares add up to what the calls used");
}

#[test]
fn a_hostile_member_fails_alone() {
    // Enough fuel for a few rows per request; one client sends 30 rows, which alone exceeds
    // its budget. In a batch, the call's budget is the sum of its members', so only the
    // share check (or the rerun) can catch it.
    let budget = digits_fuel(3, &[]);
    let config = format!("[limits]\nfuel = {budget}\n[batching]\nmax_batch_size = 64\nmax_queue_delay_us = 20000\n");
    let repo = digits_repo(&config);
    let server = TestServer::start(repo.path(), ServerConfig { max_queue: 256, ..ServerConfig::default() });
    let holdout = holdout();
    let mut requests: Vec<Value> = (0..24).map(|i| client_request(i * 3)).collect(); // 1 row each
    let hostile = json!({
        "id": "hostile",
        "inputs": [{"name": holdout.input_name, "shape": [30, 64], "datatype": "FP32", "data": &holdout.x[..30]}],
    });
    requests.insert(11, hostile);
    let replies = concurrently(server.addr, requests.clone());
    for (request, reply) in requests.iter().zip(&replies) {
        if request["id"] == "hostile" {
            assert_eq!(reply.status, 500, "{}", reply.text());
            assert!(reply.text().contains("fuel exhausted"), "{}", reply.text());
            continue;
        }
        assert_eq!(reply.status, 200, "{}: {}", request["id"], reply.text());
        let expected = fixtures()
            .digits
            .infer(vec![fp32(&holdout.input_name, &rows_of(request))], &[], Default::default())
            .expect("in-process");
        let labels: Vec<i64> = reply.json()["outputs"][0]["data"]
            .as_array()
            .expect("labels")
            .iter()
            .map(|v| v.as_i64().expect("label"))
            .collect();
        assert_eq!(labels, i64s(&expected.outputs[0].data), "{}", request["id"]);
    }
    let row = stats(server.addr);
    assert_eq!(row["inference_stats"]["fail"]["count"], 1, "{row}");
    assert_eq!(row["inference_stats"]["success"]["count"], 24, "{row}");
}

/// The rows of a request built by [`client_request`].
fn rows_of(request: &Value) -> Vec<Vec<f32>> {
    let data = request["inputs"][0]["data"].as_array().expect("rows");
    data.iter()
        .map(|row| row.as_array().expect("row").iter().map(|v| v.as_f64().expect("number") as f32).collect())
        .collect()
}

#[test]
fn other_shapes_never_join_a_call() {
    let repo = digits_repo("[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 20000\n");
    let server = TestServer::start(repo.path(), ServerConfig { max_queue: 256, ..ServerConfig::default() });
    let requests: Vec<Value> = (0..24)
        .map(|i| {
            if i % 4 == 1 {
                json!({"id": format!("narrow-{i}"), "inputs": [{"name": "X", "shape": [1, 63], "datatype": "FP32", "data": vec![0.5f32; 63]}]})
            } else {
                client_request(i)
            }
        })
        .collect();
    let replies = concurrently(server.addr, requests.clone());
    for (request, reply) in requests.iter().zip(&replies) {
        let id = request["id"].as_str().expect("id");
        if id.starts_with("narrow") {
            assert_eq!(reply.status, 400, "{id}: {}", reply.text());
            assert!(reply.text().contains("shape [1, 63]"), "{id}: {}", reply.text());
        } else {
            assert_eq!(reply.status, 200, "{id}: {}", reply.text());
            assert_eq!(reply.json()["id"], id);
        }
    }
}

#[test]
fn bad_batching_configs_are_refused_at_load_naming_the_model() {
    let cases = [
        ("[batching]\nmax_batch_size = 0\n", "max_batch_size must be at least 1"),
        ("[batching]\nmax_batch = 8\n", "max_batch"),
    ];
    for (config, expected) in cases {
        let repo = digits_repo(config);
        let server = TestServer::start(repo.path(), ServerConfig::default());
        let reason = refusal(server.addr);
        assert!(reason.contains(expected), "{config}: {reason}");
        assert_eq!(post_json(server.addr, "/v2/models/digits/infer", &client_request(0)).status, 404);
    }
    // SqueezeNet's input is fixed at [1, 3, 224, 224]: it cannot be batched.
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().squeezenet.dir(), &repo.path().join("squeezenet/1"), 1);
    std::fs::write(repo.path().join("squeezenet/config.toml"), "[batching]\nmax_batch_size = 8\n").expect("config");
    let server = TestServer::start(repo.path(), ServerConfig::default());
    let reason = refusal(server.addr);
    assert!(reason.contains("model squeezenet") && reason.contains("dynamic first (batch) dimension"), "{reason}");
}

/// The reason the repository index gives for the first model's refusal.
fn refusal(addr: std::net::SocketAddr) -> String {
    let index = request(addr, "POST", "/v2/repository/index", &[], b"").json();
    index[0]["reason"].as_str().unwrap_or_else(|| panic!("no refusal in {index}")).to_string()
}

#[test]
fn a_rows_bits_do_not_depend_on_its_position_in_a_call() {
    // tract's reductions once grouped a row's elements by memory alignment: the softmax of a
    // row at an odd position of a digits batch differed in the last bits from the same row at
    // an even one (vendor/tract-linalg, "edgeinfer patch").
    let holdout = holdout();
    let model = &fixtures().digits;
    let run = |rows: &[Vec<f32>]| {
        model.infer(vec![fp32(&holdout.input_name, rows)], &[], Default::default()).expect("infer").outputs
    };
    let full = run(&holdout.x[..40]);
    for shift in 1..=4usize {
        let shifted = run(&holdout.x[shift..40]);
        for (output, whole) in shifted.iter().zip(&full) {
            let row_bytes = whole.data.len() / 40;
            assert_eq!(output.data[..], whole.data[shift * row_bytes..], "{} shifted by {shift} rows", output.name);
        }
    }
    for row in 0..40 {
        let alone = run(&holdout.x[row..row + 1]);
        for (output, whole) in alone.iter().zip(&full) {
            let row_bytes = whole.data.len() / 40;
            assert_eq!(
                output.data[..],
                whole.data[row * row_bytes..(row + 1) * row_bytes],
                "row {row} alone vs in a call"
            );
        }
    }
}

#[test]
fn clients_that_leave_while_queued_are_withdrawn_and_leak_nothing() {
    use crate::hostile::{INFINITE_LOOP, componentize, hostile_core, install};
    use std::io::Write;

    let repo = digits_repo("[batching]\nmax_batch_size = 32\nmax_queue_delay_us = 0\n");
    let wasm = componentize(&hostile_core(INFINITE_LOOP, ""));
    let limits = edgeinfer_runtime::Limits { fuel: u64::MAX / 2, timeout_ms: 400, memory_mb: 64 };
    install(&repo.path().join("slow/1"), &wasm, limits);
    let config = ServerConfig { max_concurrent_inferences: 1, max_queue: 64, ..ServerConfig::default() };
    let server = TestServer::start(repo.path(), config);
    let addr = server.addr;
    // The only slot is busy for 400 ms: batched digits requests queue behind it.
    let slow = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
    let running = std::thread::spawn(move || post_json(addr, "/v2/models/slow/infer", &slow));
    server.wait_running(1);
    let body = serde_json::to_vec(&client_request(0)).expect("json");
    let headers = [("content-type", "application/json".to_string())];
    let leaving: Vec<_> = (0..8)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.write_all(&build("POST", "/v2/models/digits/infer", &headers, &body)).expect("send");
            stream
        })
        .collect();
    wait_until("8 queued", std::time::Duration::from_secs(5), || server.admission().queued >= 8);
    drop(leaving);
    assert_eq!(running.join().expect("slow client").status, 500, "the slow request hit its deadline");
    let idle = server.wait_idle();
    assert_eq!((idle.queued, idle.in_flight, idle.body_bytes_reserved), (0, 0, 0), "{idle:?}");
    assert_eq!(idle.client_disconnected, 8, "{idle:?}");
    assert_eq!(stats(addr)["execution_count"], 0, "withdrawn requests never ran");
    let reply = post_json(addr, "/v2/models/digits/infer", &client_request(1));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(stats(addr)["inference_count"], 2, "client 1 sends 2 rows");
}
