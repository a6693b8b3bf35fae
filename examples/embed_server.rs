//! Embedding edgeinfer in an existing hyper server: a custom `/predict` route that takes 64
//! pixel values and answers the digit, next to edgeinfer's own OIP server on another port.
//! (`examples/embed.rs` shows the runtime alone, without any server.)
//!
//! `cargo run --release -p edgeinfer-server --example embed_server` then
//! `curl -s -X POST localhost:8080/predict -d '[0, 0, 0.3, ...64 values]'`

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{
    CompileRequest, LimitOverrides, Limits, ModelRepository, Runtime, RuntimeConfig, compile_model,
};
use edgeinfer_server::{ModelRegistry, ServerConfig, start};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let repo_dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/embed-server-repo"));
    if !repo_dir.join("digits/1/manifest.toml").exists() {
        let onnx = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/digits.onnx"))?;
        let request = CompileRequest {
            onnx: &onnx,
            source_file: "digits.onnx".into(),
            name: "digits".into(),
            version: 1,
            repo: repo_dir.to_path_buf(),
            limits: Limits::default(),
            examples: Vec::new(),
            reference: None,
            text: None,
        };
        compile_model(&runtime, &request, &|step: &str| eprintln!("compile: {step}"))?;
    }
    let repo = ModelRepository::open(repo_dir)?;
    let digits = Arc::new(repo.load(&runtime, "digits", None)?);

    // edgeinfer's own OIP v2 server on 8001, sharing the runtime.
    let registry = Arc::new(ModelRegistry::new(runtime.clone(), repo));
    registry.load_all()?;
    let oip = start(registry, ServerConfig { listen: "127.0.0.1:8001".parse()?, ..ServerConfig::default() }).await?;
    println!("OIP v2 on http://{}, /predict on http://127.0.0.1:8080", oip.addr);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let digits = digits.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let digits = digits.clone();
                async move { Ok::<_, Infallible>(predict(digits, request).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Parses `[f32; 64]`, runs the model on a blocking thread, answers `{"digit": N}`.
async fn predict(
    model: Arc<edgeinfer_runtime::LoadedModel>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{{\"error\": \"{e}\"}}")),
    };
    let pixels: Vec<f32> = match serde_json::from_slice(&body) {
        Ok(pixels) => pixels,
        Err(e) => return reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": e.to_string()}).to_string()),
    };
    let input = Tensor {
        name: "X".into(),
        datatype: Datatype::Fp32,
        shape: vec![1, pixels.len() as u64],
        data: pixels.iter().flat_map(|p| p.to_le_bytes()).collect(),
    };
    let outcome =
        tokio::task::spawn_blocking(move || model.infer(vec![input], &["label".into()], LimitOverrides::default()))
            .await;
    match outcome {
        Ok(Ok(outcome)) => {
            let label =
                outcome.outputs[0].data.get(..8).map_or(-1, |b| i64::from_le_bytes(b.try_into().unwrap_or([0xff; 8])));
            reply(StatusCode::OK, serde_json::json!({"digit": label, "fuel_used": outcome.fuel_used}).to_string())
        }
        Ok(Err(error)) if error.is_caller_fault() => {
            reply(StatusCode::BAD_REQUEST, serde_json::json!({"error": error.to_string()}).to_string())
        }
        Ok(Err(error)) => {
            reply(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": error.to_string()}).to_string())
        }
        Err(error) => {
            reply(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": error.to_string()}).to_string())
        }
    }
}
