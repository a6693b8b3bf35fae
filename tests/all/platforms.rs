//! `edgeinfer package` for the platforms edge users deploy to, each run for real on loopback
//! and compared with `edgeinfer serve` answer by answer:
//!
//! - the Cloudflare Worker under `workerd` (Cloudflare's open-source Workers runtime, from npm;
//!   `tests/setup.sh` installs it under `target/npm`);
//! - the browser module in headless Chromium, loaded from a plain static file server;
//! - the Spin package under a wasi:http host (`wasmtime-wasi-http`, what `wasmtime serve` and
//!   Spin are built on);
//! - Fastly, which cannot host the wasi:http component: the refusal says why.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

#[path = "../support/edge_hosts.rs"]
pub(crate) mod edge_hosts;

use edge_hosts::{Browser, StaticServer, Workerd, package, package_ok};

use crate::aarch64::{Case, cases, header_of};
use crate::common::*;
use crate::http::{Reply, get, request};
use crate::soak::soak_driver::ServerProcess;
use crate::wasi_http::{assert_errors_match, bad_digits_bodies, serve_component};

const MODELS: [&str; 3] = ["digits", "squeezenet", "pipeline"];

/// workerd (`tests/setup.sh` installs it), or `None` (skipped, saying so) outside CI.
fn workerd_binary() -> Option<PathBuf> {
    let found = edge_hosts::workerd_binary();
    if found.is_none() {
        let why = "needs workerd (tests/setup.sh runs `npm install --prefix target/npm workerd`)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
    }
    found
}

/// workerd serving the package in `out`, ready.
fn start_workerd(binary: &std::path::Path, out: &std::path::Path) -> Workerd {
    let workerd = Workerd::start(binary, out);
    wait_until("workerd ready", Duration::from_secs(60), || get(workerd.addr, "/v2/health/ready").status == 200);
    workerd
}

/// The JSON part of an answer without the host's own `parameters.fuel_used`, and the binary
/// part: what a component answering by itself must match byte for byte.
fn comparable(reply: &Reply) -> (Value, Vec<u8>) {
    let mut header = header_of(reply);
    if let Some(parameters) = header.get_mut("parameters").and_then(Value::as_object_mut) {
        parameters.remove("fuel_used");
        if parameters.is_empty() {
            header.as_object_mut().expect("object").remove("parameters");
        }
    }
    let length =
        reply.header("inference-header-content-length").map_or(reply.body.len(), |l| l.parse().expect("length"));
    (header, reply.body[length..].to_vec())
}

/// Every answer of `platform` equals `edgeinfer serve`'s: metadata, one request per model
/// (outputs bit for bit), and for digits each bad request's status and message.
fn assert_answers_match(platform: &str, model: &str, ours: SocketAddr, server: SocketAddr) {
    let paths = [
        "/v2/health/live".to_string(),
        "/v2/health/ready".into(),
        format!("/v2/models/{model}"),
        format!("/v2/models/{model}/ready"),
    ];
    for path in &paths {
        let (mine, theirs) = (get(ours, path), get(server, path));
        assert_eq!(mine.status, 200, "{platform} {path}: {}", mine.text());
        assert_eq!(mine.json(), theirs.json(), "{platform} {path}");
    }
    for case in cases().into_iter().filter(|case| case.model == model) {
        let (mine, theirs) = (case.send(ours), case.send(server));
        assert_eq!(mine.status, 200, "{platform} {model}: {}", String::from_utf8_lossy(&mine.body));
        assert_eq!(comparable(&mine), comparable(&theirs), "{platform} {model}: the answers differ");
    }
    if model != "digits" {
        return;
    }
    assert_errors_match(platform, ours, server);
}

/// `wrangler deploy --dry-run` (everything a deploy does short of uploading) takes the package
/// as it is: the module rules, the wasm as compiled modules, the upload's size.
fn assert_wrangler_accepts(package: &std::path::Path) {
    let Some(wrangler) = edge_hosts::wrangler_binary() else {
        assert!(std::env::var_os("CI").is_none(), "needs wrangler (tests/setup.sh installs it)");
        eprintln!("SKIPPED wrangler --dry-run: tests/setup.sh installs wrangler");
        return;
    };
    let outdir = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(wrangler)
        .args(["deploy", "--dry-run", "--outdir"])
        .arg(outdir.path())
        .current_dir(package)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CI", "1")
        .output()
        .expect("wrangler");
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(output.status.success(), "wrangler deploy --dry-run: {text}");
    assert!(text.contains("--dry-run: exiting now"), "{text}");
    assert!(text.contains("model.core.wasm") && text.contains("compiled-wasm"), "{text}");
    assert!(!text.contains("WARNING"), "wrangler warns: {text}");
}

