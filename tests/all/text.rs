//! Raw text in, labels out: `edgeinfer compile --tokenizer tokenizer.json [--labels FILE]`
//! (tests/text: three tokenizers trained by make_fixtures.py, a token-echo model, a corpus).
//!
//! Tokens are compared with the Python `tokenizers` library's on the corpus (unicode,
//! accents, empty and long strings); the zoo's BERT classifier is served with a tokenizer and
//! labels and driven by Triton's HTTP and gRPC clients sending strings (checked against
//! onnxruntime on Python's tokens), and through the component's own wasi:http handler.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{LimitOverrides, LoadedModel};
use edgeinfer_server::ServerConfig;
use serde_json::{Value, json};

use crate::common::*;
use crate::http::post_json;
use crate::server::TestServer;
use crate::wasi_http::serve_component;

const TOKENIZERS: [&str; 3] = ["wordpiece", "bpe", "unigram"];

fn text_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/text"))
}

fn corpus() -> Vec<String> {
    serde_json::from_slice(&std::fs::read(text_dir().join("corpus.json")).expect("corpus")).expect("corpus json")
}

/// One repository with every text model of these tests, compiled once per run with the CLI.
struct TextRepo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn text_repo() -> &'static TextRepo {
    static REPO: OnceLock<TextRepo> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = tempfile::tempdir().expect("repo");
        let path = dir.path().to_path_buf();
        let text = text_dir();
        for tokenizer in TOKENIZERS {
            let out =
                compile_text(&path, &text.join("echo_tokens.onnx"), &format!("echo-{tokenizer}"), tokenizer, None);
            assert!(out.status.success(), "compiling echo-{tokenizer}: {}", stderr(&out));
        }
        let bert = text.join("../zoo/models/bert_classifier.onnx");
        let out = compile_text(&path, &bert, "sentiment", "wordpiece", Some(&text.join("sentiment.labels")));
        assert!(out.status.success(), "compiling sentiment: {}", stderr(&out));
        TextRepo { _dir: dir, path }
    })
}

fn compile_text(repo: &Path, onnx: &Path, name: &str, tokenizer: &str, labels: Option<&Path>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeinfer"));
    command
        .arg("compile")
        .arg(onnx)
        .args(["--name", name, "--version", "1", "--repo"])
        .arg(repo)
        .arg("--tokenizer")
        .arg(text_dir().join(format!("{tokenizer}.tokenizer.json")))
        .env("EDGEINFER_CACHE_DIR", cache_dir());
    if let Some(labels) = labels {
        command.arg("--labels").arg(labels);
    }
    command.output().expect("run edgeinfer compile")
}

/// A BYTES tensor of strings, as the binary extension lays them out.
fn strings(name: &str, items: &[String]) -> Tensor {
    let mut data = Vec::new();
    for item in items {
        data.extend_from_slice(&(item.len() as u32).to_le_bytes());
        data.extend_from_slice(item.as_bytes());
    }
    Tensor { name: name.into(), datatype: Datatype::Bytes, shape: vec![items.len() as u64], data: data.into() }
}

