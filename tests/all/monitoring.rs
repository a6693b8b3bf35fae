//! Monitoring end to end: the prediction log and its bit-exact replay, feedback joined to
//! predictions (live and shadow) into accuracy, input drift against a reference, alert rules
//! firing and resolving through a loopback webhook receiver, and the status page in
//! headless Chromium.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use edgeinfer_monitor::predictions::{LogBounds, PredictionLog, read_log};
use edgeinfer_runtime::LoadedModel;
use edgeinfer_server::{MonitoringConfig, ServerConfig};
use serde_json::{Value, json};

use crate::common::*;
use crate::http::*;
use crate::metrics::{scrape, value};
use crate::server::TestServer;

/// A digits look-alike with random weights (same inputs and outputs), compiled once.
pub fn random_digits() -> &'static LoadedModel {
    static MODEL: OnceLock<(tempfile::TempDir, LoadedModel)> = OnceLock::new();
    &MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let model = compile_fixture(&runtime(), dir.path(), "digits_random.onnx", "digits", 2);
            (dir, model)
        })
        .1
}

fn rows_request(id: Option<&str>, rows: &[Vec<f32>]) -> Value {
    let mut body = json!({
        "inputs": [{"name": "X", "shape": [rows.len(), 64], "datatype": "FP32", "data": rows}],
    });
    if let Some(id) = id {
        body["id"] = json!(id);
    }
    body
}

/// Accuracy of `predicted` against `actual`, and precision/recall of `class`.
fn figures(predicted: &[i64], actual: &[i64], class: i64) -> (f64, f64, f64) {
    let correct = predicted.iter().zip(actual).filter(|(p, a)| p == a).count();
    let tp = predicted.iter().zip(actual).filter(|(p, a)| **p == class && **a == class).count();
    let predicted_as = predicted.iter().filter(|p| **p == class).count();
    let actually = actual.iter().filter(|a| **a == class).count();
    (correct as f64 / actual.len() as f64, tp as f64 / predicted_as as f64, tp as f64 / actually as f64)
}

