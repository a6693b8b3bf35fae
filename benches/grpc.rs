//! gRPC vs REST on the real `edgeinfer serve` binary: requests/s and p50/p99 latency for one
//! digits row per request at 1, 8 and 64 concurrent clients, over the Open Inference
//! Protocol's gRPC service (raw contents, as Triton's clients send; unary `ModelInfer` and a
//! `ModelStreamInfer` stream per client), REST with JSON, and REST with the binary tensor
//! extension. One Rust load client (tokio; one connection per client)
//! drives all three, so the figures differ only by the transport; ratios are against REST
//! JSON in the same run.
//!
//! `cargo bench --bench grpc` prints the table (`EDGEINFER_BENCH_SECS` per cell, default 4;
//! `EDGEINFER_BENCH_ONLY=gRPC` runs the transports whose label contains it, e.g. to profile).

#![allow(dead_code)]

#[path = "../tests/all/http.rs"]
mod http;
#[path = "../tests/support/soak_driver.rs"]
mod soak_driver;
#[path = "support.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeinfer_server::grpc::proto::ModelInferRequest;
use edgeinfer_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use edgeinfer_server::grpc::proto::model_infer_request::InferInputTensor;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const CLIENTS: [usize; 3] = [1, 8, 64];

/// How one run's requests travel.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Grpc,
    GrpcStream,
    RestJson,
    RestBinary,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "gRPC (raw contents)",
            Transport::GrpcStream => "gRPC stream (one in flight)",
            Transport::RestJson => "REST JSON",
            Transport::RestBinary => "REST binary",
        }
    }
}

/// One digits row in each encoding.
struct Requests {
    json: Bytes,
    binary: Bytes,
    binary_header: usize,
    grpc: ModelInferRequest,
}

