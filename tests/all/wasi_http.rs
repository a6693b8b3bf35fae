//! The compiled demo component's own `wasi:http/incoming-handler`, run in-process by
//! `wasmtime-wasi-http` (the crate `wasmtime serve` is built on) behind a loopback hyper
//! server, with no edgeinfer host involved: it answers as `edgeinfer serve` does. Also its
//! WIT world, and `spin.toml`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use edgeinfer_server::ServerConfig;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::sync::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::common::*;
use crate::http::*;
use crate::server::{TestServer, digits_request};

/// What a `wasmtime serve`-like host gives each request: the proxy world's WASI and wasi:http.
struct HttpState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutgoingHttp,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Outgoing requests are refused, as a model needs none.
pub struct NoOutgoingHttp;

type OutgoingResponse =
    (hyper::Response<WasiBody>, Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>);

impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: hyper::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _done: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<OutgoingResponse>> + Send> {
        Box::new(std::future::ready(Err(wasmtime_wasi_http::Error::HttpRequestDenied)))
    }
}

/// The digits component served through its incoming-handler on a loopback port.
/// A model component answering HTTP itself (wasi:http), as under Spin or `wasmtime serve`.
pub struct ComponentServer {
    _tokio: tokio::runtime::Runtime,
    /// Where it listens.
    pub addr: SocketAddr,
}

fn component_server() -> &'static ComponentServer {
    static SERVER: OnceLock<ComponentServer> = OnceLock::new();
    SERVER.get_or_init(|| serve_component(&fixtures().digits.dir().join("model.wasm")))
}

/// Serves the model component at `path` as a wasi:http proxy on a loopback port.
pub fn serve_component(path: &std::path::Path) -> ComponentServer {
    {
        let runtime = runtime();
        let wasm = std::fs::read(path).expect("component");
        let component = runtime.compile(&wasm, &edgeinfer_runtime::sha256_hex(&wasm)).expect("compile");
        let mut linker = Linker::<HttpState>::new(runtime.engine());
        // Only the wasi:http/proxy world, as the strictest wasi:http hosts give.
        wasmtime_wasi_http::p2::add_to_linker_sync(&mut linker).expect("wasi:http/proxy");
        let pre = ProxyPre::new(linker.instantiate_pre(&component).expect("instantiate_pre")).expect("proxy world");
        let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let listener = tokio.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let pre = pre.clone();
                let service = service_fn(move |request| handle(pre.clone(), request));
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        ComponentServer { _tokio: tokio, addr }
    }
}

/// One request, one fresh instance, as `wasmtime serve` does it.
async fn handle(
    pre: ProxyPre<HttpState>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<HyperOutgoingBody>, Infallible> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let engine = pre.engine().clone();
    let call = tokio::task::spawn_blocking(move || -> wasmtime::Result<()> {
        let state = HttpState {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutgoingHttp,
        };
        let mut store = Store::new(&engine, state);
        store.set_fuel(u64::MAX / 2)?;
        store.set_epoch_deadline(60_000);
        let request = store.data_mut().http().new_incoming_request(Scheme::Http, request)?;
        let response = store.data_mut().http().new_response_outparam(sender)?;
        let proxy = pre.instantiate(&mut store)?;
        proxy.wasi_http_incoming_handler().call_handle(&mut store, request, response)
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        outcome => {
            let trap = call.await.map(|r| r.err().map(|e| format!("{e:#}")));
            panic!("the handler sent no response ({:?}); call: {trap:?}", outcome.err());
        }
    }
}

/// `edgeinfer serve` on the same component.
fn host() -> TestServer {
    TestServer::start(&fixtures().repo, ServerConfig::default())
}

/// The body from `"outputs":` on: the part both servers must write byte for byte.
pub fn outputs_text(reply: &Reply) -> String {
    let text = reply.text();
    let at = text.find("\"outputs\":").unwrap_or_else(|| panic!("no outputs in {text}"));
    text[at..].to_string()
}

#[test]
fn health_metadata_and_ready_answer_as_edgeinfer_serve() {
    let (component, server) = (component_server().addr, host());
    let host = server.addr;
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/digits",
        "/v2/models/digits/ready",
        "/v2/models/digits/versions/1",
    ] {
        let (ours, theirs) = (get(component, path), get(host, path));
        assert_eq!(ours.status, 200, "{path}: {}", ours.text());
        assert_eq!(ours.json(), theirs.json(), "{path}");
        assert_eq!(ours.header("content-type"), Some("application/json"));
    }
}