#[test]
fn predictions_replay_bit_identical_and_feedback_scores_live_and_shadow() {
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    copy_version(random_digits().dir(), &repo.path().join("digits/2"), 2);
    std::fs::write(repo.path().join("digits/config.toml"), "default_version = 1\n").expect("config");
    let mut server = TestServer::start(repo.path(), ServerConfig::default());
    let addr = server.addr;
    let traffic = json!({"split": {"1": 100}, "shadow": "2", "reason": "judge 2 on real traffic"});
    let reply = request(addr, "PUT", "/v2/admin/models/digits/traffic", &[], traffic.to_string().as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());

    // 30 requests of 3 rows: the first 10 carry the client's id, the rest get one.
    let holdout = holdout();
    let mut ids = Vec::new();
    for k in 0..30 {
        let rows = &holdout.x[k * 3..k * 3 + 3];
        let client_id = (k < 10).then(|| format!("client-{k}"));
        let reply = post_json(addr, "/v2/models/digits/infer", &rows_request(client_id.as_deref(), rows));
        assert_eq!(reply.status, 200, "{}", reply.text());
        let id = reply.json()["id"].as_str().expect("every answer carries an id").to_string();
        match &client_id {
            Some(mine) => assert_eq!(&id, mine, "the client's id is kept"),
            None => assert!(id.len() == 36 && id.matches('-').count() == 4, "a UUID is assigned: {id}"),
        }
        ids.push(id);
    }
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 30);
    wait_until("the shadow copies", Duration::from_secs(30), || {
        get(addr, "/v2/admin/models/digits/traffic").json()["agreement"][0]["compared"] == json!(30)
    });

    // A label of the wrong length is refused for its item only; unknown ids are reported.
    let wrong = json!({"id": ids[0], "label": [1, 2]});
    let report = post_json(addr, "/v2/models/digits/feedback", &wrong).json();
    assert_eq!(report["joined"], 0);
    assert!(report["rejected"][0]["reason"].as_str().expect("reason").contains("2 labels for a prediction of 3 rows"));
    let mut items: Vec<Value> =
        ids.iter().enumerate().map(|(k, id)| json!({"id": id, "label": &holdout.y[k * 3..k * 3 + 3]})).collect();
    items.push(json!({"id": "never-sent", "label": [1, 2, 3]}));
    items.push(json!({"label": 4}));
    let reply = post_json(addr, "/v2/models/digits/feedback", &json!({"feedback": items}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let report = reply.json();
    assert_eq!((report["received"].clone(), report["joined"].clone()), (json!(32), json!(30)));
    assert_eq!(report["unknown_ids"], json!(["never-sent"]));
    assert!(report["rejected"][0]["reason"].as_str().expect("reason").contains("missing `id`"));
    let again = post_json(addr, "/v2/models/digits/feedback", &json!({"id": ids[1], "label": [0, 0, 0]})).json();
    assert_eq!(again["unknown_ids"], json!([ids[1]]), "a prediction is labelled once");
    let malformed = request(addr, "POST", "/v2/models/digits/feedback", &[], b"{not json");
    assert_eq!(malformed.status, 400);
    assert!(malformed.text().contains("malformed feedback JSON"), "{}", malformed.text());
    assert_eq!(post_json(addr, "/v2/models/nope/feedback", &json!({"id": "a", "label": 1})).status, 404);

    // Quality per version: live from onnxruntime's labels, shadow from the random model.
    let actual = &holdout.y[..90];
    let (live_accuracy, live_precision, live_recall) = figures(&holdout.ort_labels[..90], actual, 3);
    let shadow_outcome = random_digits()
        .infer(vec![fp32("X", &holdout.x[..90])], &[], edgeinfer_runtime::LimitOverrides::default())
        .expect("random digits");
    let shadow_labels = i64s(&shadow_outcome.outputs.iter().find(|t| t.name == "label").expect("label").data);
    let (shadow_accuracy, _, _) = figures(&shadow_labels, actual, 3);
    let quality = get(addr, "/v2/models/digits/quality").json();
    let version =
        |v: &str| quality["versions"].as_array().expect("versions").iter().find(|q| q["version"] == v).cloned();
    let live = version("1").expect("version 1 has quality");
    assert_eq!((live["labelled"].clone(), live["role"].clone()), (json!(90), json!("live")));
    // serde_json's default float parsing may miss the last bit.
    let same = |json: &Value, expected: f64| {
        let got = json.as_f64().expect("a number");
        assert!((got - expected).abs() < 1e-12, "{got} != {expected}");
    };
    same(&live["accuracy"], live_accuracy);
    same(&live["classes"]["3"]["precision"], live_precision);
    same(&live["classes"]["3"]["recall"], live_recall);
    let shadow = version("2").expect("the shadow has quality too");
    assert_eq!((shadow["labelled"].clone(), shadow["role"].clone()), (json!(90), json!("shadow")));
    same(&shadow["accuracy"], shadow_accuracy);
    assert!(shadow_accuracy < live_accuracy - 0.3, "a random model does worse: {shadow_accuracy}");
    let samples = scrape(addr);
    let metric = |name: &str, v: &str| value(&samples, name, json!({"model": "digits", "version": v}));
    same(&json!(metric("edgeinfer_model_accuracy", "1")), live_accuracy);
    same(&json!(metric("edgeinfer_model_accuracy", "2")), shadow_accuracy);
    assert_eq!(value(&samples, "edgeinfer_feedback_labels_total", json!({"result": "joined"})), 30.0);
    assert_eq!(value(&samples, "edgeinfer_feedback_labels_total", json!({"result": "unknown_id"})), 2.0);
    // One more prediction, labelled only after a restart.
    let late = post_json(addr, "/v2/models/digits/infer", &rows_request(Some("late-1"), &holdout.x[90..92]));
    assert_eq!(late.status, 200);
    wait_until("the log writer", Duration::from_secs(10), || {
        value(&scrape(addr), "edgeinfer_predictions_logged_total", json!({})) == 62.0
    });
    server.shutdown();

    // After a restart, the logged predictions are still joinable by id.
    let restarted = TestServer::start(repo.path(), ServerConfig::default());
    let label = json!({"id": "late-1", "label": &holdout.y[90..92]});
    let mut joined = json!(null);
    wait_until("the index read back", Duration::from_secs(10), || {
        let reply = post_json(restarted.addr, "/v2/models/digits/feedback", &label).json();
        joined = reply["joined"].clone();
        joined == 1
    });
    drop(restarted);

    // Replay: every logged prediction (31 live, 31 shadow) on its exact component.
    let repo_arg = repo.path().to_str().expect("utf8");
    let log = edgeinfer_runtime::repository::state_dir(repo.path()).join("predictions");
    wait_until("the log on disk", Duration::from_secs(10), || {
        read_log(&log, None).is_ok_and(|r| r.records.len() == 62)
    });
    let replayed = edgeinfer(&["replay", "--repo", repo_arg]);
    assert!(replayed.status.success(), "{}{}", stdout(&replayed), String::from_utf8_lossy(&replayed.stderr));
    assert!(
        stdout(&replayed).contains("62 replayed, 62 bit-identical, 0 mismatched, 0 missing"),
        "{}",
        stdout(&replayed)
    );
    let one = edgeinfer(&["replay", "--repo", repo_arg, "--id", "client-3", "--json"]);
    let one: Value = serde_json::from_slice(&one.stdout).expect("json report");
    assert_eq!((one["replayed"].clone(), one["identical"].clone()), (json!(2), json!(2)));
    let future = edgeinfer(&["replay", "--repo", repo_arg, "--since", "2099-01-01T00:00:00Z"]);
    assert!(stdout(&future).contains("0 replayed"), "{}", stdout(&future));
    let bad_time = edgeinfer(&["replay", "--repo", repo_arg, "--since", "tuesday"]);
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("not an RFC 3339 time"));

    // A record whose output was altered is reported by id, and so is a missing component.
    let mut records = read_log(&log, None).expect("log").records;
    let tampered_id = records[4].id.clone();
    let mut altered = records[4].outputs[0].data.to_vec();
    altered[0] ^= 1;
    records[4].outputs[0].data = altered.into();
    let tampered = tempfile::tempdir().expect("tempdir");
    let writer = PredictionLog::open(
        tampered.path(),
        LogBounds { max_file_bytes: 1 << 20, max_total_bytes: 1 << 30, ..LogBounds::default() },
        Default::default(),
    )
    .expect("log");
    for record in records {
        writer.append(record, None);
    }
    drop(writer);
    let tampered_arg = tampered.path().to_str().expect("utf8");
    wait_until("the tampered log", Duration::from_secs(10), || {
        read_log(tampered.path(), None).is_ok_and(|r| r.records.len() == 62)
    });
    let report = edgeinfer(&["replay", "--repo", repo_arg, "--log", tampered_arg]);
    assert!(!report.status.success());
    let text = stdout(&report);
    assert!(text.contains(&format!("MISMATCH {tampered_id}")) && text.contains("differs"), "{text}");
    assert!(text.contains("62 replayed, 61 bit-identical, 1 mismatched"), "{text}");
    std::fs::remove_dir_all(repo.path().join("digits/2")).expect("remove version 2");
    let report = edgeinfer(&["replay", "--repo", repo_arg]);
    assert!(!report.status.success());
    assert!(stdout(&report).contains("31 replayed, 31 bit-identical, 0 mismatched, 31 missing"), "{}", stdout(&report));
    assert!(stdout(&report).contains("no component with sha256"), "{}", stdout(&report));
}

