//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, generated from
//! `proto/grpc_service.proto`), with gRPC health checking and server reflection. Everything
//! behind the transport is the REST server's: the same registry and deployments, auth
//! scopes, admission, limits, batching, statistics and metrics; an inference's protobuf
//! tensors go straight into the same pipeline (`service::run`) and its outputs straight back.

pub mod codec;
mod status;
mod tensors;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use edgeinfer_runtime::pipeline::ResponseBody;
use hyper::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::App;
use super::body::{InferenceBody, blocking};
use super::response::ApiError;
use super::security::{AuditKind, Caller, required_scope};
pub use status::status_of;

/// The generated messages and service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::*;

/// The service's file descriptor set, for server reflection.
const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/grpc_service_descriptor.bin"));

/// Serves gRPC on `listener` (over TLS when the server has `[tls]`) until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<super::security::tls::TlsReloader>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = app.config.max_body_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<GrpcInferenceServiceServer<Inference>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1 and v1alpha: grpcurl and older tools still ask v1alpha.
    let reflection = match reflection().build_v1().and_then(|v1| Ok((v1, reflection().build_v1alpha()?))) {
        Ok(reflection) => reflection,
        Err(error) => {
            tracing::error!(%error, "gRPC reflection could not start; serving without it");
            return;
        }
    };
    let inference = GrpcInferenceServiceServer::new(Inference { app })
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    let router = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted))
        .add_service(inference)
        .add_service(health_service)
        .add_service(reflection.0)
        .add_service(reflection.1);
    let served = match tls {
        Some(tls) => router.serve_with_incoming_shutdown(tls::incoming(listener, tls), shutdown).await,
        None => {
            // Small answers go out at once (h2 writes a response as several frames).
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };
    if let Err(error) = served {
        tracing::error!(%error, "the gRPC server stopped");
    }
}

/// `inference.GRPCInferenceService` over the server's state.
pub struct Inference {
    app: Arc<App>,
}

impl Inference {
    /// Authenticates the caller (bearer token in the `authorization` metadata) for what the
    /// equivalent REST request needs.
    fn admit<T>(&self, request: &Request<T>, method: Method, path: &str) -> Result<Caller, Status> {
        let sender = Sender::of(request)?;
        admit(&self.app, sender.peer, sender.authorization.as_deref(), method, path)
    }
}

/// A message over the size limit is answered RESOURCE_EXHAUSTED (as other gRPC servers do),
/// not tonic's OUT_OF_RANGE.
fn too_large_is_resource_exhausted<B>(mut response: hyper::Response<B>) -> hyper::Response<B> {
    let headers = response.headers_mut();
    let over_size = headers.get("grpc-status").is_some_and(|code| code == "11")
        && headers.get("grpc-message").is_some_and(|m| m.to_str().is_ok_and(|m| m.contains("too%20large")));
    if over_size {
        headers.insert("grpc-status", hyper::header::HeaderValue::from_static("8"));
    }
    response
}

/// Requests of one `ModelStreamInfer` stream running at once.
const STREAM_IN_FLIGHT: usize = 16;

/// Who sent a request, as its authentication needs: the peer, the `authorization` metadata
/// and the client's deadline (`grpc-timeout`).
struct Sender {
    peer: IpAddr,
    authorization: Option<Vec<u8>>,
    deadline_ms: Option<u64>,
}

impl Sender {
    fn of<T>(request: &Request<T>) -> Result<Sender, Status> {
        let metadata = request.metadata();
        Ok(Sender {
            peer: request.remote_addr().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a: SocketAddr| a.ip()),
            authorization: metadata.get("authorization").map(|v| v.as_bytes().to_vec()),
            deadline_ms: metadata.get("grpc-timeout").map(|v| grpc_timeout_ms(v.as_bytes())).transpose()?,
        })
    }
}

/// A `grpc-timeout` value (up to 8 digits and a unit: H, M, S, m, u, n) in ms, rounded up.
fn grpc_timeout_ms(value: &[u8]) -> Result<u64, Status> {
    let bad =
        || Status::invalid_argument(format!("grpc-timeout {:?} is not a gRPC timeout", String::from_utf8_lossy(value)));
    let (&unit, digits) = value.split_last().ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let amount: u64 = std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or_else(bad)?;
    let nanos_per_unit: u64 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return Err(bad()),
    };
    Ok(amount.saturating_mul(nanos_per_unit).div_ceil(1_000_000))
}

