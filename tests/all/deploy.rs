//! Zero-downtime updates over real HTTP: versions dropped into a watched repository, canary
//! splits, a shadow version, rollback, a tampered version, unloads, all under continuous
//! load; then the history log and a restart into the last split.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use edgeinfer_runtime::{CompileRequest, Limits, Manifest, ModelRepository, compile_model};
use edgeinfer_server::{ChangeKind, ModelRegistry, ServerConfig};
use serde_json::{Value, json};

use crate::common::*;
use crate::http::*;
use crate::server::{TestServer, digits_request};

/// Digits versions 2 (with a recorded smoke-test example) and 3, compiled once per run.
struct Staged {
    _dir: tempfile::TempDir,
    repo: PathBuf,
}

fn staged() -> &'static Staged {
    static STAGED: OnceLock<Staged> = OnceLock::new();
    STAGED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().to_path_buf();
        let onnx = std::fs::read(fixture("digits.onnx")).expect("fixture");
        let holdout = holdout();
        for version in [2, 3] {
            let request = CompileRequest {
                onnx: &onnx,
                source_file: "digits.onnx".into(),
                name: "digits".into(),
                version,
                repo: repo.clone(),
                limits: Limits::default(),
                examples: vec![vec![fp32(&holdout.input_name, &holdout.x[..2])]],
                reference: None,
                text: None,
            };
            compile_model(&runtime(), &request, &|_: &str| {}).expect("compile");
        }
        Staged { _dir: dir, repo }
    })
}

/// Makes version `version` of digits appear in `repo` at once (copied beside, then renamed),
/// from `source`; `edit` may change the manifest and component first.
fn drop_version(source: &Path, repo: &Path, version: u64, edit: impl FnOnce(&Path)) {
    let incoming = repo.join("digits").join(format!(".incoming-{version}"));
    copy_version(source, &incoming, version);
    edit(&incoming);
    std::fs::rename(&incoming, repo.join("digits").join(version.to_string())).expect("rename");
}

/// A repository with digits version 1 whose new versions wait for an explicit split.
fn canary_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixtures().repo.join("digits/1"), &dir.path().join("digits/1"));
    std::fs::write(dir.path().join("digits/config.toml"), "on_new_version = \"wait\"\n").expect("config");
    dir
}

/// A registry over `repo` with its history log, every model loaded.
pub fn registry(repo: &Path) -> Arc<ModelRegistry> {
    let history = ModelRegistry::default_history_path(repo);
    let registry =
        ModelRegistry::with_history(runtime(), ModelRepository::open(repo).expect("repo"), &history).expect("registry");
    registry.load_all().expect("load");
    Arc::new(registry)
}

fn server_config() -> ServerConfig {
    ServerConfig { max_queue: 1024, ..ServerConfig::default() }
}

fn traffic(addr: SocketAddr) -> Value {
    let reply = get(addr, "/v2/admin/models/digits/traffic");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Waits until the traffic view satisfies `done` (the watcher works in the background).
fn wait_for(addr: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) {
    wait_until(what, Duration::from_secs(60), || done(&traffic(addr)));
}

fn has(view: &Value, key: &str, version: &str) -> bool {
    view[key].as_array().is_some_and(|list| {
        list.iter().any(|item| item == version || item.get("version").is_some_and(|v| v == version))
    })
}

/// One request as a load client saw it.
struct Sample {
    start: Instant,
    end: Instant,
    status: u16,
    version: Option<u64>,
    body: String,
}

/// A period during which `allowed` versions may answer: from the moment its change was sent
/// until the next change has been answered.
struct Phase {
    sent: Instant,
    returned: Instant,
    weights: BTreeMap<u64, u32>,
}

impl Phase {
    fn allowed(&self) -> BTreeSet<u64> {
        self.weights.iter().filter(|(_, w)| **w > 0).map(|(v, _)| *v).collect()
    }
}

/// Lets the load run until `count` more requests have been answered (at most 15 s), so every
/// phase has enough samples however busy the machine is.
fn let_requests_run(done: &AtomicUsize, count: usize) {
    let target = done.load(Ordering::Relaxed) + count;
    wait_until(&format!("{count} more answers"), Duration::from_secs(15), || done.load(Ordering::Relaxed) >= target);
}

fn load_client(addr: SocketAddr, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>) -> Vec<Sample> {
    let body = digits_request(1);
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let reply = post_json(addr, "/v2/models/digits/infer", &body);
        let end = Instant::now();
        let version = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["model_version"].as_str().and_then(|s| s.parse().ok()));
        samples.push(Sample { start, end, status: reply.status, version, body: reply.text() });
        done.fetch_add(1, Ordering::Relaxed);
    }
    samples
}

