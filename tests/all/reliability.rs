//! The server under real clients that misbehave: disconnects at every stage, hostile and
//! slow-loris bodies, overload, version changes, and faults in the state it writes. After
//! each storm nothing is left queued or running and normal service resumes at once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgeinfer_runtime::{Limits, ModelRepository};
use edgeinfer_server::{ModelRegistry, ServerConfig};
use serde_json::json;

use crate::common::*;
use crate::hostile::{INFINITE_LOOP, componentize, hostile_core, install};
use crate::http::*;
use crate::server::{TestServer, assert_healthy, digits_request};

/// Each request to this model spins until its 40 ms deadline: it keeps the slots busy so
/// that requests queue, and then answers 500 (deadline exceeded).
const SLOW_TIMEOUT_MS: u64 = 40;

/// A repository with digits versions 1 and 2 and the slow model.
fn storm_repo() -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &temp.path().join("digits/1"), 1);
    copy_version(fixtures().digits.dir(), &temp.path().join("digits/2"), 2);
    let wasm = componentize(&hostile_core(INFINITE_LOOP, ""));
    let limits = Limits { fuel: u64::MAX / 2, timeout_ms: SLOW_TIMEOUT_MS, memory_mb: 64 };
    install(&temp.path().join("slow/1"), &wasm, limits);
    temp
}

fn slow_body() -> Vec<u8> {
    json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}).to_string().into_bytes()
}

fn digits_body() -> Vec<u8> {
    digits_request(1).to_string().into_bytes()
}

/// Writes `raw` and closes the connection without reading a byte.
fn send_and_vanish(addr: SocketAddr, raw: &[u8], linger: Duration) {
    let Ok(mut stream) = TcpStream::connect(addr) else { return };
    let _ = stream.write_all(raw);
    std::thread::sleep(linger);
}

/// What one misbehaving client does.
fn storm_client(addr: SocketAddr, rounds: usize, unexpected: &AtomicU64) {
    let infer_digits = "/v2/models/digits/infer";
    let infer_slow = "/v2/models/slow/infer";
    let check = |what: &str, reply: &Reply, allowed: &[u16]| {
        if !allowed.contains(&reply.status) {
            eprintln!("{what}: unexpected {} {}", reply.status, reply.text());
            unexpected.fetch_add(1, Ordering::Relaxed);
        }
    };
    for _ in 0..rounds {
        match fastrand::u8(0..7) {
            0 => check("digits", &request(addr, "POST", infer_digits, &[], &digits_body()), &[200, 503]),
            1 => check("slow", &request(addr, "POST", infer_slow, &[], &slow_body()), &[500, 503]),
            2 => {
                // Disconnect while sending the body.
                let body = slow_body();
                let raw = build("POST", infer_slow, &[], &body);
                send_and_vanish(addr, &raw[..raw.len() - body.len() / 2], Duration::ZERO);
            }
            3 => {
                // Disconnect while queued (or running).
                let linger = Duration::from_millis(fastrand::u64(0..60));
                send_and_vanish(addr, &build("POST", infer_slow, &[], &slow_body()), linger);
            }
            4 => {
                // Disconnect while reading the response.
                let Ok(mut stream) = TcpStream::connect(addr) else { continue };
                let _ = stream.write_all(&build("POST", infer_digits, &[], &digits_body()));
                let mut first = [0u8; 5];
                let _ = stream.read(&mut first);
            }
            5 => {
                check("hostile", &request(addr, "POST", infer_digits, &[], b"{\"inputs\": [{\"name\": 7"), &[400, 503])
            }
            _ => {
                // Slow loris: half a body, then silence until the server gives up (408).
                let Ok(mut stream) = TcpStream::connect(addr) else { continue };
                let _ = stream.write_all(
                    b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"inp",
                );
                let reply = read_reply(stream);
                check("slow loris", &reply, &[408, 503]);
            }
        }
    }
}