/// Holdout rows with `shift` added to the features in `shifted`.
fn shifted_rows(shifted: &[usize], shift: f32) -> Vec<Vec<f32>> {
    holdout()
        .x
        .iter()
        .map(|row| row.iter().enumerate().map(|(j, v)| if shifted.contains(&j) { v + shift } else { *v }).collect())
        .collect()
}

fn send_rows(addr: SocketAddr, rows: &[Vec<f32>]) {
    for chunk in rows.chunks(50) {
        let reply = post_json(addr, "/v2/models/digits/infer", &rows_request(None, chunk));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// A digits version whose drift reference is the training sample (`edgeinfer profile`).
fn profiled_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    let reference = fixture("digits_reference.csv");
    let args = ["profile", "--repo", repo.path().to_str().expect("utf8"), "--model", "digits", "--version", "1"];
    let profiled = edgeinfer(&[&args[..], &["--reference", reference.to_str().expect("utf8")]].concat());
    assert!(profiled.status.success(), "{}", String::from_utf8_lossy(&profiled.stderr));
    assert!(stdout(&profiled).contains("from 1347 rows"), "{}", stdout(&profiled));
    repo
}

#[test]
fn drift_stays_low_in_distribution_and_crosses_on_exactly_the_shifted_features() {
    let repo = profiled_repo();
    let narrow = repo.path().join("narrow.csv");
    std::fs::write(&narrow, "a,b,c\n1,2,3\n").expect("sample");
    let args = ["profile", "--repo", repo.path().to_str().expect("utf8"), "--model", "digits", "--version", "1"];
    let refused = edgeinfer(&[&args[..], &["--reference", narrow.to_str().expect("utf8")]].concat());
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("narrow.csv") && message.contains("3 columns, but input 'X' has 64 features"),
        "{message}"
    );
    let holdout_rows = holdout().x.len();
    let monitoring = MonitoringConfig { drift_window: holdout_rows, ..MonitoringConfig::default() };
    let server = TestServer::start(repo.path(), ServerConfig { monitoring, ..ServerConfig::default() });
    let addr = server.addr;

    let psi = |addr: SocketAddr| -> BTreeMap<String, f64> {
        let drift = get(addr, "/v2/models/digits/drift").json();
        let version = &drift["versions"][0];
        assert_eq!(version["reference_rows"], 1347);
        version["features"]
            .as_array()
            .expect("features")
            .iter()
            .map(|f| (f["name"].as_str().expect("name").to_string(), f["psi"].as_f64().expect("psi")))
            .collect()
    };
    send_rows(addr, &holdout().x);
    let calm = psi(addr);
    assert_eq!(calm.len(), 64);
    let worst = calm.iter().max_by(|a, b| a.1.total_cmp(b.1)).expect("features");
    assert!(*worst.1 < 0.1, "held-out rows come from the training distribution; worst {worst:?}");

    let shifted = [19usize, 28, 43];
    send_rows(addr, &shifted_rows(&shifted, 0.5));
    let drifted = psi(addr);
    let over: Vec<&String> = drifted.iter().filter(|(_, p)| **p > 0.25).map(|(name, _)| name).collect();
    let expected: Vec<String> = shifted.iter().map(|j| format!("X[{j}]")).collect();
    assert_eq!(over, expected.iter().collect::<Vec<_>>(), "{drifted:?}");
    assert!(drifted.iter().filter(|(n, _)| !expected.contains(n)).all(|(_, p)| *p < 0.1), "{drifted:?}");
    let samples = scrape(addr);
    for (name, psi) in &drifted {
        let labels = json!({"model": "digits", "version": "1", "feature": name});
        let scraped = value(&samples, "edgeinfer_feature_drift_psi", labels);
        assert!((scraped - psi).abs() < 1e-12, "{name}: {scraped} != {psi}");
    }
    let share = value(&samples, "edgeinfer_drifted_feature_ratio", json!({"model": "digits", "version": "1"}));
    assert_eq!(share, 3.0 / 64.0);

    // The reference is covered by the manifest's digest: a changed file refuses the version.
    let path = repo.path().join("digits/1/reference.json");
    let text = std::fs::read_to_string(&path).expect("reference").replacen("0.", "0.0", 1);
    std::fs::write(&path, text).expect("tamper");
    let error = edgeinfer_runtime::LoadedModel::load(&runtime(), &repo.path().join("digits/1")).err().expect("refused");
    assert!(error.to_string().contains("reference.json"), "{error}");
}

