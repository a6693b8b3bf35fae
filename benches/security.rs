//! What security costs over loopback: the digits model served with authentication off, with
//! bearer tokens, and over TLS, each loaded by `wrk` (a separate process; `apt-get install
//! wrk`) at 8 keep-alive connections, rounds alternating between the set-ups so machine noise
//! hits all three alike. Ratios are against the plain set-up of the same run.
//!
//! `cargo bench --bench security` prints a table.

#[path = "support.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use edgeinfer_runtime::ModelRepository;
use edgeinfer_server::security::tls::{ClientAuthScope, TlsSettings};
use edgeinfer_server::security::{Scope, TokenLimits, TokensFile};
use edgeinfer_server::{AuthMode, ModelRegistry, RunningServer, ServerConfig, start};

const ROUNDS: usize = 3;
const SECONDS: u32 = 5;

/// One wrk run: requests/s, p50 and p99 in ms.
fn wrk(url: &str, script: &Path) -> (f64, f64, f64) {
    let out = Command::new("wrk")
        .args(["-t2", "-c8", &format!("-d{SECONDS}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| -> Option<String> {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|rest| rest.trim().to_string()))
    };
    let millis = |value: String| -> f64 {
        let number: f64 = value.trim_end_matches(|c: char| c.is_alphabetic()).parse().unwrap_or(f64::NAN);
        match value.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.') {
            "us" => number / 1000.0,
            "s" => number * 1000.0,
            _ => number,
        }
    };
    if text.contains("Non-2xx") {
        eprintln!("warning: non-2xx answers during the run:\n{text}");
    }
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    (rps, field("50%").map_or(f64::NAN, millis), field("99%").map_or(f64::NAN, millis))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("wrk is not installed: `apt-get install wrk`, then run this bench again");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let runtime = support::runtime(true);
    support::compile(&runtime, &repo, "digits.onnx", "digits");

    let tokens_path = dir.path().join("tokens.toml");
    let mut tokens = TokensFile::default();
    let token = tokens.create("bench", vec![Scope::Infer(None)], None, TokenLimits::default()).expect("token");
    tokens.save(&tokens_path).expect("save");
    let ca = {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key")).expect("ca")
    };
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("cert");
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("key");
    let tls = TlsSettings {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        client_ca: None,
        client_auth: ClientAuthScope::All,
    };

    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    let serve = |config: ServerConfig| -> RunningServer {
        let registry = Arc::new(ModelRegistry::new(runtime.clone(), ModelRepository::open(&repo).expect("repo")));
        registry.load_all().expect("load");
        let config =
            ServerConfig { listen: "127.0.0.1:0".parse().expect("addr"), watch: false, max_queue: 1024, ..config };
        tokio.block_on(start(registry, config)).expect("server")
    };
    let plain = serve(ServerConfig::default());
    let authed =
        serve(ServerConfig { auth: Some(AuthMode::Tokens), tokens_file: Some(tokens_path), ..ServerConfig::default() });
    let encrypted = serve(ServerConfig { tls: Some(tls), ..ServerConfig::default() });

    let row = vec![0.25f32; 64];
    let body =
        serde_json::json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": row}]}).to_string();
    let script = |name: &str, auth: Option<&str>| {
        let path = dir.path().join(name);
        let header = auth.map(|t| format!("wrk.headers[\"Authorization\"] = \"Bearer {t}\"\n")).unwrap_or_default();
        let lua = format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n{header}wrk.body = '{body}'\n"
        );
        std::fs::write(&path, lua).expect("script");
        path
    };
    let setups = [
        ("plain HTTP, auth off", format!("http://{}/v2/models/digits/infer", plain.addr), script("plain.lua", None)),
        (
            "plain HTTP, bearer token",
            format!("http://{}/v2/models/digits/infer", authed.addr),
            script("auth.lua", Some(&token)),
        ),
        (
            "TLS, auth off",
            format!("https://localhost:{}/v2/models/digits/infer", encrypted.addr.port()),
            script("tls.lua", None),
        ),
    ];
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); setups.len()];
    for _ in 0..ROUNDS {
        for (index, (_, url, script)) in setups.iter().enumerate() {
            results[index].push(wrk(url, script));
        }
    }
    println!("| set-up | requests/s | p50 ms | p99 ms | requests/s vs plain |");
    println!("|---|---|---|---|---|");
    let plain_rps = median(results[0].iter().map(|r| r.0).collect());
    for ((label, _, _), runs) in setups.iter().zip(&results) {
        let rps = median(runs.iter().map(|r| r.0).collect());
        println!(
            "| {label} | {rps:.0} | {:.2} | {:.2} | {:.3}x |",
            median(runs.iter().map(|r| r.1).collect()),
            median(runs.iter().map(|r| r.2).collect()),
            rps / plain_rps
        );
    }
    println!("({ROUNDS} rounds of {SECONDS} s per set-up, alternating; medians; wrk -t2 -c8, keep-alive)");
    for server in [plain, authed, encrypted] {
        tokio.block_on(server.shutdown());
    }
}