/// The reproduction of the report: 64 connections whose clients disconnect at random points,
/// mixed with normal, hostile, slow-loris clients and version changes. Before the fix the
/// queue count leaked on every disconnect while queued and the server answered 503 forever.
#[test]
fn disconnecting_clients_leave_no_trace() {
    let repo = storm_repo();
    let config = ServerConfig {
        max_concurrent_inferences: 2,
        max_queue: 16,
        request_read_timeout_ms: 300,
        ..ServerConfig::default()
    };
    let server = TestServer::start(repo.path(), config);
    let addr = server.addr;
    let unexpected = AtomicU64::new(0);
    let storming = AtomicBool::new(true);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Version changes throughout the storm.
            let mut flip = false;
            while storming.load(Ordering::Relaxed) {
                let split = if flip { json!({"1": 50, "2": 50}) } else { json!({"2": 100}) };
                flip = !flip;
                let reply = request(
                    addr,
                    "PUT",
                    "/v2/admin/models/digits/traffic",
                    &[],
                    json!({"split": split}).to_string().as_bytes(),
                );
                assert_eq!(reply.status, 200, "{}", reply.text());
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let clients: Vec<_> = (0..64).map(|_| scope.spawn(|| storm_client(addr, 12, &unexpected))).collect();
        for client in clients {
            client.join().expect("client");
        }
        storming.store(false, Ordering::Relaxed);
    });
    assert_eq!(unexpected.load(Ordering::Relaxed), 0, "answers outside the allowed statuses (see stderr)");

    let idle = server.wait_idle();
    assert_eq!((idle.queued, idle.in_flight, idle.body_bytes_reserved), (0, 0, 0), "{idle:?}");
    assert!(idle.client_disconnected > 0, "disconnects were counted: {idle:?}");

    // A clean run at 8 keep-alive connections: every answer is a 200.
    let failures = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let mut connection = KeepAlive::connect(addr);
                for _ in 0..50 {
                    let reply = connection.post_json("/v2/models/digits/infer", &digits_body());
                    if reply.status != 200 {
                        eprintln!("clean run: {} {}", reply.status, reply.text());
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(failures.load(Ordering::Relaxed), 0, "non-2xx answers in the clean run");
    let after = server.wait_idle();
    assert_eq!((after.queued, after.in_flight), (0, 0));
}

/// 256 connections at once on 2 slots and a queue of 64: the excess is shed at once with
/// 503 + Retry-After (never a client timeout), health checks answer throughout, and normal
/// service resumes as soon as the load is gone.
#[test]
fn overload_is_shed_fast_and_service_resumes() {
    let repo = storm_repo();
    let config = ServerConfig { max_concurrent_inferences: 2, max_queue: 64, ..ServerConfig::default() };
    let server = TestServer::start(repo.path(), config);
    let addr = server.addr;
    let shed = AtomicU64::new(0);
    let slowest_shed_ms = AtomicU64::new(0);
    let health_ms = AtomicU64::new(0);
    let start = std::sync::Barrier::new(257);
    std::thread::scope(|scope| {
        for _ in 0..256 {
            scope.spawn(|| {
                start.wait();
                let sent = Instant::now();
                let reply = request(addr, "POST", "/v2/models/slow/infer", &[], &slow_body());
                match reply.status {
                    503 => {
                        assert_eq!(reply.header("retry-after"), Some("1"));
                        assert!(reply.text().contains("server busy"), "{}", reply.text());
                        shed.fetch_add(1, Ordering::Relaxed);
                        slowest_shed_ms.fetch_max(sent.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    500 => assert!(reply.text().contains("deadline exceeded"), "{}", reply.text()),
                    other => panic!("unexpected {other}: {}", reply.text()),
                }
            });
        }
        start.wait();
        std::thread::sleep(Duration::from_millis(100));
        let asked = Instant::now();
        assert_eq!(get(addr, "/v2/health/ready").status, 200);
        health_ms.store(asked.elapsed().as_millis() as u64, Ordering::Relaxed);
    });
    let shed = shed.load(Ordering::Relaxed);
    // At most 2 running + 64 queued are admitted at once, and the queue drains at only
    // 2 / 40 ms while the 256 clients connect: most of them must have been shed.
    assert!(shed >= 128, "only {shed} of 256 shed");
    let slowest = slowest_shed_ms.load(Ordering::Relaxed);
    assert!(slowest < 2_000, "a shed request waited {slowest} ms");
    let health = health_ms.load(Ordering::Relaxed);
    assert!(health < 2_000, "a health check under overload took {health} ms");
    let idle = server.wait_idle();
    assert_eq!((idle.queued, idle.in_flight), (0, 0), "{idle:?}");
    assert_eq!(idle.rejected, shed, "every 503 is counted once");
    assert_eq!(idle.client_disconnected, 0, "every client waited for its answer");
    assert_healthy(addr);
}

/// Connections beyond `max_connections` get a 503 at once and are closed; the cap comes back
/// as soon as connections end.
#[test]
fn connections_over_the_cap_are_refused_and_the_cap_comes_back() {
    let config = ServerConfig { max_connections: 4, ..ServerConfig::default() };
    let server = TestServer::start(&fixtures().repo, config);
    let addr = server.addr;
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    wait_until("4 open connections", Duration::from_secs(5), || server.admission().connections >= 4);
    let refused = get(addr, "/v2/health/live");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("too many open connections (limit 4)"), "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(held);
    wait_until("the connections closed", Duration::from_secs(5), || server.admission().connections == 0);
    assert_healthy(addr);
}

/// Bodies held in memory at once are bounded by the body budget, not by connections.
#[test]
fn the_body_budget_bounds_bodies_in_memory() {
    let config = ServerConfig {
        max_body_bytes: 64 << 10,
        body_budget_bytes: 128 << 10,
        request_read_timeout_ms: 3_000,
        ..ServerConfig::default()
    };
    let server = TestServer::start(&fixtures().repo, config);
    let addr = server.addr;
    // Two stalled uploads of 64 KiB each take the whole budget...
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let head = "POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{";
            stream.write_all(head.as_bytes()).expect("send");
            stream
        })
        .collect();
    wait_until("two bodies held", Duration::from_secs(5), || server.admission().body_bytes_reserved >= 128 << 10);
    assert_eq!(server.admission().body_bytes_reserved, 128 << 10);
    // ...so a third body is refused with 503, while bodiless requests still work.
    let refused = post_json(addr, "/v2/models/digits/infer", &digits_request(1));
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("request bodies in memory"), "{}", refused.text());
    assert_eq!(get(addr, "/v2/health/live").status, 200);
    drop(stalled);
    let idle = server.wait_idle();
    assert_eq!(idle.body_bytes_reserved, 0, "{idle:?}");
    assert_healthy(addr);
}

