//! A fleet on this machine: a real OCI registry (the CNCF distribution server, Debian's
//! `docker-registry`), three `edgeinfer serve` replicas following it, and nginx in front
//! (`proxy_next_upstream` on errors and 503), all on loopback, under steady load:
//!
//! - a pushed version 2 is served by every replica within the poll interval plus load time,
//!   with zero failed requests through the balancer;
//! - a tag re-pointed to another artifact of version 2, and a version 3 signed by a key the
//!   fleet does not trust, are refused on every replica while version 2 keeps serving;
//! - with the registry stopped, replicas keep serving and report it unreachable;
//! - a replica restarted (registry still down) comes back on the same digests and split from
//!   its local repository and history.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::http::{get, post_json};
use crate::server::digits_request;
use crate::soak::soak_driver::ServerProcess;

const POLL_MS: u64 = 500;
const REPLICAS: usize = 3;

/// A program `tests/setup.sh` installs, looked for on PATH and in /usr/sbin; `None` (skipped,
/// saying so) outside CI.
fn installed(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found =
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin")]).map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        let why = format!("needs {name} (tests/setup.sh installs it)");
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED fleet: {why}");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A child process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `docker-registry serve` on a loopback port, storing under `dir`; ready when `/v2/` answers.
fn start_registry(program: &Path, dir: &Path, port: u16) -> Daemon {
    let config = dir.join("registry.yml");
    let text = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nlog:\n  level: warn\n",
        dir.join("data").display()
    );
    std::fs::write(&config, text).expect("registry config");
    let child = Command::new(program)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("the registry to answer /v2/", Duration::from_secs(30), || {
        std::net::TcpStream::connect(addr).is_ok() && get(addr, "/v2/").status == 200
    });
    Daemon(child)
}

/// nginx on `port` balancing over `replicas`, retrying the next one on errors and 503.
fn start_nginx(program: &Path, dir: &Path, port: u16, replicas: &[u16]) -> Daemon {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let servers: String =
        replicas.iter().map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n")).collect();
    let d = dir.display();
    let config = format!(
        "{user}worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream replicas {{\n{servers}    keepalive 16;\n  }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://replicas;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n      proxy_next_upstream_tries 3;\n    }}\n  }}\n}}\n",
        user = if root { "user root;\n" } else { "" },
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config).expect("nginx config");
    let child = Command::new(program)
        .arg("-c")
        .arg(&file)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until("nginx to accept", Duration::from_secs(30), || std::net::TcpStream::connect(addr).is_ok());
    Daemon(child)
}

/// Steady load through the balancer: every answer's status and version counted.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    served_v2: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Load {
        let (stop, sent, failed, served_v2) = Default::default();
        let mut load = Load { stop, sent, failed, served_v2, threads: Vec::new() };
        let body = digits_request(1);
        for _ in 0..clients {
            let (stop, sent, failed, v2) =
                (load.stop.clone(), load.sent.clone(), load.failed.clone(), load.served_v2.clone());
            let body = body.clone();
            load.threads.push(std::thread::spawn(move || {
                let mut failures = Vec::new();
                // Bounded: at most 200k requests per client, whatever happens.
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let reply = std::panic::catch_unwind(|| post_json(addr, "/v2/models/digits/infer", &body));
                    sent.fetch_add(1, Ordering::Relaxed);
                    match reply {
                        Ok(reply) if reply.status == 200 => {
                            let answer: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
                            if answer["model_version"] == "2" {
                                v2.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(reply) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.push(format!("{} {}", reply.status, reply.text()));
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.push("no answer".into());
                        }
                    }
                }
                failures
            }));
        }
        load
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.threads.into_iter().flat_map(|t| t.join().expect("load thread")).collect();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// A temporary directory whose named subdirectories are made on first use, with a trusted and
/// an attacker's key pair (`edgeinfer keygen`) in `keys/`.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn with_keys() -> Scratch {
        let scratch = Scratch(tempfile::tempdir().expect("tempdir"));
        let keys = scratch.at("keys");
        for name in ["trusted", "attacker"] {
            assert!(edgeinfer(&["keygen", "--out", keys.join(name).to_str().expect("path")]).status.success());
        }
        scratch
    }

    /// `<dir>/<name>`, created.
    fn at(&self, name: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::create_dir_all(&path).expect("dir");
        path
    }
}