#[test]
fn the_cloudflare_worker_under_workerd_answers_as_edgeinfer_serve() {
    let Some(workerd) = workerd_binary() else { return };
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = three_model_repo(temp.path());
    let server = ServerProcess::start(&repo, &cache_dir());
    for model in MODELS {
        let out = temp.path().join(format!("worker-{model}"));
        package_ok(&repo, model, "cloudflare", &out);
        for file in
            ["worker.js", "core-modules.js", "edgeinfer-host.js", "model.js", "model.core.wasm", "wrangler.toml"]
        {
            assert!(out.join(file).is_file(), "{model}: the Worker package has {file}");
        }
        let wrangler: toml::Value =
            toml::from_str(&std::fs::read_to_string(out.join("wrangler.toml")).expect("wrangler.toml"))
                .expect("wrangler.toml is TOML");
        assert_eq!(wrangler["main"].as_str(), Some("worker.js"));
        assert_eq!(wrangler["name"].as_str(), Some(format!("edgeinfer-{model}-1").as_str()));
        assert_wrangler_accepts(&out);
        let worker = start_workerd(&workerd, &out);
        assert_answers_match("workerd", model, worker.addr, server.addr);
        println!("workerd serves {model} as edgeinfer serve does");
    }
}

#[test]
fn the_spin_package_serves_under_a_wasi_http_host_as_edgeinfer_serve() {
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = three_model_repo(temp.path());
    let server = ServerProcess::start(&repo, &cache_dir());
    for model in MODELS {
        let out = temp.path().join(format!("spin-{model}"));
        package_ok(&repo, model, "spin", &out);
        let manifest: toml::Value =
            toml::from_str(&std::fs::read_to_string(out.join("spin.toml")).expect("spin.toml")).expect("TOML");
        assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
        assert_eq!(manifest["trigger"]["http"][0]["route"].as_str(), Some("/..."));
        let component = &manifest["component"]["model"];
        assert_eq!(component["source"].as_str(), Some("model.wasm"));
        assert_eq!(component["allowed_outbound_hosts"].as_array().map(Vec::len), Some(0), "no outbound hosts");
        let packaged = std::fs::read(out.join("model.wasm")).expect("model.wasm");
        let original = std::fs::read(repo.join(model).join("1/model.wasm")).expect("component");
        assert!(packaged == original, "{model}: the component travels unchanged");
        let host = serve_component(&out.join("model.wasm"));
        assert_answers_match("spin", model, host.addr, server.addr);
    }
}

#[test]
fn packaging_refuses_what_it_cannot_ship_and_names_why() {
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = temp.path().join("repo");
    copy_version(fixtures().digits.dir(), &repo.join("digits/1"), 1);
    // Fastly's platform links its own world, not wasi:http: refused, naming both.
    let fastly = package(&repo, "digits", "fastly", &temp.path().join("fastly"));
    let text = stderr(&fastly);
    assert!(!fastly.status.success(), "fastly: {text}");
    assert!(text.contains("wasi:http/proxy") && text.contains("fastly:compute/service"), "{text}");
    assert!(!temp.path().join("fastly").exists(), "nothing written");
    // A component whose bytes no longer match its manifest is not packaged.
    let tampered = temp.path().join("tampered");
    copy_version(fixtures().digits.dir(), &tampered.join("digits/1"), 1);
    let wasm = tampered.join("digits/1/model.wasm");
    let mut bytes = std::fs::read(&wasm).expect("component");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&wasm, bytes).expect("tamper");
    let refused = package(&tampered, "digits", "cloudflare", &temp.path().join("worker"));
    assert!(!refused.status.success() && stderr(&refused).contains("sha256"), "{}", stderr(&refused));
    assert!(!temp.path().join("worker").exists(), "nothing written");
    // A component importing what JavaScript hosts do not give (a filesystem), and a core
    // module instead of a component, each with a correct digest: refused, named.
    let odd = temp.path().join("odd");
    let filesystem = wat::parse_str(
        r#"(component (import "wasi:filesystem/preopens@0.2.4" (instance (export "get-directories" (func (result (list string)))))))"#,
    )
    .expect("wat");
    crate::hostile::install(&odd.join("fs/1"), &filesystem, edgeinfer_runtime::Limits::default());
    let refused = package(&odd, "fs", "browser", &temp.path().join("fs-site"));
    assert!(!refused.status.success() && stderr(&refused).contains("wasi:filesystem/preopens"), "{}", stderr(&refused));
    let core = wat::parse_str("(module (func (export \"f\")))").expect("wat");
    crate::hostile::install(&odd.join("core/1"), &core, edgeinfer_runtime::Limits::default());
    let refused = package(&odd, "core", "cloudflare", &temp.path().join("core-worker"));
    let text = stderr(&refused);
    assert!(
        !refused.status.success() && text.contains("a core module, not a component") && !text.contains("panicked"),
        "{text}"
    );
    // Unknown models and versions, and an existing output directory.
    let unknown = package(&repo, "nope", "browser", &temp.path().join("browser"));
    assert!(!unknown.status.success() && stderr(&unknown).contains("'nope'"), "{}", stderr(&unknown));
    let exists = temp.path().join("exists");
    std::fs::create_dir(&exists).expect("mkdir");
    let refused = package(&repo, "digits", "spin", &exists);
    assert!(!refused.status.success() && stderr(&refused).contains("--replace"), "{}", stderr(&refused));
}