/// What Python's `tokenizers` makes of `texts` (tests/text/expected_tokens.py).
fn python_tokens(tokenizer: &str, texts: &[String]) -> Value {
    let mut child = Command::new("python3")
        .arg(text_dir().join("expected_tokens.py"))
        .arg(text_dir().join(format!("{tokenizer}.tokenizer.json")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with tests/python/requirements.txt");
    serde_json::to_writer(child.stdin.take().expect("stdin"), texts).expect("write corpus");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "expected_tokens.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tokens json")
}

fn rows(tensor: &Tensor) -> Vec<Vec<i64>> {
    let width = tensor.shape[1] as usize;
    i64s(&tensor.data).chunks(width.max(1)).map(<[i64]>::to_vec).collect()
}

#[test]
fn the_component_tokenizes_exactly_as_the_python_tokenizers_library() {
    let texts = corpus();
    for tokenizer in TOKENIZERS {
        let model = LoadedModel::load(&runtime(), &text_repo().path.join(format!("echo-{tokenizer}/1"))).expect("load");
        let inputs: Vec<(String, Datatype, Vec<i64>)> =
            model.manifest().inputs.iter().map(|s| (s.name.clone(), s.datatype, s.shape.clone())).collect();
        assert_eq!(inputs, vec![("text".to_string(), Datatype::Bytes, vec![-1])], "{tokenizer}: served inputs");
        let outcome = model.infer(vec![strings("text", &texts)], &[], LimitOverrides::default()).expect("infer");
        let expected = python_tokens(tokenizer, &texts);
        for (input, seen) in [
            ("input_ids", "input_ids_seen"),
            ("attention_mask", "attention_mask_seen"),
            ("token_type_ids", "token_type_ids_seen"),
        ] {
            let tensor = outcome.outputs.iter().find(|t| t.name == seen).expect(seen);
            let want: Vec<Vec<i64>> = serde_json::from_value(expected[input].clone()).expect("rows");
            let got = rows(tensor);
            for (row, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{tokenizer}: {input} of {:?}", texts[row]);
            }
            assert_eq!(got.len(), want.len(), "{tokenizer}: {input} rows");
        }
        // One string alone pads to its own length, not the corpus's.
        let alone = model.infer(vec![strings("text", &texts[..1])], &[], LimitOverrides::default()).expect("infer one");
        let want: Vec<Vec<i64>> =
            serde_json::from_value(python_tokens(tokenizer, &texts[..1])["input_ids"].clone()).expect("rows");
        assert_eq!(rows(&alone.outputs[0]), want, "{tokenizer}: a batch of one");
    }
}

#[test]
fn a_text_classifier_answers_triton_clients_sending_strings_with_labels() {
    let config = ServerConfig { grpc_listen: Some("127.0.0.1:0".parse().expect("addr")), ..ServerConfig::default() };
    let server = TestServer::start(&text_repo().path, config);
    let text = text_dir();
    let mut child = Command::new("python3")
        .arg(text.join("triton_text_client.py"))
        .arg(server.addr.to_string())
        .arg(server.grpc_addr.expect("gRPC listens").to_string())
        .arg("sentiment")
        .arg(text.join("../zoo/models/bert_classifier.onnx"))
        .arg(text.join("wordpiece.tokenizer.json"))
        .arg(text.join("sentiment.labels"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with tests/python/requirements.txt");
    serde_json::to_writer(child.stdin.take().expect("stdin"), &corpus()).expect("write corpus");
    let out = child.wait_with_output().expect("python3");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    let seen: Value = serde_json::from_str(said.trim()).expect("one JSON line");
    for kind in ["http", "http-json", "grpc"] {
        assert_eq!(seen[kind]["rows"], corpus().len(), "{kind}: {said}");
    }
}

#[test]
fn the_wasi_http_handler_takes_strings_too() {
    let body = json!({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["great food, excellent price", ""]}],
        "outputs": [{"name": "label"}, {"name": "logits"}],
    });
    let component = serve_component(&text_repo().path.join("sentiment/1/model.wasm"));
    let direct = post_json(component.addr, "/v2/models/sentiment/infer", &body);
    assert_eq!(direct.status, 200, "{}", direct.text());
    let server = TestServer::start(&text_repo().path, ServerConfig::default());
    let hosted = post_json(server.addr, "/v2/models/sentiment/infer", &body);
    assert_eq!(hosted.status, 200, "{}", hosted.text());
    let outputs = |reply: &crate::http::Reply| -> Value {
        let v: Value = serde_json::from_str(&reply.text()).expect("json");
        v["outputs"].clone()
    };
    assert_eq!(outputs(&direct), outputs(&hosted), "the component alone and edgeinfer serve agree");
    let labels: Vec<String> = std::fs::read_to_string(text_dir().join("sentiment.labels"))
        .expect("labels")
        .lines()
        .map(String::from)
        .collect();
    let answered = outputs(&direct);
    let label = answered.as_array().expect("outputs").iter().find(|o| o["name"] == "label").expect("a label output");
    assert_eq!(label["datatype"], "BYTES");
    assert_eq!(label["shape"], json!([2]));
    for name in label["data"].as_array().expect("label data") {
        assert!(labels.contains(&name.as_str().expect("a string").to_string()), "{name} is not a label");
    }
}

#[test]
fn bad_text_requests_get_400_naming_the_input() {
    let server = TestServer::start(&text_repo().path, ServerConfig::default());
    let path = "/v2/models/sentiment/infer";
    let cases = [
        (json!({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}), "BYTES"),
        (
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2, 2], "data": ["a", "b", "c", "d"]}]}),
            "[2, 2]",
        ),
        (json!({"inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [1, 1], "data": [1]}]}), "text"),
        (json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]}), "no strings"),
        (
            json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}], "outputs": [{"name": "nope"}]}),
            "nope",
        ),
    ];
    for (body, says) in cases {
        let reply = post_json(server.addr, path, &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert!(reply.text().contains(says), "{body}: {} does not say {says}", reply.text());
    }
    // Invalid UTF-8 through the binary extension.
    let header = br#"{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":6}}]}"#;
    let mut raw = header.to_vec();
    raw.extend_from_slice(&[2, 0, 0, 0, 0xff, 0xfe]);
    let reply = crate::http::request(
        server.addr,
        "POST",
        path,
        &[
            ("Inference-Header-Content-Length", header.len().to_string()),
            ("Content-Type", "application/octet-stream".into()),
        ],
        &raw,
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("UTF-8"), "{}", reply.text());
    assert_digits_free(&server);
}