/// `edgeinfer compile` of `onnx` as digits `version` into `repo`, signed with `key`.
fn publish(repo: &Path, onnx: &str, version: u64, key: &Path) {
    let output = edgeinfer(&[
        "compile",
        fixture(onnx).to_str().expect("path"),
        "--name",
        "digits",
        "--version",
        &version.to_string(),
        "--repo",
        repo.to_str().expect("path"),
        "--sign",
        key.to_str().expect("path"),
    ]);
    assert!(output.status.success(), "compile: {}", stderr(&output));
}

fn push(repo: &Path, version: u64, reference: &str) -> String {
    let output = edgeinfer(&[
        "push",
        "--repo",
        repo.to_str().expect("path"),
        "--model",
        "digits",
        "--version",
        &version.to_string(),
        reference,
    ]);
    assert!(output.status.success(), "push {reference}: {}", stderr(&output));
    let digest = stdout(&output).lines().last().unwrap_or_default().to_string();
    assert!(digest.starts_with("sha256:"), "push printed {}", stdout(&output));
    digest
}

/// The version a replica answers an inference with.
fn served_version(addr: SocketAddr) -> Option<String> {
    let reply = std::panic::catch_unwind(|| post_json(addr, "/v2/models/digits/infer", &digits_request(1))).ok()?;
    (reply.status == 200).then(|| reply.json()["model_version"].as_str().unwrap_or_default().to_string())
}

fn follow_view(addr: SocketAddr) -> Value {
    get(addr, "/v2/admin/server").json()["follow"][0].clone()
}

fn split(addr: SocketAddr) -> Value {
    get(addr, "/v2/admin/models/digits/traffic").json()["split"].clone()
}

fn component_sha256(repo: &Path, version: u64) -> String {
    let bytes = std::fs::read(repo.join("digits").join(version.to_string()).join("model.wasm")).expect("component");
    edgeinfer_runtime::sha256_hex(&bytes)
}