/// A loopback webhook receiver recording every JSON body it is sent.
pub struct Receiver {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_ok()
                            && let Ok(value) = serde_json::from_slice(&body)
                        {
                            recorded.lock().expect("lock").push(value);
                        }
                        let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                        length = 0;
                    }
                }
            }
        });
        Receiver { addr, bodies }
    }

    /// (alertname, status) of every notification so far.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.bodies
            .lock()
            .expect("lock")
            .iter()
            .map(|b| {
                (
                    b["alerts"][0]["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                    b["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn wait_for(&self, alert: &str, status: &str) {
        let wanted = (alert.to_string(), status.to_string());
        wait_until(&format!("{alert} {status}"), Duration::from_secs(20), || self.seen().contains(&wanted));
    }
}

fn alert_rules(hook: SocketAddr) -> String {
    let rule = |name: &str, model: &str, condition: &str, threshold: f64| {
        format!(
            "[[alerts]]\nname = \"{name}\"\nmodel = \"{model}\"\ncondition = \"{condition}\"\nthreshold = {threshold}\n\
             window = \"2s\"\nfor = \"0s\"\nseverity = \"page\"\n[[alerts.webhook]]\nurl = \"http://{hook}/hook\"\n"
        )
    };
    [
        rule("digits-errors", "digits", "error_rate", 0.5),
        rule("slow-5xx", "slow", "server_error_rate", 0.5),
        rule("slow-latency", "slow", "p99_latency_ms", 200.0),
        rule("digits-busy", "digits", "request_rate", 30.0),
        rule("digits-accuracy", "digits", "accuracy", 0.8),
        rule("digits-drift", "digits", "psi", 0.25),
        rule("shadow-disagrees", "digits", "shadow_agreement", 0.5),
        rule("queue", "*", "queue_depth", 0.0),
    ]
    .concat()
}

#[test]
fn every_alert_condition_fires_then_resolves_exactly_once() {
    let receiver = Receiver::start();
    let repo = profiled_repo();
    let wasm = crate::hostile::componentize(&crate::hostile::hostile_core(crate::hostile::INFINITE_LOOP, ""));
    let limits = edgeinfer_runtime::Limits { fuel: u64::MAX / 2, timeout_ms: 300, memory_mb: 64 };
    crate::hostile::install(&repo.path().join("slow/1"), &wasm, limits);
    copy_version(random_digits().dir(), &repo.path().join("digits/2"), 2);
    std::fs::write(repo.path().join("digits/config.toml"), "default_version = 1\n").expect("config");
    let text = format!(
        "max_concurrent_inferences = 1\nmax_queue = 8\n[monitoring]\nquality_window = 10\ndrift_window = {0}\n\
         drift_min_rows = {0}\nalert_interval_ms = 100\n{1}",
        holdout().x.len(),
        alert_rules(receiver.addr)
    );
    let config = ServerConfig::parse(&text).expect("config");
    let server = TestServer::start(repo.path(), config);
    let addr = server.addr;
    let x = &holdout().x;

    // error_rate: bad requests only, then good ones for longer than the window.
    let wrong = json!({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    for _ in 0..3 {
        assert_eq!(post_json(addr, "/v2/models/digits/infer", &wrong).status, 400);
    }
    receiver.wait_for("digits-errors", "firing");
    // Good requests, five a second (under digits-busy's 30/s), until the bad ones leave the
    // window and the alert resolves.
    let mut k = 0;
    let resolved = ("digits-errors".to_string(), "resolved".to_string());
    wait_until("digits-errors resolved under good traffic", Duration::from_secs(20), || {
        let row = k % x.len();
        assert_eq!(post_json(addr, "/v2/models/digits/infer", &rows_request(None, &x[row..row + 1])).status, 200);
        k += 1;
        std::thread::sleep(Duration::from_millis(200));
        receiver.seen().contains(&resolved)
    });

    // server_error_rate, p99 latency and queue depth: a model that runs into its deadline,
    // one request queued behind another.
    let slow = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]});
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let slow = slow.clone();
            std::thread::spawn(move || post_json(addr, "/v2/models/slow/infer", &slow).status)
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().expect("caller"), 500);
    }
    for (alert, status) in [("queue", "firing"), ("slow-5xx", "firing"), ("slow-latency", "firing")] {
        receiver.wait_for(alert, status);
    }
    for alert in ["queue", "slow-5xx", "slow-latency"] {
        receiver.wait_for(alert, "resolved");
    }

    // request_rate: a burst over 30/s for the 2 s window.
    for k in 0..100 {
        assert_eq!(post_json(addr, "/v2/models/digits/infer", &rows_request(None, &x[k..k + 1])).status, 200);
    }
    receiver.wait_for("digits-busy", "firing");
    receiver.wait_for("digits-busy", "resolved");

    // accuracy: ten wrong labels, then ten right ones fill the window of 10.
    let label = |wrong: bool| {
        let ids: Vec<(String, i64)> = (0..10)
            .map(|k| {
                let reply = post_json(addr, "/v2/models/digits/infer", &rows_request(None, &x[k..k + 1])).json();
                let truth = holdout().y[k];
                (reply["id"].as_str().expect("id").to_string(), if wrong { (truth + 1) % 10 } else { truth })
            })
            .collect();
        let items: Vec<Value> = ids.iter().map(|(id, label)| json!({"id": id, "label": label})).collect();
        assert_eq!(post_json(addr, "/v2/models/digits/feedback", &json!({"feedback": items})).json()["joined"], 10);
    };
    label(true);
    receiver.wait_for("digits-accuracy", "firing");
    label(false);
    receiver.wait_for("digits-accuracy", "resolved");

    // psi: a window of shifted rows, then a window of held-out rows.
    send_rows(addr, &shifted_rows(&[19, 28, 43], 0.5));
    receiver.wait_for("digits-drift", "firing");
    send_rows(addr, x);
    receiver.wait_for("digits-drift", "resolved");

    // shadow_agreement: the random version shadows; then the shadow is removed.
    let traffic = |body: Value| {
        let reply = request(addr, "PUT", "/v2/admin/models/digits/traffic", &[], body.to_string().as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
    };
    traffic(json!({"split": {"1": 100}, "shadow": "2"}));
    send_rows(addr, &x[..100]);
    receiver.wait_for("shadow-disagrees", "firing");
    traffic(json!({"split": {"1": 100}}));
    receiver.wait_for("shadow-disagrees", "resolved");

    // Everything settles (three more evaluations, every recorded event delivered): exactly
    // one firing and one resolved per rule, in that order.
    let alerts_view = || get(addr, "/v2/alerts").json();
    let evaluated = alerts_view()["evaluations"].as_u64().expect("evaluations");
    wait_until("three more evaluations, every event delivered", Duration::from_secs(10), || {
        let view = alerts_view();
        let recorded = view["events"].as_array().map_or(0, Vec::len);
        view["evaluations"].as_u64().expect("evaluations") >= evaluated + 3 && receiver.seen().len() >= recorded
    });
    let seen = receiver.seen();
    for alert in [
        "digits-errors",
        "slow-5xx",
        "slow-latency",
        "queue",
        "digits-busy",
        "digits-accuracy",
        "digits-drift",
        "shadow-disagrees",
    ] {
        let events: Vec<&str> = seen.iter().filter(|(a, _)| a == alert).map(|(_, s)| s.as_str()).collect();
        assert_eq!(events, ["firing", "resolved"], "{alert}: {seen:?}");
    }
    let body = receiver.bodies.lock().expect("lock")[0].clone();
    assert_eq!(body["version"], "4");
    assert_eq!(body["receiver"], "edgeinfer");
    assert_eq!(body["alerts"][0]["labels"]["severity"], "page");
    assert!(body["alerts"][0]["startsAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let alerts = get(addr, "/v2/alerts").json();
    assert_eq!(alerts["rules"].as_array().map(Vec::len), Some(8));
    assert_eq!(alerts["alerts"], json!([]), "none still active");
    assert_eq!(alerts["events"].as_array().map(Vec::len), Some(16));
    let samples = scrape(addr);
    assert_eq!(value(&samples, "edgeinfer_alerts_firing", json!({"alertname": "digits-errors"})), 0.0);
}

#[test]
fn an_unreachable_webhook_never_slows_inference() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let text = format!(
        "[monitoring]\nalert_interval_ms = 50\n[[alerts]]\nname = \"always\"\ncondition = \"request_rate\"\n\
         threshold = 0\nwindow = \"10s\"\n[[alerts.webhook]]\nurl = \"http://{closed}/hook\"\n"
    );
    let server = TestServer::start(&fixtures().repo, ServerConfig::parse(&text).expect("config"));
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            post_json(server.addr, "/v2/models/digits/infer", &rows_request(None, &holdout().x[..1])).status,
            200
        );
    }
    wait_until("the alert to fire", Duration::from_secs(10), || {
        get(server.addr, "/v2/alerts").json()["alerts"][0]["state"] == "firing"
    });
    assert!(started.elapsed() < Duration::from_secs(10), "inference went on while the webhook failed");
    let bad = ServerConfig::parse(
        "[[alerts]]\nname = \"x\"\ncondition = \"psi\"\nthreshold = 1\n[[alerts.webhook]]\nurl = \"ftp://x\"\n",
    );
    assert!(bad.expect_err("refused").contains("webhook \"ftp://x\""));
}

