//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, generated from
//! `proto/grpc_service.proto`), with gRPC health checking and server reflection. Everything
//! behind the transport is the REST server's: the same registry and deployments, auth
//! scopes, admission, limits, batching, statistics and metrics; an inference is framed as a
//! v2 binary request body and run by the same pipeline (`service::run`).

pub mod codec;
mod status;
mod tensors;
mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::App;
use super::body::{ReceivedBody, blocking};
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
        .add_service(inference)
        .add_service(health_service)
        .add_service(reflection.0)
        .add_service(reflection.1);
    let served = match tls {
        Some(tls) => router.serve_with_incoming_shutdown(tls::incoming(listener, tls), shutdown).await,
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
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
        let peer = request.remote_addr().map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a: SocketAddr| a.ip());
        let authorization = request.metadata().get("authorization").map(|v| v.as_bytes());
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let needed = required_scope(&method, &segments);
        let line = format!("gRPC {method} {path}");
        self.app.security.admit(peer, authorization, needed.as_ref(), &line).map_err(|d| status_of(d.into()))
    }
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
        let message = request.get_ref();
        let path = match message.model_version.as_str() {
            "" => format!("/v2/models/{}/infer", message.model_name),
            v => format!("/v2/models/{}/versions/{v}/infer", message.model_name),
        };
        let caller = self.admit(&request, Method::POST, &path)?;
        let route = self.app.registry.route(&message.model_name, version(&message.model_version)?).map_err(api)?;
        let framed = tensors::request_body(message).map_err(|e| api(crate::Error::Protocol(e)))?;
        let app = self.app.clone();
        let body = async move { ReceivedBody::held(&app, Bytes::from(framed.bytes)) };
        let action = format!("gRPC ModelInfer {path}");
        let answer =
            super::service::run(self.app.clone(), route, caller, action, body, Some(framed.header_length.to_string()))
                .await
                .map_err(status_of)?;
        tensors::response(answer).map(Response::new).map_err(Status::internal)
    }

    type ModelStreamInferStream = tonic::codegen::BoxStream<ModelStreamInferResponse>;

    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        Err(Status::unimplemented("ModelStreamInfer is not served by edgeinfer; send each request with ModelInfer"))
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