/// One `ModelInfer`: authenticated and run as the REST endpoint is, with the client's deadline.
async fn infer(app: Arc<App>, sender: &Sender, message: ModelInferRequest) -> Result<ModelInferResponse, Status> {
    let path = match message.model_version.as_str() {
        "" => format!("/v2/models/{}/infer", message.model_name),
        v => format!("/v2/models/{}/versions/{v}/infer", message.model_name),
    };
    let caller = admit(&app, sender.peer, sender.authorization.as_deref(), Method::POST, &path)?;
    let route = app.registry.route(&message.model_name, version(&message.model_version)?).map_err(api)?;
    let (request, inputs) = tensors::decode(message).map_err(|e| api(crate::Error::Protocol(e)))?;
    let held = app.clone();
    let body = async move { InferenceBody::decoded(&held, request, inputs) };
    let action = format!("gRPC ModelInfer {path}");
    let answer = super::service::run(app, route, caller, action, body, sender.deadline_ms).await.map_err(status_of)?;
    match answer {
        ResponseBody::Decoded(encoded) => tensors::response(encoded).map_err(Status::internal),
        ResponseBody::Http(_) => Err(Status::internal("a decoded request was answered with an HTTP body")),
    }
}

/// Authenticates a caller for what the equivalent REST request (`method`, `path`) needs.
fn admit(app: &App, peer: IpAddr, authorization: Option<&[u8]>, method: Method, path: &str) -> Result<Caller, Status> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let needed = required_scope(&method, &segments);
    let line = format!("gRPC {method} {path}");
    app.security.admit(peer, authorization, needed.as_ref(), &line).map_err(|d| status_of(d.into()))
}

/// A version in a request: empty means the deployment's choice.
fn version(text: &str) -> Result<Option<u64>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Status::invalid_argument(format!("model version {text:?} is not a version number")))
}

fn api(error: impl Into<ApiError>) -> Status {
    status_of(error.into())
}