#[test]
fn a_fleet_follows_a_registry_with_zero_failed_requests() {
    let (Some(registry_program), Some(nginx_program)) = (installed("docker-registry"), installed("nginx")) else {
        return;
    };
    let scratch = Scratch::with_keys();
    let at = |name: &str| scratch.at(name);
    let (publisher, forged, keys) = (at("publisher"), at("forged"), at("keys"));
    let (trusted, attacker) = (keys.join("trusted.key"), keys.join("attacker.key"));
    publish(&publisher, "digits.onnx", 1, &trusted);
    publish(&publisher, "digits.onnx", 2, &trusted);
    // The forgeries: another model published as version 2 (signed by the trusted key: only
    // "a version is never replaced" stops it), and a version 3 signed by an untrusted key.
    publish(&forged, "digits_random.onnx", 2, &trusted);
    publish(&forged, "digits_random.onnx", 3, &attacker);

    let registry_port = free_port();
    let registry_dir = at("registry");
    let mut registry = Some(start_registry(&registry_program, &registry_dir, registry_port));
    let repository = format!("127.0.0.1:{registry_port}/models/digits");
    push(&publisher, 1, &repository);
    let firing = |addr: SocketAddr| {
        let metrics = get(addr, "/metrics").text();
        metrics
            .lines()
            .any(|l| l.starts_with("edgeinfer_alerts_firing{alertname=\"registry-down\"") && l.ends_with(" 1"))
    };

    let settings = format!(
        "trusted_keys = [\"{}\"]\nfollow = [\"{repository}\"]\nfollow_interval_ms = {POLL_MS}\n\
         [[alerts]]\nname = \"registry-down\"\ncondition = \"registry_unreachable\"\nthreshold = 0\n",
        keys.join("trusted.pub").display()
    );
    // EDGEINFER_FLEET_COLD_CACHE=1: every replica starts with an empty code cache of its own,
    // as a new pod does (the figures on the Kubernetes page); otherwise the tests' warm cache.
    let cold = std::env::var_os("EDGEINFER_FLEET_COLD_CACHE").is_some_and(|v| v == "1");
    let caches: Vec<PathBuf> =
        (0..REPLICAS).map(|i| if cold { at(&format!("cache{i}")) } else { cache_dir() }).collect();
    let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
    let repos: Vec<PathBuf> = (0..REPLICAS).map(|i| at(&format!("replica{i}"))).collect();
    let start_replica = |i: usize| {
        let listen = format!("127.0.0.1:{}", ports[i]);
        let args = ["--listen", listen.as_str()];
        let program = Command::new(env!("CARGO_BIN_EXE_edgeinfer"));
        ServerProcess::start_configured(program, &repos[i], &caches[i], &settings, &args, Duration::from_secs(120))
    };
    let started = Instant::now();
    let mut replicas: Vec<ServerProcess> = (0..REPLICAS).map(start_replica).collect();
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    for &addr in &addrs {
        wait_until("every replica to serve version 1", Duration::from_secs(600), || {
            served_version(addr).as_deref() == Some("1")
        });
    }
    eprintln!(
        "fleet: {REPLICAS} replicas started empty serve version 1 in {} ms ({} code cache)",
        started.elapsed().as_millis(),
        if cold { "cold" } else { "warm" }
    );

    let balancer_port = free_port();
    let _nginx = start_nginx(&nginx_program, &at("nginx"), balancer_port, &ports);
    let balancer = SocketAddr::from(([127, 0, 0, 1], balancer_port));
    let load = Load::start(balancer, 2);
    wait_until("load through the balancer", Duration::from_secs(30), || load.sent() >= 50);

    // Version 2: pushed once, served everywhere.
    let pushed = Instant::now();
    let sent_before = load.sent();
    push(&publisher, 2, &repository);
    for &addr in &addrs {
        wait_until("every replica to serve version 2", Duration::from_secs(120), || {
            served_version(addr).as_deref() == Some("2")
        });
    }
    let converged = pushed.elapsed();
    let during_rollout = load.sent() - sent_before;
    eprintln!(
        "fleet: push to all {REPLICAS} replicas serving version 2 in {} ms (poll every {POLL_MS} ms), {during_rollout} requests meanwhile",
        converged.as_millis()
    );
    let digest = component_sha256(&publisher, 2);
    for repo in &repos {
        assert_eq!(component_sha256(repo, 2), digest, "every replica holds the pushed component");
    }
    assert!(addrs.iter().all(|&a| !firing(a)), "registry-down fired while the registry was up");
    let splits: Vec<Value> = addrs.iter().map(|&a| split(a)).collect();
    assert!(splits.iter().all(|s| s == &splits[0] && s["2"] == 100), "one split everywhere: {splits:?}");

    // The forgeries: refused on every replica, version 2 keeps serving.
    push(&forged, 2, &repository);
    push(&forged, 3, &repository);
    for &addr in &addrs {
        wait_until("every replica to refuse both forgeries", Duration::from_secs(60), || {
            follow_view(addr)["refused"].as_u64().unwrap_or_default() >= 2
        });
        assert_eq!(served_version(addr).as_deref(), Some("2"));
    }
    for repo in &repos {
        assert!(!repo.join("digits/3").exists(), "the untrusted version 3 was never installed");
        assert_eq!(component_sha256(repo, 2), digest, "version 2 was not replaced");
    }

    // The registry goes away: replicas keep serving and say so.
    drop(registry.take());
    for &addr in &addrs {
        wait_until("every replica to see the registry down", Duration::from_secs(60), || {
            follow_view(addr)["reachable"] == false
        });
    }
    let metrics = get(addrs[0], "/metrics").text();
    assert!(metrics.contains(&format!("edgeinfer_registry_reachable{{repository=\"{repository}\"}} 0")), "{metrics}");
    for &addr in &addrs {
        wait_until("the registry-down alert to fire on every replica", Duration::from_secs(60), || firing(addr));
    }
    let sent = load.sent();
    wait_until("load with the registry down", Duration::from_secs(60), || load.sent() >= sent + 100);

    // One replica restarts with the registry still down: same digests, same split.
    replicas.remove(0);
    let restarted = start_replica(0);
    replicas.insert(0, restarted);
    wait_until("the restarted replica to serve version 2", Duration::from_secs(120), || {
        served_version(addrs[0]).as_deref() == Some("2")
    });
    assert_eq!(split(addrs[0]), splits[0], "the restarted replica's split, from its history");
    assert_eq!(component_sha256(&repos[0], 2), digest);
    let sent = load.sent();
    wait_until("load after the restart", Duration::from_secs(60), || load.sent() >= sent + 100);

    let served_v2 = load.served_v2.load(Ordering::Relaxed);
    let (total, failures) = load.finish();
    eprintln!("fleet: {total} requests through nginx, {served_v2} answered by version 2, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    drop(replicas);
}

#[test]
fn push_and_pull_verify_everything_and_say_why() {
    let Some(registry_program) = installed("docker-registry") else {
        return;
    };
    let scratch = Scratch::with_keys();
    let at = |name: &str| scratch.at(name);
    let (publisher, keys) = (at("publisher"), at("keys"));
    publish(&publisher, "digits.onnx", 1, &keys.join("trusted.key"));
    let registry_dir = at("registry");
    let port = free_port();
    let _registry = start_registry(&registry_program, &registry_dir, port);
    let repository = format!("127.0.0.1:{port}/models/digits");
    let digest = push(&publisher, 1, &repository);

    let pull = |reference: &str, repo: &Path, key: Option<&str>| {
        let mut args = vec!["pull", reference, "--repo", repo.to_str().expect("path")];
        let key = key.map(|k| keys.join(k));
        if let Some(key) = &key {
            args.extend(["--trusted-key", key.to_str().expect("path")]);
        }
        edgeinfer(&args)
    };
    let refused = |output: std::process::Output, needle: &str| {
        let text = stderr(&output);
        assert!(!output.status.success() && text.contains(needle) && !text.contains("panicked"), "{text}");
    };
    let empty = |repo: &Path| std::fs::read_dir(repo.join("digits")).map_or(true, |mut d| d.next().is_none());

    let replica = at("replica");
    refused(pull("digits:1", &replica, None), "invalid reference");
    refused(pull(&format!("127.0.0.1:{}/models/digits:1", free_port()), &replica, None), "Connection refused");
    refused(pull(&format!("{repository}:7"), &replica, None), "manifest unknown");
    refused(pull(&format!("{repository}:1"), &replica, Some("attacker.pub")), "not signed by any trusted key");
    assert!(empty(&replica), "a refused pull writes nothing (no staging left behind)");

    let pulled = pull(&format!("{repository}:1"), &replica, Some("trusted.pub"));
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_eq!(component_sha256(&replica, 1), component_sha256(&publisher, 1));
    let again = pull(&format!("{repository}@{digest}"), &replica, Some("trusted.pub"));
    assert!(again.status.success() && stdout(&again).contains("already have"), "{}", stdout(&again));

    // A blob changed inside the registry's storage: the pull's digest check catches it.
    let component = component_sha256(&publisher, 1);
    let blob = registry_dir.join(format!("data/docker/registry/v2/blobs/sha256/{}/{component}/data", &component[..2]));
    let mut bytes = std::fs::read(&blob).expect("the component's blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, bytes).expect("tamper");
    let elsewhere = at("elsewhere");
    refused(pull(&format!("{repository}:1"), &elsewhere, None), "digest");
    assert!(empty(&elsewhere), "a layer that fails its digest writes nothing");
}