#[test]
fn alert_rules_export_as_a_prometheus_rules_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("edgeinfer.toml");
    std::fs::write(&config, alert_rules("127.0.0.1:9".parse().expect("addr"))).expect("config");
    let rules = dir.path().join("rules.yml");
    let out = edgeinfer(&[
        "alerts",
        "export",
        "--config",
        config.to_str().expect("utf8"),
        "-o",
        rules.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script = "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let parsed = std::process::Command::new("python3")
        .args(["-c", script, rules.to_str().expect("utf8")])
        .output()
        .expect("python");
    assert!(parsed.status.success(), "YAML: {}", String::from_utf8_lossy(&parsed.stderr));
    let parsed: Value = serde_json::from_slice(&parsed.stdout).expect("json");
    let rules = parsed["groups"][0]["rules"].as_array().expect("rules").clone();
    assert_eq!(rules.len(), 8);
    let errors = &rules[0];
    assert_eq!(errors["alert"], "digits-errors");
    assert_eq!(errors["labels"]["severity"], "page");
    let expr = errors["expr"].as_str().expect("expr");
    assert!(
        expr.contains("edgeinfer_requests_total{model=\"digits\",outcome!=\"success\"}[2s]") && expr.ends_with("> 0.5"),
        "{expr}"
    );
    assert!(rules[4]["expr"].as_str().expect("expr").starts_with("edgeinfer_model_accuracy{model=\"digits\"} < 0.8"));
    assert_eq!(rules[7]["expr"], "edgeinfer_queue_depth > 0");
}

pub fn chromium() -> PathBuf {
    crate::platforms::edge_hosts::chromium()
        .expect("the status page test needs Chromium: apt-get install chromium (.ci/run installs it)")
}

pub fn headless(browser: &Path, extra: &[&str], url: &str) -> Output {
    let profile = tempfile::tempdir().expect("profile");
    std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=8000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs")
}

/// The text of the element carrying `attribute` inside the row of `version`.
fn cell(dom: &str, version: &str, field: &str) -> String {
    let row = dom.split(&format!("<tr data-version=\"{version}\">")).nth(1).expect("version row");
    let row = row.split("</tr>").next().expect("row end");
    let cell = row.split(&format!("data-field=\"{field}\"")).nth(1).expect("field");
    cell.split('>').nth(1).and_then(|c| c.split('<').next()).expect("text").to_string()
}

#[test]
fn status_page_shows_what_metrics_say_in_headless_chromium() {
    let browser = chromium();
    let repo = tempfile::tempdir().expect("tempdir");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/2"), 2);
    let server = TestServer::start(repo.path(), ServerConfig::default());
    let addr = server.addr;
    let split = json!({"split": {"1": 70, "2": 30}});
    assert_eq!(request(addr, "PUT", "/v2/admin/models/digits/traffic", &[], split.to_string().as_bytes()).status, 200);
    let mut ids = Vec::new();
    for k in 0..40 {
        let reply = post_json(addr, "/v2/models/digits/infer", &rows_request(None, &holdout().x[k..k + 1]));
        ids.push((reply.json()["id"].as_str().expect("id").to_string(), holdout().y[k]));
    }
    let wrong = json!({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    assert_eq!(post_json(addr, "/v2/models/digits/infer", &wrong).status, 400);
    let items: Vec<Value> = ids.iter().map(|(id, label)| json!({"id": id, "label": label})).collect();
    assert_eq!(post_json(addr, "/v2/models/digits/feedback", &json!({"feedback": items})).json()["joined"], 40);

    let url = format!("http://{addr}/ui");
    let dom = headless(&browser, &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(!dom.contains("data-updates=\"0\""), "the page loaded its data: {dom}");
    assert_eq!(dom.matches("class=\"chart\"").count(), 3, "three charts drawn");
    assert!(dom.contains("data-points=\"60\""), "an hour of minutes");
    let samples = scrape(addr);
    for version in ["1", "2"] {
        let labels = json!({"model": "digits", "version": version});
        let requests = value(&samples, "edgeinfer_requests_total", labels.clone());
        assert_eq!(cell(&dom, version, "requests"), format!("{requests}"), "requests of version {version}");
        let weight = value(&samples, "edgeinfer_traffic_weight_percent", labels.clone());
        assert_eq!(cell(&dom, version, "weight"), format!("{weight}"));
        let accuracy = value(&samples, "edgeinfer_model_accuracy", labels);
        assert_eq!(cell(&dom, version, "accuracy"), format!("{accuracy:.4}"));
    }
    assert!(dom.contains("split"), "the history timeline lists the split");

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(&browser, &["--window-size=1280,1100", &format!("--screenshot={}", shot.display())], &url);
    assert!(shot.metadata().is_ok_and(|m| m.len() > 10_000), "screenshot: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("status page screenshot: {}", shot.display());
}

/// A 1x96x112x112 FP32 request in the binary extension (4.8 MB), asking for binary outputs.
fn large_request(fill: f32) -> (Vec<u8>, usize) {
    let data: Vec<u8> = (0..96 * 112 * 112).flat_map(|i: u32| (fill + (i % 7) as f32).to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 96, 112, 112],
                    "parameters": {"binary_data_size": data.len()}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string()
    .into_bytes();
    let length = header.len();
    let mut body = header;
    body.extend_from_slice(&data);
    (body, length)
}

#[test]
fn image_sized_tensors_are_logged_as_digests_and_a_spent_budget_drops_instead_of_waiting() {
    let repo = tempfile::tempdir().expect("tempdir");
    compile_fixture(&runtime(), repo.path(), "large_identity.onnx", "identity", 1);
    // Loading measures what a request touches (the model has no examples: a request of zeros),
    // the figure a pool slot's resident pages are weighed against: 4.8 MB in and 4.8 MB out.
    let loaded = edgeinfer_runtime::LoadedModel::load(&runtime(), &repo.path().join("identity/1")).expect("load");
    let memory = loaded.request_memory_bytes().expect("measured at load");
    assert!((2 * 96 * 112 * 112 * 4..256 << 20).contains(&memory), "a request reaches {memory} bytes");
    let logs = tempfile::tempdir().expect("tempdir");
    let post = |addr: SocketAddr, fill: f32| {
        let (body, length) = large_request(fill);
        let headers = [("Inference-Header-Content-Length", length.to_string())];
        let reply = request(addr, "POST", "/v2/models/identity/infer", &headers, &body);
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body[..200.min(reply.body.len())]));
        reply
    };

    // Defaults: tensors over 1 MiB go to the log as shape + sha256; the record says so.
    let monitoring =
        MonitoringConfig { predictions_dir: Some(logs.path().join("default")), ..MonitoringConfig::default() };
    let server = TestServer::start(repo.path(), ServerConfig { monitoring, ..ServerConfig::default() });
    let reply = post(server.addr, 1.0);
    let answered = &reply.body[reply.body.len() - 96 * 112 * 112 * 4..];
    wait_until("the record is written", Duration::from_secs(30), || {
        read_log(&logs.path().join("default"), None).is_ok_and(|read| read.records.len() == 1)
    });
    let records = read_log(&logs.path().join("default"), None).expect("read the log").records;
    let record = &records[0];
    assert!(record.inputs[0].data.is_empty() && record.outputs[0].data.is_empty(), "no data for digested tensors");
    assert_eq!(record.inputs[0].shape, vec![1, 96, 112, 112]);
    assert_eq!(record.digests["y"], edgeinfer_runtime::sha256_hex(answered), "the digest of what was answered");
    let report = edgeinfer_monitor::replay::replay(
        &runtime(),
        repo.path(),
        &logs.path().join("default"),
        &edgeinfer_monitor::replay::ReplayFilter::default(),
        None,
    )
    .expect("replay");
    assert_eq!((report.replayed, report.digest_only), (0, 1), "an input logged as a digest is not re-run");

    // A budget of 1 MB/s: the first record (9.6 MB) is over it and dropped, the request
    // answered all the same; the drop shows in the metrics and on the status page's data.
    let monitoring = MonitoringConfig {
        predictions_dir: Some(logs.path().join("budget")),
        predictions_full_tensor_bytes: 0,
        predictions_bytes_per_second: 1_000_000,
        ..MonitoringConfig::default()
    };
    let server = TestServer::start(repo.path(), ServerConfig { monitoring, ..ServerConfig::default() });
    for fill in [2.0, 3.0] {
        post(server.addr, fill);
    }
    let status = get(server.addr, "/v2/monitor").json();
    assert_eq!(status["prediction_log"]["dropped"], 2, "{}", status["prediction_log"]);
    let metrics = scrape(server.addr);
    assert_eq!(value(&metrics, "edgeinfer_predictions_dropped_total", json!({})), 2.0);
}