/// The server still answers after the bad requests.
fn assert_digits_free(server: &TestServer) {
    let body = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["fine"]}]});
    assert_eq!(post_json(server.addr, "/v2/models/sentiment/infer", &body).status, 200);
}

#[test]
fn a_tokenizer_that_does_not_fit_the_model_is_refused_at_compile_time_naming_why() {
    let repo = tempfile::tempdir().expect("repo");
    let digits = fixture("digits.onnx");
    let bert = text_dir().join("../zoo/models/bert_classifier.onnx");
    let broken = repo.path().join("broken.tokenizer.json");
    std::fs::write(&broken, b"{\"model\": {\"type\": \"Nope\"}}").expect("write");
    let five = repo.path().join("five.labels");
    std::fs::write(&five, "a\nb\nc\nd\ne\n").expect("write");
    let cases: [(&Path, &str, Option<&Path>, &str); 3] = [
        (&digits, "wordpiece", None, "is not token ids"),
        (&bert, "wordpiece", Some(&five), "5 labels"),
        (&bert, "broken", None, "cannot read the tokenizer"),
    ];
    for (i, (onnx, tokenizer, labels, says)) in cases.into_iter().enumerate() {
        let out = if tokenizer == "broken" {
            Command::new(env!("CARGO_BIN_EXE_edgeinfer"))
                .arg("compile")
                .arg(onnx)
                .args(["--name", "refused", "--version", &(i + 1).to_string(), "--repo"])
                .arg(repo.path())
                .arg("--tokenizer")
                .arg(&broken)
                .env("EDGEINFER_CACHE_DIR", cache_dir())
                .output()
                .expect("run")
        } else {
            compile_text(repo.path(), onnx, "refused", tokenizer, labels)
        };
        let said = stderr(&out);
        assert!(!out.status.success(), "{onnx:?} with {tokenizer} compiled");
        assert!(said.contains(says), "{said} does not say {says}");
        assert!(!said.contains("panicked"), "{said}");
    }
}