/// What the test page runs: for each model, `metadata()`, `infer()` on a JSON request, the
/// raw `handle()` on that model's fixture request (binary for SqueezeNet), and for digits
/// `infer()` on each bad body (which must reject with the server's status and message).
fn browser_cases() -> Value {
    let mut list = Vec::new();
    for case in cases() {
        let Case { model, body, header_length } = case;
        let mut headers = vec![json!(["content-type", "application/json"])];
        if let Some(length) = header_length {
            headers = vec![
                json!(["content-type", "application/octet-stream"]),
                json!(["inference-header-content-length", length.to_string()]),
            ];
        }
        list.push(json!({"model": model, "call": "metadata"}));
        list.push(json!({"model": model, "call": "handle", "path": format!("/v2/models/{model}/infer"),
                         "headers": headers, "body": BASE64.encode(&body)}));
    }
    let digits_json = json!({"id": "browser", "inputs": [{"name": holdout().input_name, "shape": [3, 64], "datatype": "FP32", "data": holdout().x[..3]}]});
    list.push(json!({"model": "digits", "call": "infer", "body": digits_json.to_string()}));
    let pipeline = std::fs::read_to_string(fixture("pipeline_request.json")).expect("pipeline request");
    list.push(json!({"model": "pipeline", "call": "infer", "body": pipeline}));
    for (case, body) in bad_digits_bodies() {
        list.push(json!({"model": "digits", "call": "infer", "case": case, "body": String::from_utf8_lossy(&body)}));
    }
    Value::Array(list)
}

/// `value` with every number as an f64, so `0` and `0.0` compare equal.
fn as_f64(value: &Value) -> Value {
    match value {
        Value::Number(number) => json!(number.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(as_f64).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), as_f64(v))).collect()),
        other => other.clone(),
    }
}

const TEST_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<script type="module">
  const models = {};
  for (const name of ["digits", "squeezenet", "pipeline"]) models[name] = await import(`./${name}/edgeinfer.js`);
  const base64 = (bytes) => { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); };
  const unbase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const cases = await (await fetch("./cases.json")).json();
  const results = [];
  for (const c of cases) {
    const module = models[c.model];
    try {
      if (c.call === "metadata") results.push({ ok: await module.metadata() });
      else if (c.call === "infer") results.push({ ok: await module.infer(c.body) });
      else {
        const answer = await module.handle({ method: "POST", pathWithQuery: c.path, headers: c.headers, body: unbase64(c.body) });
        results.push({ status: answer.status, headers: answer.headers, body: base64(answer.body) });
      }
    } catch (error) {
      results.push({ error: { name: error.name, status: error.status ?? null, message: error.message } });
    }
  }
  // The demo page: its metadata, then its Infer button on the request it starts with.
  const frame = document.createElement("iframe");
  frame.src = "./digits/index.html";
  document.body.append(frame);
  const text = (id) => frame.contentDocument?.getElementById(id)?.textContent ?? "";
  const until = async (ready) => { for (let i = 0; i < 1200 && !ready(); i++) await new Promise((r) => setTimeout(r, 50)); };
  await until(() => text("metadata").startsWith("{"));
  frame.contentDocument.getElementById("infer").click();
  await until(() => text("response") !== "");
  results.push({ demo: { metadata: text("metadata"), response: text("response") } });
  await fetch("./results", { method: "POST", body: JSON.stringify(results) });