/// Sends an admin change and records the phase it starts.
fn change(phases: &mut Vec<Phase>, weights: &[(u64, u32)], send: impl FnOnce() -> Reply) -> Value {
    let sent = Instant::now();
    let reply = send();
    let returned = Instant::now();
    assert_eq!(reply.status, 200, "{}", reply.text());
    phases.push(Phase { sent, returned, weights: weights.iter().copied().collect() });
    reply.json()
}

fn put_traffic(addr: SocketAddr, body: Value) -> Reply {
    request(addr, "PUT", "/v2/admin/models/digits/traffic", &[], body.to_string().as_bytes())
}

fn cli(args: &[&str]) -> Reply {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_edgeinfer")).args(args).output().expect("run cli");
    let status = if output.status.success() { 200 } else { 400 };
    let body = if output.status.success() { output.stdout } else { output.stderr };
    Reply { status, headers: Vec::new(), body }
}

/// Share of version `version` among requests that ran wholly inside phase `index`.
fn observed_share(samples: &[Sample], phases: &[Phase], index: usize, version: u64) -> (f64, usize) {
    let from = phases[index].returned;
    let until = phases.get(index + 1).map_or(Instant::now(), |next| next.sent);
    let inside: Vec<&Sample> = samples.iter().filter(|s| s.start >= from && s.end <= until).collect();
    let hits = inside.iter().filter(|s| s.version == Some(version)).count();
    (hits as f64 / inside.len().max(1) as f64, inside.len())
}