fn duration(value: &Value) -> Option<StatisticDuration> {
    Some(StatisticDuration {
        count: value.get("count").and_then(Value::as_u64).unwrap_or(0),
        ns: value.get("ns").and_then(Value::as_u64).unwrap_or(0),
    })
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let name = request.get_ref().name.clone();
        self.admit(&request, Method::GET, &format!("/v2/models/{name}/ready"))?;
        let version = version(&request.get_ref().version)?;
        Ok(Response::new(ModelReadyResponse { ready: self.app.registry.describe(&name, version).is_ok() }))
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.admit(&request, Method::GET, "/v2")?;
        Ok(Response::new(ServerMetadataResponse {
            name: "edgeinfer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: ["binary_tensor_data", "model_repository", "statistics", "traffic_admin"]
                .map(String::from)
                .to_vec(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let name = request.get_ref().name.clone();
        self.admit(&request, Method::GET, &format!("/v2/models/{name}"))?;
        let served = self.app.registry.describe(&name, version(&request.get_ref().version)?).map_err(api)?;
        let manifest = served.model.manifest();
        let tensors = |signatures: &[edgeinfer_runtime::manifest::TensorSignature]| {
            signatures
                .iter()
                .map(|s| model_metadata_response::TensorMetadata {
                    name: s.name.clone(),
                    datatype: s.datatype.as_str().to_string(),
                    shape: s.shape.clone(),
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: manifest.name.clone(),
            versions: self.app.registry.versions(&name).iter().map(u64::to_string).collect(),
            platform: edgeinfer_oip::PLATFORM.into(),
            inputs: tensors(&manifest.inputs),
            outputs: tensors(&manifest.outputs),
        }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let sender = Sender::of(&request)?;
        infer(self.app.clone(), &sender, request.into_inner()).await.map(Response::new)
    }

    type ModelStreamInferStream = tonic::codegen::BoxStream<ModelStreamInferResponse>;

    /// Bidirectional streaming: one response per request, in request order, up to
    /// [`STREAM_IN_FLIGHT`] requests running at once; a failed request is answered in-stream
    /// (`error_message`) and the stream goes on.
    async fn model_stream_infer(
        &self,
        request: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let sender = Arc::new(Sender::of(&request)?);
        let mut inbound = request.into_inner();
        let (running, mut finished) = tokio::sync::mpsc::channel(STREAM_IN_FLIGHT);
        let (answers, outbound) = tokio::sync::mpsc::channel(STREAM_IN_FLIGHT);
        let app = self.app.clone();
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => return,
                    Err(status) => {
                        let failed = tokio::spawn(std::future::ready(Err(status)));
                        // (in-stream, only the message travels)
                        let _ = running.send(failed).await;
                        return;
                    }
                };
                let (app, sender) = (app.clone(), sender.clone());
                let call = tokio::spawn(async move { infer(app, &sender, message).await });
                if running.send(call).await.is_err() {
                    return; // the client went away
                }
            }
        });
        tokio::spawn(async move {
            while let Some(call) = finished.recv().await {
                let answer = match call.await {
                    Ok(Ok(response)) => {
                        ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) }
                    }
                    Ok(Err(status)) => {
                        ModelStreamInferResponse { error_message: status.message().to_string(), infer_response: None }
                    }
                    Err(_) => ModelStreamInferResponse {
                        error_message: "the request's task failed".into(),
                        infer_response: None,
                    },
                };
                if answers.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(outbound))))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let (name, version_text) = (request.get_ref().name.clone(), request.get_ref().version.clone());
        let model = (!name.is_empty()).then_some(name.as_str());
        self.admit(&request, Method::GET, &format!("/v2/models/{}/stats", model.unwrap_or("stats")))?;
        let version = version(&version_text)?;
        if let Some(model) = model {
            self.app.registry.describe(model, version).map_err(api)?;
        }
        let stats = super::service::statistics(&self.app, model, version);
        let model_stats = stats["model_stats"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let number = |key: &str| row.get(key).and_then(Value::as_u64).unwrap_or(0);
                let timing = |key: &str| duration(&row["inference_stats"][key]);
                ModelStatistics {
                    name: row["name"].as_str().unwrap_or_default().to_string(),
                    version: row["version"].as_str().unwrap_or_default().to_string(),
                    last_inference: number("last_inference"),
                    inference_count: number("inference_count"),
                    execution_count: number("execution_count"),
                    inference_stats: Some(InferStatistics {
                        success: timing("success"),
                        fail: timing("fail"),
                        queue: timing("queue"),
                        compute_input: timing("compute_input"),
                        compute_infer: timing("compute_infer"),
                        compute_output: timing("compute_output"),
                    }),
                }
            })
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        self.admit(&request, Method::POST, "/v2/repository/index")?;
        let (registry, ready) = (self.app.registry.clone(), request.get_ref().ready);
        let index = blocking(move || registry.index(ready).map_err(ApiError::from)).await.map_err(status_of)?;
        let models = index
            .into_iter()
            .map(|entry| repository_index_response::ModelIndex {
                name: entry.name,
                version: entry.version,
                state: entry.state.to_string(),
                reason: entry.reason.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let model = request.get_ref().model_name.clone();
        self.change(&request, model, true).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let model = request.get_ref().model_name.clone();
        self.change(&request, model, false).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

impl Inference {
    /// Loads or unloads `model` (admin scope), audited as the REST endpoint is.
    async fn change<T>(&self, request: &Request<T>, model: String, load: bool) -> Result<(), Status> {
        let action = if load { "load" } else { "unload" };
        let path = format!("/v2/repository/models/{model}/{action}");
        let caller = self.admit(request, Method::POST, &path)?;
        let registry = self.app.registry.clone();
        let done = blocking(move || {
            if load { registry.load_model(&model).map(drop) } else { registry.unload_model(&model) }
                .map_err(ApiError::from)
        })
        .await;
        let (outcome, reason) = match &done {
            Ok(()) => ("200".to_string(), "done".to_string()),
            Err(error) => (error.status.as_u16().to_string(), error.message.clone()),
        };
        self.app.security.audit(AuditKind::AdminChange, &caller, &format!("gRPC POST {path}"), &outcome, &reason);
        done.map_err(status_of)
    }
}