/// The history log turns unwritable (here: disk full) mid-run: traffic changes are refused
/// with a message naming the log, the deployment stays as it was, and serving goes on.
#[test]
fn an_unwritable_history_refuses_changes_and_keeps_serving() {
    let repo = storm_repo();
    let state = tempfile::tempdir().expect("tempdir");
    let real = state.path().join("history.jsonl");
    let link = state.path().join("history-link.jsonl");
    std::fs::write(&real, b"").expect("create");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let registry =
        ModelRegistry::with_history(runtime(), ModelRepository::open(repo.path()).expect("repo"), &link).expect("log");
    let registry = Arc::new(registry);
    registry.load_all().expect("load");
    let server = TestServer::with_registry(registry, ServerConfig { watch: false, ..ServerConfig::default() });
    let addr = server.addr;
    let traffic = "/v2/admin/models/digits/traffic";
    let set =
        |split: serde_json::Value| request(addr, "PUT", traffic, &[], json!({"split": split}).to_string().as_bytes());

    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink("/dev/full", &link).expect("symlink to /dev/full");
    let refused = set(json!({"1": 100}));
    assert_eq!(refused.status, 500, "{}", refused.text());
    let message = refused.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("history log") && message.contains("No space left"), "{message}");
    assert_eq!(get(addr, traffic).json()["split"], json!({"2": 100}), "the deployment is unchanged");
    assert_healthy(addr);

    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(&real, &link).expect("symlink back");
    assert_eq!(set(json!({"1": 100})).status, 200);
    assert_eq!(get(addr, traffic).json()["split"], json!({"1": 100}));
    let log = std::fs::read_to_string(&real).expect("log");
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "no torn line: {log}");
}

/// The watched repository is removed (serving goes on from memory) and recreated with a new
/// version, which the watcher picks up; a model config replaced by garbage keeps the last good
/// state and reports the file.
#[test]
fn a_removed_and_recreated_repository_and_a_garbage_config_are_survived() {
    let repo = storm_repo();
    let root = repo.path().to_path_buf();
    let registry = Arc::new(ModelRegistry::new(runtime(), ModelRepository::open(&root).expect("repo")));
    registry.load_all().expect("load");
    let server = TestServer::with_registry(registry, ServerConfig { watch: true, ..ServerConfig::default() });
    let addr = server.addr;
    let version_of = || post_json(addr, "/v2/models/digits/infer", &digits_request(1)).json()["model_version"].clone();
    assert_eq!(version_of(), "2");

    let failed_rescans = || server.server_view()["repository_rescans"]["failed"].as_u64().expect("failed rescans");
    let failed_before = failed_rescans();
    std::fs::remove_dir_all(&root).expect("remove the repository");
    wait_until("a rescan that finds the repository gone", Duration::from_secs(15), || failed_rescans() > failed_before);
    assert_eq!(version_of(), "2", "still served from memory");

    std::fs::create_dir_all(root.join("digits")).expect("recreate");
    let staging = tempfile::tempdir().expect("staging");
    copy_version(fixtures().digits.dir(), &staging.path().join("3"), 3);
    std::fs::rename(staging.path().join("3"), root.join("digits/3")).expect("move in");
    wait_until("version 3 loaded after the repository came back", Duration::from_secs(15), || version_of() == "3");

    std::fs::write(root.join("digits/config.toml"), "default_version = [garbage").expect("garbage");
    let reply = request(addr, "POST", "/v2/repository/models/digits/load", &[], b"");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("config.toml"), "{}", reply.text());
    assert_eq!(version_of(), "3", "the last good state keeps serving");
    assert_healthy(addr);
}