#[test]
fn infer_outputs_are_byte_identical_to_edgeinfer_serve() {
    let (component, server) = (component_server().addr, host());
    let host = server.addr;
    let holdout = holdout();
    for rows in [1, 5] {
        let request = digits_request(rows);
        let (ours, theirs) = (
            post_json(component, "/v2/models/digits/infer", &request),
            post_json(host, "/v2/models/digits/infer", &request),
        );
        assert_eq!(ours.status, 200, "{}", ours.text());
        assert_eq!(outputs_text(&ours), outputs_text(&theirs));
        let answer = ours.json();
        assert_eq!(answer["model_name"], "digits");
        assert_eq!(answer["model_version"], "1");
        assert_eq!(answer["id"], "req-7");
        let labels: Vec<i64> =
            answer["outputs"][0]["data"].as_array().expect("labels").iter().map(|v| v.as_i64().expect("i64")).collect();
        assert_eq!(labels, holdout.ort_labels[..rows]);
    }
    // Requested outputs and the binary extension go through the same shared codec.
    let request = json!({
        "inputs": digits_request(2)["inputs"],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}],
    });
    let (ours, theirs) = (
        post_json(component, "/v2/models/digits/infer", &request),
        post_json(host, "/v2/models/digits/infer", &request),
    );
    assert_eq!(ours.status, 200, "{}", ours.text());
    // The JSON parts differ only by the host's `parameters.fuel_used`; the binary parts match.
    let binary = |reply: &Reply| {
        let length: usize =
            reply.header("inference-header-content-length").expect("binary response").parse().expect("length");
        reply.body[length..].to_vec()
    };
    assert_eq!(binary(&ours), binary(&theirs));
    assert_eq!(binary(&ours).len(), 2 * 10 * 4, "two rows of ten FP32 probabilities");
    assert_eq!(outputs_text(&ours), outputs_text(&theirs));
}

/// Bodies `edgeinfer serve` refuses with 400 for the digits model, each named.
pub fn bad_digits_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let input = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "X", "shape": shape, "datatype": datatype, "data": data}]});
    let bodies: Vec<(&'static str, Vec<u8>)> = vec![
        ("not JSON", b"{not json".to_vec()),
        ("no inputs", br#"{"outputs": []}"#.to_vec()),
        ("wrong width", input(json!([1, 3]), "FP32", json!([1, 2, 3])).to_string().into_bytes()),
        ("data shorter than shape", input(json!([1, 64]), "FP32", json!([1, 2])).to_string().into_bytes()),
        ("wrong datatype", input(json!([1, 64]), "INT32", json!(vec![1; 64])).to_string().into_bytes()),
        ("unknown datatype", input(json!([1, 64]), "FP8", json!(vec![1; 64])).to_string().into_bytes()),
        (
            "unknown input",
            json!({"inputs": [{"name": "Y", "shape": [1], "datatype": "FP32", "data": [1]}]}).to_string().into_bytes(),
        ),
        (
            "unknown output",
            json!({"inputs": digits_request(1)["inputs"], "outputs": [{"name": "nope"}]}).to_string().into_bytes(),
        ),
        ("string data", input(json!([1, 64]), "FP32", json!(vec!["a"; 64])).to_string().into_bytes()),
    ];
    bodies
}

/// Requests off the inference path and the status `edgeinfer serve` answers each with.
const OTHER_REQUESTS: [(&str, &str, u16); 5] = [
    ("GET", "/v2/models/nope", 404),
    ("POST", "/v2/models/nope/infer", 404),
    ("GET", "/v2/nothing/here", 404),
    ("GET", "/v2/models/digits/infer", 405),
    ("GET", "/v2/models/digits/versions/9", 404),
];

/// Every bad digits request and every off-path request gets from `ours` (a host of the digits
/// component, named `label` in failures) the status and message `edgeinfer serve` at `server`
/// answers with.
pub fn assert_errors_match(label: &str, ours: SocketAddr, server: SocketAddr) {
    for (case, body) in bad_digits_bodies() {
        let send = |addr| {
            request(addr, "POST", "/v2/models/digits/infer", &[("Content-Type", "application/json".into())], &body)
        };
        let (mine, theirs) = (send(ours), send(server));
        assert_eq!(mine.status, 400, "{label} {case}: {}", mine.text());
        assert_eq!((mine.status, mine.json()), (theirs.status, theirs.json()), "{label} {case}");
    }
    for (method, path, status) in OTHER_REQUESTS {
        let (mine, theirs) = (request(ours, method, path, &[], b""), request(server, method, path, &[], b""));
        assert_eq!(mine.status, status, "{label} {method} {path}: {}", mine.text());
        assert_eq!((mine.status, mine.json()), (theirs.status, theirs.json()), "{label} {method} {path}");
    }
}