impl Requests {
    fn new() -> Requests {
        let row = vec![0.25f32; 64];
        let json = serde_json::json!({"inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "data": row}]});
        let raw: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = serde_json::json!({
            "inputs": [{"name": "X", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}}],
            "parameters": {"binary_data_output": true},
        })
        .to_string();
        let mut binary = header.clone().into_bytes();
        binary.extend_from_slice(&raw);
        let grpc = ModelInferRequest {
            model_name: "digits".into(),
            inputs: vec![InferInputTensor {
                name: "X".into(),
                datatype: "FP32".into(),
                shape: vec![1, 64],
                parameters: Default::default(),
                contents: None,
            }],
            raw_input_contents: vec![Bytes::from(raw)],
            ..Default::default()
        };
        Requests { json: Bytes::from(json.to_string()), binary: Bytes::from(binary), binary_header: header.len(), grpc }
    }
}

/// A generated gRPC client over one HTTP/2 connection of its own, as light as the REST
/// clients' HTTP/1 connections: requests go straight to hyper's connection (tonic's `Channel`
/// would add a buffer task and reconnection logic to every call, client work that shares the
/// machine's two cores with the server).
async fn grpc_client(addr: SocketAddr) -> GrpcInferenceServiceClient<Http2> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("gRPC connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let origin = format!("http://{addr}").parse().expect("origin");
    GrpcInferenceServiceClient::with_origin(Http2(sender), origin)
}

/// One HTTP/2 connection as a tower service, the transport of [`grpc_client`].
#[derive(Clone)]
struct Http2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower_service::Service<hyper::Request<tonic::body::Body>> for Http2 {
    type Response = hyper::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// Seconds of CPU (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which ends with the last ')'): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// One client: its own connection, requests back to back until `until`; latencies.
async fn client(
    transport: Transport,
    rest: SocketAddr,
    grpc: SocketAddr,
    requests: Arc<Requests>,
    until: Instant,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    if transport == Transport::Grpc {
        let mut client = grpc_client(grpc).await;
        while Instant::now() < until {
            let started = Instant::now();
            let answer = client.model_infer(requests.grpc.clone()).await.expect("gRPC infer");
            assert_eq!(answer.get_ref().raw_output_contents.len(), 2);
            latencies.push(started.elapsed());
        }
        return latencies;
    }
    if transport == Transport::GrpcStream {
        let mut client = grpc_client(grpc).await;
        let (outbound, requests_stream) = tokio::sync::mpsc::channel(1);
        let mut answers = client
            .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(requests_stream))
            .await
            .expect("stream")
            .into_inner();
        while Instant::now() < until {
            let started = Instant::now();
            outbound.send(requests.grpc.clone()).await.expect("stream send");
            let answer = answers.message().await.expect("stream answer").expect("an answer per request");
            assert!(answer.error_message.is_empty(), "{}", answer.error_message);
            assert_eq!(answer.infer_response.expect("response").raw_output_contents.len(), 2);
            latencies.push(started.elapsed());
        }
        return latencies;
    }
    let stream = tokio::net::TcpStream::connect(rest).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    while Instant::now() < until {
        let mut request = hyper::Request::post("/v2/models/digits/infer").header("host", "bench");
        let body = if transport == Transport::RestJson {
            request = request.header("content-type", "application/json");
            requests.json.clone()
        } else {
            request = request
                .header("content-type", "application/octet-stream")
                .header("inference-header-content-length", requests.binary_header);
            requests.binary.clone()
        };
        let started = Instant::now();
        let response = sender.send_request(request.body(Full::new(body)).expect("request")).await.expect("send");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("body");
        latencies.push(started.elapsed());
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize]
}

fn main() {
    let seconds = std::env::var("EDGEINFER_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    // One transport only (its label contains this), e.g. to profile the server under it.
    let only = std::env::var("EDGEINFER_BENCH_ONLY").ok();
    let repo = tempfile::tempdir().expect("tempdir");
    let runtime = support::runtime(true);
    support::compile(&runtime, repo.path(), "digits.onnx", "digits");
    drop(runtime);
    let cache = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("target/bench-cache");
    let server = soak_driver::ServerProcess::start_with(repo.path(), &cache, &["--grpc-listen", "127.0.0.1:0"]);
    let grpc = server.grpc_addr.expect("gRPC address");
    let requests = Arc::new(Requests::new());
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio");
    println!(
        "| transport | clients | requests/s | p50 (ms) | p99 (ms) | requests/s vs REST JSON | server CPU per request (us) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for clients in CLIENTS {
        let mut json_rate = None;
        for transport in [Transport::RestJson, Transport::RestBinary, Transport::Grpc, Transport::GrpcStream] {
            if only.as_deref().is_some_and(|only| !transport.label().contains(only)) {
                continue;
            }
            // A short warm-up, then the measured run.
            let run = |duration: Duration| -> Vec<Vec<Duration>> {
                let until = Instant::now() + duration;
                let tasks: Vec<_> = (0..clients)
                    .map(|_| tokio.spawn(client(transport, server.addr, grpc, requests.clone(), until)))
                    .collect();
                tasks.into_iter().map(|task| tokio.block_on(task).expect("client")).collect()
            };
            run(Duration::from_millis(500));
            let (started, cpu_before) = (Instant::now(), cpu_seconds(server.pid()));
            let mut latencies: Vec<Duration> = run(Duration::from_secs(seconds)).into_iter().flatten().collect();
            let elapsed = started.elapsed().as_secs_f64();
            let server_cpu = cpu_seconds(server.pid()) - cpu_before;
            latencies.sort();
            let rate = latencies.len() as f64 / elapsed;
            let baseline = *json_rate.get_or_insert(rate);
            println!(
                "| {} | {clients} | {rate:.0} | {:.3} | {:.3} | {:.2}x | {:.0} |",
                transport.label(),
                percentile(&latencies, 50.0).as_secs_f64() * 1e3,
                percentile(&latencies, 99.0).as_secs_f64() * 1e3,
                rate / baseline,
                server_cpu / latencies.len() as f64 * 1e6,
            );
        }
    }
}