</script>
"#;

#[test]
fn the_browser_module_in_headless_chromium_answers_as_edgeinfer_serve() {
    let temp = tempfile::tempdir().expect("tempdir");
    let repo = three_model_repo(temp.path());
    let site = temp.path().join("site");
    for model in MODELS {
        package_ok(&repo, model, "browser", &site.join(model));
        assert!(site.join(model).join("index.html").is_file(), "{model}: the demo page");
    }
    let cases = browser_cases();
    std::fs::write(site.join("cases.json"), cases.to_string()).expect("cases");
    std::fs::write(site.join("test.html"), TEST_PAGE).expect("page");
    let files = StaticServer::start(site.clone());
    let browser = Browser::open(&crate::monitoring::chromium(), &format!("http://{}/test.html", files.addr));
    let mut report = None;
    wait_until("the page's results", Duration::from_secs(300), || {
        report = files.take_results();
        report.is_some()
    });
    drop(browser);
    let report = report.expect("results");
    let results: Vec<Value> = serde_json::from_str(&report).expect("results JSON");
    let cases = cases.as_array().expect("cases");
    assert_eq!(results.len(), cases.len() + 1, "{report}");
    let server = ServerProcess::start(&repo, &cache_dir());
    // The demo page showed the metadata and answered its starting request (zeros).
    let demo = &results[cases.len()]["demo"];
    let shown: Value = serde_json::from_str(demo["metadata"].as_str().expect("metadata")).expect("metadata JSON");
    assert_eq!(shown, get(server.addr, "/v2/models/digits/versions/1").json(), "the demo page's metadata");
    let answered: Value = serde_json::from_str(demo["response"].as_str().expect("response"))
        .unwrap_or_else(|_| panic!("the demo page's Infer answered {}", demo["response"]));
    assert_eq!(answered["model_name"], "digits");
    assert_eq!(answered["outputs"][0]["shape"], json!([1]), "{answered}");

    for (case, result) in cases.iter().zip(&results) {
        let model = case["model"].as_str().expect("model");
        let label = format!("{model} {} {}", case["call"], case["case"]);
        match case["call"].as_str() {
            Some("metadata") => {
                let theirs = get(server.addr, &format!("/v2/models/{model}/versions/1"));
                assert_eq!(result["ok"], theirs.json(), "{label}: {result}");
            }
            Some("handle") => {
                let mine = Reply {
                    status: result["status"].as_u64().expect("status") as u16,
                    headers: serde_json::from_value(result["headers"].clone()).expect("headers"),
                    body: BASE64.decode(result["body"].as_str().expect("body")).expect("base64"),
                };
                let body = BASE64.decode(case["body"].as_str().expect("body")).expect("base64");
                let headers: Vec<(String, String)> = serde_json::from_value(case["headers"].clone()).expect("headers");
                let headers: Vec<(&str, String)> = headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
                let theirs = request(server.addr, "POST", case["path"].as_str().expect("path"), &headers, &body);
                assert_eq!(mine.status, 200, "{label}: {}", mine.text());
                assert_eq!(comparable(&mine), comparable(&theirs), "{label}: the bytes differ");
            }
            _ => {
                let body = case["body"].as_str().expect("body").as_bytes();
                let theirs = request(
                    server.addr,
                    "POST",
                    &format!("/v2/models/{model}/infer"),
                    &[("Content-Type", "application/json".into())],
                    body,
                );
                if theirs.status == 200 {
                    // Equal as numbers (JavaScript prints 0.0 as 0; the raw `handle()` calls
                    // above compare bytes).
                    assert_eq!(
                        as_f64(&result["ok"]["outputs"]),
                        as_f64(&theirs.json()["outputs"]),
                        "{label}: {result}"
                    );
                    assert_eq!(result["ok"]["model_name"], model, "{label}");
                } else {
                    assert_eq!(result["error"]["name"], "InferenceError", "{label}: {result}");
                    assert_eq!(result["error"]["status"].as_u64(), Some(u64::from(theirs.status)), "{label}: {result}");
                    assert_eq!(result["error"]["message"], theirs.json()["error"], "{label}");
                }
            }
        }
    }
    println!("{} browser calls answered as edgeinfer serve", results.len());
}