#[test]
fn bad_requests_get_the_same_status_and_message_as_edgeinfer_serve() {
    let server = host();
    assert_errors_match("wasmtime-wasi-http", component_server().addr, server.addr);
}

#[test]
fn component_world_exports_the_model_and_the_http_handler_and_imports_only_the_minimum() {
    let wasm = std::fs::read(fixtures().digits.dir().join("model.wasm")).expect("component");
    let wit_component::DecodedWasm::Component(resolve, world) = wit_component::decode(&wasm).expect("decode") else {
        panic!("a component, not a WIT package");
    };
    let world = &resolve.worlds[world];
    let imports: Vec<String> = world.imports.keys().map(|key| resolve.name_world_key(key)).collect();
    let exports: Vec<String> = world.exports.keys().map(|key| resolve.name_world_key(key)).collect();
    let package = world.package.expect("the world's package");
    // As `wasm-tools component wit` prints it.
    let mut printer = wit_component::WitPrinter::default();
    printer.print(&resolve, package, &[]).expect("print");
    println!("{}", printer.output);
    assert!(exports.contains(&"edgeinfer:inference/model@0.1.0".to_string()), "{exports:?}");
    assert!(exports.iter().any(|e| e.starts_with("wasi:http/incoming-handler@0.2.")), "{exports:?}");
    for import in &imports {
        assert!(MODEL_IMPORTS.iter().any(|a| import.starts_with(a)), "the component imports {import}");
    }
    assert!(!imports.iter().any(|i| i.starts_with("wasi:http/outgoing-handler")), "no outbound HTTP: {imports:?}");
}

/// The parts of Spin's manifest v2 schema `spin.toml` uses, strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinManifest {
    spin_manifest_version: u32,
    application: SpinApplication,
    trigger: SpinTriggers,
    component: std::collections::BTreeMap<String, SpinComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinApplication {
    name: String,
    #[allow(dead_code)]
    version: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinTriggers {
    http: Vec<SpinHttpTrigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinHttpTrigger {
    route: String,
    component: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinComponent {
    source: String,
    allowed_outbound_hosts: Vec<String>,
    #[allow(dead_code)]
    description: Option<String>,
    build: SpinBuild,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinBuild {
    command: String,
    watch: Vec<String>,
}

#[test]
fn spin_toml_routes_to_the_component_its_build_command_produces() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let text = std::fs::read_to_string(root.join("spin.toml")).expect("spin.toml");
    let manifest: SpinManifest = toml::from_str(&text).expect("spin.toml follows the manifest v2 schema");
    assert_eq!(manifest.spin_manifest_version, 2);
    assert!(!manifest.application.name.is_empty());
    let [trigger] = manifest.trigger.http.as_slice() else { panic!("one HTTP trigger") };
    assert_eq!(trigger.route, "/...");
    let component = manifest.component.get(&trigger.component).expect("the trigger's component is declared");
    assert!(component.allowed_outbound_hosts.is_empty(), "no outbound hosts");
    for watched in &component.build.watch {
        assert!(root.join(watched).exists(), "build.watch names a missing file {watched}");
    }
    // The build command is `edgeinfer compile`; run its arguments with this build's binary
    // into a scratch copy of its repository and find the component where `source` says.
    let args: Vec<&str> = component.build.command.split_whitespace().skip_while(|w| *w != "compile").collect();
    assert!(!args.is_empty(), "the build command runs `edgeinfer compile`: {}", component.build.command);
    let repo_at = args.iter().position(|a| *a == "--repo").expect("--repo") + 1;
    let repo = Path::new(args[repo_at]);
    let relative = Path::new(&component.source).strip_prefix(repo).expect("source lies in the build's --repo");
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgeinfer"));
    command.current_dir(root).env("EDGEINFER_CACHE_DIR", cache_dir());
    for (i, arg) in args.iter().enumerate() {
        if i == repo_at {
            command.arg(scratch.path())
        } else {
            command.arg(arg)
        };
    }
    let output = command.output().expect("run the build command");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let built = std::fs::read(scratch.path().join(relative)).expect("the component `source` names");
    let expected = std::fs::read(fixtures().digits.dir().join("model.wasm")).expect("fixture");
    assert_eq!(
        edgeinfer_runtime::sha256_hex(&built),
        edgeinfer_runtime::sha256_hex(&expected),
        "the demo component (reproducible compile)"
    );
}
