//! The Open Inference Protocol over gRPC: Triton's Python gRPC client unchanged (metadata,
//! raw and typed contents bit-equal to REST, a version-pinned request, statistics, health, a
//! table of hostile requests), and a hot swap under gRPC load that fails no request.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgeinfer_runtime::ModelRepository;
use edgeinfer_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer_server::grpc::proto::model_infer_request::InferInputTensor;
use edgeinfer_server::grpc::proto::{InferTensorContents, ModelInferRequest};
use edgeinfer_server::{ModelRegistry, ServerConfig};

use crate::common::*;
use crate::server::TestServer;

fn grpc_config(max_body_bytes: usize) -> ServerConfig {
    ServerConfig { grpc_listen: Some("127.0.0.1:0".parse().expect("addr")), max_body_bytes, ..ServerConfig::default() }
}

#[test]
fn triton_grpc_client_works_unchanged() {
    let max_body = 1 << 20;
    let server = TestServer::start(&fixtures().repo, grpc_config(max_body));
    let grpc = server.grpc_addr.expect("gRPC listens");
    let script = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("tests/python/triton_grpc_client.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(grpc.to_string())
        .arg(server.addr.to_string())
        .arg(fixture("digits_holdout.json"))
        .arg(max_body.to_string())
        .output()
        .expect("python3 with tests/python/requirements.txt");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("ok"), "{text}");
}

fn digits_request(rows: usize) -> ModelInferRequest {
    let holdout = holdout();
    let values: Vec<f32> = holdout.x[..rows].iter().flatten().copied().collect();
    ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![InferInputTensor {
            name: holdout.input_name.clone(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 64],
            parameters: Default::default(),
            contents: Some(InferTensorContents { fp32_contents: values, ..Default::default() }),
        }],
        ..Default::default()
    }
}

#[test]
fn a_hot_swap_under_grpc_load_fails_no_request() {
    let repo = tempfile::tempdir().expect("repo");
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/1"), 1);
    let registry = Arc::new(ModelRegistry::new(runtime(), ModelRepository::open(repo.path()).expect("repo")));
    registry.load_all().expect("load");
    let server = TestServer::with_registry(registry.clone(), grpc_config(8 << 20));
    let url = format!("http://{}", server.grpc_addr.expect("gRPC listens"));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            clients.spawn(async move {
                let mut client = GrpcInferenceServiceClient::connect(url).await.expect("connect");
                let (mut versions, mut failures) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match client.model_infer(digits_request(2)).await {
                        Ok(answer) => versions.push(answer.into_inner().model_version),
                        Err(status) => failures.push(status.to_string()),
                    }
                }
                (versions, failures)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    copy_version(fixtures().digits.dir(), &repo.path().join("digits/2"), 2);
    registry.load_model("digits").expect("load version 2");
    let body = serde_json::json!({"split": {"2": 100}, "reason": "blue/green under gRPC load"});
    let swapped =
        crate::http::request(server.addr, "PUT", "/v2/admin/models/digits/traffic", &[], body.to_string().as_bytes());
    assert_eq!(swapped.status, 200, "{}", swapped.text());
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let mut answered = Vec::new();
    for task in load {
        let (versions, failures) = clients.block_on(task).expect("client task");
        assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(3)]);
        answered.extend(versions);
    }
    let seen: BTreeSet<&str> = answered.iter().map(String::as_str).collect();
    assert!(answered.len() > 50, "only {} requests answered", answered.len());
    assert_eq!(seen, BTreeSet::from(["1", "2"]), "versions answering");
    assert_eq!(answered.last().map(String::as_str), Some("2"), "the swap did not stick");
}

/// One value for the hostile `slow` model (it spins until its deadline).
fn slow_request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "slow".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1],
            parameters: Default::default(),
            contents: Some(InferTensorContents { fp32_contents: vec![1.0], ..Default::default() }),
        }],
        ..Default::default()
    }
}

/// Bearer tokens in the `authorization` metadata, with the scopes REST asks for, and the
/// request deadline, each answered with its gRPC code.
#[test]
fn tokens_scopes_and_deadlines_map_to_grpc_codes() {
    use tonic::Code;
    let secured = crate::security::secured(&[]);
    let server = TestServer::start(
        secured.repo.path(),
        ServerConfig { grpc_listen: Some("127.0.0.1:0".parse().expect("addr")), ..crate::security::config(&secured) },
    );
    let url = format!("http://{}", server.grpc_addr.expect("gRPC listens"));
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let slow = slow_request();
    let cases: Vec<(Option<&str>, ModelInferRequest, Option<Code>)> = vec![
        (None, digits_request(1), Some(Code::Unauthenticated)),
        (Some("not-a-token"), digits_request(1), Some(Code::Unauthenticated)),
        (Some("reader"), digits_request(1), Some(Code::PermissionDenied)),
        (Some("slow"), digits_request(1), Some(Code::PermissionDenied)),
        (Some("digits"), digits_request(1), None),
        (Some("any-model"), digits_request(1), None),
        (Some("slow"), slow, Some(Code::DeadlineExceeded)),
    ];
    tokio.block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(url).await.expect("connect");
        for (token, message, want) in cases {
            let mut request = tonic::Request::new(message);
            if let Some(token) = token {
                let value = format!("Bearer {}", secured.tokens.get(token).map_or(token, String::as_str));
                request.metadata_mut().insert("authorization", value.parse().expect("metadata"));
            }
            let got = client.model_infer(request).await.err().map(|status| status.code());
            assert_eq!(got, want, "token {token:?}");
        }
    });
}

/// The client's `grpc-timeout` becomes the request's deadline inside the sandbox: a model that
/// spins for its 5 s limit is stopped at the client's 200 ms, not left running.
#[test]
fn the_clients_grpc_timeout_stops_the_sandbox() {
    use crate::hostile::{INFINITE_LOOP, componentize, hostile_core, install};
    let repo = tempfile::tempdir().expect("repo");
    let wasm = componentize(&hostile_core(INFINITE_LOOP, ""));
    let limits = edgeinfer_runtime::Limits { fuel: u64::MAX / 2, timeout_ms: 5_000, memory_mb: 64 };
    install(&repo.path().join("slow/1"), &wasm, limits);
    let server = TestServer::start(repo.path(), grpc_config(1 << 20));
    let url = format!("http://{}", server.grpc_addr.expect("gRPC listens"));
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let started = std::time::Instant::now();
    let status = tokio.block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(url).await.expect("connect");
        let mut request = tonic::Request::new(slow_request());
        request.set_timeout(Duration::from_millis(200));
        client.model_infer(request).await.expect_err("the model never answers")
    });
    // The client gives up at its timeout as the server does: whichever speaks first.
    assert!(matches!(status.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{status:?}");
    // The sandbox itself stopped at the client's deadline: the failure is counted long before
    // the model's own 5 s limit.
    let failures = || {
        let stats = crate::http::get(server.addr, "/v2/models/slow/stats").json();
        stats["model_stats"][0]["inference_stats"]["fail"]["count"].as_u64().unwrap_or(0)
    };
    wait_until("the stopped request counted", Duration::from_millis(2_500), || failures() == 1);
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
}