#[test]
fn rollout_under_load_loses_no_request_and_is_logged_in_order() {
    let staged = staged();
    let dir = canary_repo();
    let repo = dir.path();
    let mut server = TestServer::with_registry(registry(repo), server_config());
    let addr = server.addr;
    let url = format!("http://{addr}");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || load_client(addr, stop, done))
        })
        .collect();
    let started = Instant::now();
    let mut phases = vec![Phase { sent: started, returned: started, weights: BTreeMap::from([(1, 100)]) }];
    let_requests_run(&done, 100);

    // 1. A new version appears in the watched repository; policy "wait": it takes no traffic.
    drop_version(&staged.repo.join("digits/2"), repo, 2, |_| {});
    wait_for(addr, "version 2 to load", |v| has(v, "loaded", "2"));
    // 2-3. Canary 10%, then 50% (through the CLI).
    change(&mut phases, &[(1, 90), (2, 10)], || {
        put_traffic(addr, json!({"split": {"1": 90, "2": 10}, "reason": "canary"}))
    });
    let_requests_run(&done, 1500);
    change(&mut phases, &[(1, 50), (2, 50)], || {
        cli(&["traffic", "--server", &url, "--model", "digits", "1=50", "2=50"])
    });
    let_requests_run(&done, 1000);
    // 4-5. Version 3 appears and shadows version 2, which takes all traffic.
    drop_version(&staged.repo.join("digits/3"), repo, 3, |_| {});
    wait_for(addr, "version 3 to load", |v| has(v, "loaded", "3"));
    let body = json!({"split": {"2": 100}, "shadow": "3", "reason": "promote 2, shadow 3"});
    change(&mut phases, &[(2, 100)], || put_traffic(addr, body));
    let_requests_run(&done, 600);
    // 6. Roll back to 50/50 (through the CLI), then 7. all on version 2 again.
    let rolled = change(&mut phases, &[(1, 50), (2, 50)], || cli(&["rollback", "--server", &url, "--model", "digits"]));
    assert_eq!(rolled["split"], json!({"1": 50, "2": 50}), "{rolled}");
    assert_eq!(rolled["shadow"], Value::Null);
    change(&mut phases, &[(2, 100)], || put_traffic(addr, json!({"split": {"2": 100}})));
    // 8. A tampered version is refused and never takes traffic.
    drop_version(&staged.repo.join("digits/2"), repo, 4, |dir| {
        let wasm = dir.join("model.wasm");
        let mut bytes = std::fs::read(&wasm).expect("wasm");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&wasm, bytes).expect("write");
    });
    wait_for(addr, "version 4 to be refused", |v| has(v, "refused", "4"));
    // 9-10. Unload the old versions, one of them while the shadow copies may still run.
    let unload =
        |v: u64| move || request(addr, "POST", &format!("/v2/admin/models/digits/versions/{v}/unload"), &[], b"");
    change(&mut phases, &[(2, 100)], unload(1));
    change(&mut phases, &[(2, 100)], unload(3));
    let_requests_run(&done, 100);

    stop.store(true, Ordering::Relaxed);
    let samples: Vec<Sample> = clients.into_iter().flat_map(|c| c.join().expect("client")).collect();
    let elapsed = started.elapsed();
    let view = traffic(addr);
    let stats = get(addr, "/v2/models/digits/stats").json();
    server.shutdown();

    // Zero failed or dropped requests, each answered by a version its moment allowed.
    assert!(samples.len() > 500, "only {} requests in {elapsed:?}", samples.len());
    for sample in &samples {
        assert_eq!(sample.status, 200, "failed request: {}", sample.body);
        let allowed: BTreeSet<u64> = phases
            .iter()
            .enumerate()
            .filter(|(i, phase)| {
                let until = phases.get(i + 1).map_or(Instant::now(), |next| next.returned);
                phase.sent <= sample.end && sample.start <= until
            })
            .flat_map(|(_, phase)| phase.allowed())
            .collect();
        let version = sample.version.expect("model_version");
        assert!(allowed.contains(&version), "version {version} answered while only {allowed:?} were allowed");
    }
    // The canary shares match their weights within five standard deviations.
    for (index, weight) in [(1, 0.10), (2, 0.50)] {
        let (share, n) = observed_share(&samples, &phases, index, 2);
        let sigma = (weight * (1.0 - weight) / n as f64).sqrt();
        assert!(n > 100, "too few requests ({n}) in phase {index}");
        assert!((share - weight).abs() <= 5.0 * sigma, "phase {index}: share {share:.3} of {n}, weight {weight}");
    }
    // The shadow saw copies and agreed with the live version (same model, same outputs).
    let agreement = view["agreement"].as_array().expect("agreement");
    let pair = agreement.iter().find(|a| a["live"] == "2" && a["shadow"] == "3").expect("2 vs 3 compared");
    assert!(pair["compared"].as_u64().expect("compared") > 0, "{pair}");
    assert_eq!(pair["agreed"], pair["compared"], "{pair}");
    assert_eq!(view["loaded"], json!(["2"]));
    // Per-version statistics count exactly what the clients saw from version 2.
    let row = stats["model_stats"].as_array().expect("rows").iter().find(|r| r["version"] == "2").cloned().expect("v2");
    let answered_by_2 = samples.iter().filter(|s| s.version == Some(2)).count() as u64;
    assert_eq!(row["inference_count"], answered_by_2, "{row}");
    assert!(row["latency_us"]["p50"].as_f64().expect("p50") > 0.0, "{row}");
    println!("{} requests in {elapsed:?}, all answered", samples.len());

    // The history lists every change, in order.
    let reply_events = registry_history(repo);
    let expected: Vec<(ChangeKind, Option<u64>, Value)> = vec![
        (ChangeKind::Load, Some(1), Value::Null),
        (ChangeKind::Split, None, json!({"1": 100})),
        (ChangeKind::Load, Some(2), Value::Null),
        (ChangeKind::Split, None, json!({"1": 90, "2": 10})),
        (ChangeKind::Split, None, json!({"1": 50, "2": 50})),
        (ChangeKind::Load, Some(3), Value::Null),
        (ChangeKind::Split, None, json!({"2": 100})),
        (ChangeKind::Rollback, None, json!({"1": 50, "2": 50})),
        (ChangeKind::Split, None, json!({"2": 100})),
        (ChangeKind::Refused, Some(4), Value::Null),
        (ChangeKind::Unload, Some(1), Value::Null),
        (ChangeKind::Unload, Some(3), Value::Null),
    ];
    let actual: Vec<(ChangeKind, Option<u64>, Value)> = reply_events
        .iter()
        .map(|e| (e.kind, e.version, e.new.as_ref().map_or(Value::Null, |n| n["split"].clone())))
        .collect();
    assert_eq!(actual, expected);
    let shadowed = &reply_events[6];
    assert_eq!(shadowed.new.as_ref().expect("new")["shadow"], "3");
    assert_eq!(shadowed.reason, "promote 2, shadow 3");
    assert!(reply_events[9].reason.contains("integrity mismatch"), "{}", reply_events[9].reason);
    assert!(reply_events.windows(2).all(|w| w[0].seq < w[1].seq));

    // A restart comes back into the last split.
    let restarted = registry(repo);
    let view = restarted.traffic("digits").expect("traffic");
    assert_eq!(view.deployment.split, BTreeMap::from([("2".to_string(), 100)]), "{view:?}");
    assert_eq!(restarted.resolve("digits", None).expect("route").version(), 2);
}

fn registry_history(repo: &Path) -> Vec<edgeinfer_server::HistoryEvent> {
    let log = edgeinfer_server::HistoryLog::open(&ModelRegistry::default_history_path(repo)).expect("log");
    log.events().expect("events").into_iter().filter(|e| e.model == "digits").collect()
}

#[test]
fn bad_admin_input_is_refused_and_changes_nothing() {
    let dir = canary_repo();
    let repo = dir.path();
    drop_version(&staged().repo.join("digits/2"), repo, 2, |_| {});
    let server = TestServer::with_registry(registry(repo), ServerConfig { watch: false, ..server_config() });
    let addr = server.addr;
    let before = traffic(addr);
    assert_eq!(before["split"], json!({"2": 100}), "without history, the highest version starts live: {before}");
    let path = "/v2/admin/models/digits/traffic";
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("PUT", path, br#"{"split": {"1": 60, "2": 30}}"#.to_vec(), 400, "sum to 100, got 90"),
        ("PUT", path, br#"{"split": {"1": 50, "9": 50}}"#.to_vec(), 400, "version 9 is not loaded"),
        ("PUT", path, br#"{"split": {"1": 100}, "shadow": "1"}"#.to_vec(), 400, "also takes live traffic"),
        ("PUT", path, br#"{"split": {"1": 100}, "shadow": "8"}"#.to_vec(), 400, "shadow version 8 is not loaded"),
        ("PUT", path, br#"{"split": {"1": 100"#.to_vec(), 400, "malformed traffic JSON"),
        ("PUT", path, br#"{"split": {"one": 100}}"#.to_vec(), 400, "version 'one' is not a number"),
        ("PUT", path, br#"{"split": {"1": 100}, "weights": 1}"#.to_vec(), 400, "unknown field `weights`"),
        ("PUT", path, br#"[1, 2]"#.to_vec(), 400, "must be a JSON object"),
        ("PUT", "/v2/admin/models/nope/traffic", br#"{"split": {"1": 100}}"#.to_vec(), 404, "unknown model 'nope'"),
        ("DELETE", path, Vec::new(), 405, "use PUT"),
        ("POST", "/v2/admin/models/digits/rollback", Vec::new(), 409, "no earlier split"),
        ("POST", "/v2/admin/models/digits/rollback", b"{reason".to_vec(), 400, "malformed JSON body"),
        ("POST", "/v2/admin/models/digits/versions/2/unload", Vec::new(), 409, "takes traffic"),
        ("POST", "/v2/admin/models/digits/versions/7/unload", Vec::new(), 404, "no version 7 loaded"),
        ("POST", "/v2/admin/models/digits/versions/x/load", Vec::new(), 400, "'x' is not a number"),
        ("GET", "/v2/admin/models/digits/bogus", Vec::new(), 404, "unknown admin endpoint"),
    ];
    for (method, path, body, status, message) in cases {
        let reply = request(addr, method, path, &[], &body);
        assert_eq!(reply.status, status, "{method} {path} {}: {}", String::from_utf8_lossy(&body), reply.text());
        let error = reply.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(message), "{method} {path}: {error:?} should mention {message:?}");
        assert_eq!(traffic(addr), before, "{method} {path} changed the deployment");
    }
    let history = registry_history(repo);
    assert!(history.iter().all(|e| e.kind != ChangeKind::Rollback), "a refused change was logged");
}

#[test]
fn a_version_failing_its_smoke_test_never_takes_traffic() {
    let staged = staged();
    let manifest = Manifest::load(&staged.repo.join("digits/2/manifest.toml")).expect("manifest");
    assert_eq!(manifest.examples.len(), 1, "compile recorded the example");
    assert_eq!(manifest.examples[0].outputs.len(), 2, "label and probabilities recorded");

    let dir = canary_repo();
    let repo = dir.path();
    let server = TestServer::with_registry(registry(repo), ServerConfig { watch: false, ..server_config() });
    let addr = server.addr;
    // Same component, but the manifest now expects other labels.
    drop_version(&staged.repo.join("digits/2"), repo, 5, |dir| {
        let path = dir.join("manifest.toml");
        let mut manifest = Manifest::load(&path).expect("manifest");
        let label = manifest.examples[0].outputs.iter_mut().find(|t| t.name == "label").expect("label");
        label.data = hex_of_i64s(&[11, 12]);
        manifest.save(&path).expect("save");
    });
    let reply = request(addr, "POST", "/v2/admin/models/digits/versions/5/load", &[], b"");
    assert_eq!(reply.status, 400, "{}", reply.text());
    let error = reply.json()["error"].as_str().expect("error").to_string();
    assert!(error.contains("smoke test failed") && error.contains("output 'label' differs"), "{error}");
    let view = traffic(addr);
    assert_eq!(view["split"], json!({"1": 100}));
    assert!(has(&view, "refused", "5"), "{view}");
    let index = post_json(addr, "/v2/repository/index", &json!({})).json();
    let row = index.as_array().expect("rows").iter().find(|r| r["version"] == "5").cloned().expect("row");
    assert_eq!(row["state"], "UNAVAILABLE");
    assert!(row["reason"].as_str().expect("reason").contains("smoke test failed"), "{row}");
    // The untouched copy loads and passes.
    drop_version(&staged.repo.join("digits/2"), repo, 6, |_| {});
    let reply = request(addr, "POST", "/v2/admin/models/digits/versions/6/load", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = post_json(addr, "/v2/models/digits/versions/6/infer", &digits_request(1));
    assert_eq!(reply.status, 200, "{}", reply.text());
}

fn hex_of_i64s(values: &[i64]) -> String {
    values.iter().flat_map(|v| v.to_le_bytes()).map(|b| format!("{b:02x}")).collect()
}

/// A repository with digits as version 1 and, as version 2, a component that declares no
/// inputs or outputs and answers every request with no outputs at all.
fn digits_and_a_hollow_version_2() -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &temp.path().join("digits/1"), 1);
    let wasm = crate::hostile::componentize(&crate::hostile::hostile_core("", ""));
    crate::hostile::install(&temp.path().join("digits/2"), &wasm, Limits::default());
    temp
}

/// A shadow whose outputs differ from the live version's is reported as disagreeing, for
/// every copy: the comparison can fail, not only agree.
#[test]
fn a_shadow_that_answers_differently_disagrees_every_time() {
    let temp = digits_and_a_hollow_version_2();
    std::fs::write(temp.path().join("digits/config.toml"), "default_version = 1\n").expect("config");
    let server = TestServer::start(temp.path(), ServerConfig::default());
    let addr = server.addr;
    let reply = put_traffic(addr, json!({"split": {"1": 100}, "shadow": "2"}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    const REQUESTS: u64 = 20;
    for _ in 0..REQUESTS {
        let reply = post_json(addr, "/v2/models/digits/infer", &digits_request(1));
        assert_eq!((reply.status, reply.json()["model_version"].clone()), (200, json!("1")), "{}", reply.text());
    }
    let first_pair = || traffic(addr)["agreement"].as_array().and_then(|a| a.first().cloned()).unwrap_or_default();
    wait_until("every shadow copy compared", Duration::from_secs(10), || first_pair()["compared"] == REQUESTS);
    let pair = first_pair();
    assert_eq!((pair["live"].clone(), pair["shadow"].clone()), (json!("1"), json!("2")), "{pair}");
    assert_eq!(pair["compared"], REQUESTS, "{pair}");
    assert_eq!(pair["agreed"], 0, "{pair}");
    assert_eq!(pair["agreement_rate"], 0.0, "{pair}");
    let shadow = get(addr, "/v2/models/digits/versions/2/stats").json()["model_stats"][0].clone();
    assert_eq!(
        (shadow["execution_count"].clone(), shadow["inference_count"].clone()),
        (json!(20), json!(20)),
        "{shadow}"
    );
}

/// Metadata without a version describes the default version (the split's heaviest), the same
/// on every call, never a version drawn at random from a canary split.
#[test]
fn unversioned_metadata_describes_the_default_version_every_time() {
    let temp = digits_and_a_hollow_version_2();
    let server = TestServer::start(temp.path(), ServerConfig::default());
    let addr = server.addr;
    for (split, inputs) in
        [(json!({"1": 60, "2": 40}), 1), (json!({"1": 40, "2": 60}), 0), (json!({"1": 50, "2": 50}), 0)]
    {
        assert_eq!(put_traffic(addr, json!({"split": split})).status, 200);
        for _ in 0..20 {
            let metadata = get(addr, "/v2/models/digits").json();
            assert_eq!(metadata["inputs"].as_array().map(Vec::len), Some(inputs), "split {split}: {metadata}");
            assert_eq!(metadata["versions"], json!(["1", "2"]));
        }
    }
}
