//! edgeinfer-server: the Open Inference Protocol v2 over hyper (REST) and tonic (gRPC), both
//! calling one transport-neutral service, with the model repository and statistics
//! extensions, admission control, security, deployments, monitoring views, alerts, batch
//! jobs and graceful shutdown. `config` reads `edgeinfer.toml` and builds each subsystem's
//! own settings; no subsystem imports it.

#![deny(missing_docs)]

mod admin;
pub mod admission;
pub mod alerts;
mod body;
mod coalescer;
mod config;
mod deployment;
#[cfg(feature = "oci")]
mod follow;
mod follow_figures;
#[cfg(feature = "grpc")]
pub mod grpc;
mod history;
mod infer;
mod inline;
mod job_error;
/// Batch jobs; without the `batch` feature, an API that says they are left out.
#[cfg_attr(not(feature = "batch"), path = "jobs_off.rs")]
pub mod jobs;
mod log_limit;
pub mod metrics;
mod observer;
mod quality;
mod registry;
mod response;
pub mod rollout;
mod rollout_control;
mod routes;
pub mod security;
mod service;
mod shadow;
mod statistics;
mod timeseries;
mod ui;
mod version_monitor;
mod watcher;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub use admission::{Admission, AdmissionLimits, AdmissionSnapshot, Refusal};
pub use config::{LogFormat, ServerConfig};
pub use deployment::{Deployment, TrafficChange};
pub use history::{Change, ChangeKind, HistoryEvent, HistoryLog};
pub use observer::MonitoringConfig;
pub use quality::Task;
pub use registry::{
    Agreement, AgreementView, ChangeError, DeploymentView, IndexEntry, ModelRegistry, RefusedView, Route,
    ServedVersion, ShadowOutcome, TrafficView,
};
pub use registry::{ModelConfig, NewVersionPolicy};
pub use security::AuthMode;
pub use statistics::VersionStats;
pub use watcher::{RepositoryWatcher, watch};

pub use edgeinfer_runtime::{Error, Result};

/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Shared state of a running server.
pub struct App {
    registry: Arc<ModelRegistry>,
    config: ServerConfig,
    admission: Admission,
    shadow: shadow::ShadowRunner,
    error_log: log_limit::LogLimiter,
    security: Arc<security::Security>,
    metrics: Arc<metrics::Metrics>,
    observer: Arc<observer::Observer>,
    series: timeseries::Series,
    alerts: alerts::Alerts,
    batch: Arc<jobs::BatchJobs>,
    inline: inline::InlineGate,
    tls: Option<Arc<security::tls::TlsReloader>>,
    rollouts: rollout_control::Controller,
    /// The followed registry repositories (`follow`).
    #[cfg(feature = "oci")]
    follows: Vec<Arc<follow::FollowState>>,
}

impl App {
    /// Server state over a registry.
    fn new(
        registry: Arc<ModelRegistry>,
        config: ServerConfig,
        security: security::Security,
        observer: observer::Observer,
        external_url: String,
        batch: Arc<jobs::BatchJobs>,
        tls: Option<Arc<security::tls::TlsReloader>>,
    ) -> Arc<App> {
        let admission = Admission::new(config.admission_limits());
        let observer = Arc::new(observer);
        observer.reload_feedback_index(registry.clone());
        let shadow = shadow::ShadowRunner::start(registry.clone(), observer.clone());
        let error_log = log_limit::LogLimiter::per_second(config.max_error_logs_per_second);
        let security = Arc::new(security);
        let metrics = Arc::new(metrics::Metrics::new());
        let (audit, counted) = (security.clone(), metrics.clone());
        registry.observe_changes(Box::new(move |change: &history::Change| {
            counted.change(change);
            if change.kind == ChangeKind::Refused {
                let event = security::AuditEvent::new(
                    security::AuditKind::VersionRefused,
                    "load version",
                    "refused",
                    &change.reason,
                );
                audit.audit_event(security::AuditEvent {
                    model: Some(change.model.clone()),
                    version: change.version,
                    ..event
                });
            }
        }));
        let alerts = alerts::Alerts::new(config.alerts.clone(), external_url);
        let series = timeseries::Series::default();
        batch.start(registry.clone());
        let inline = inline::InlineGate::for_current_runtime(
            Duration::from_micros(config.inline_inference_us),
            config.max_concurrent_inferences,
        );
        Arc::new(App {
            #[cfg(feature = "oci")]
            follows: follow::states(&config),
            rollouts: rollout_control::Controller::default(),
            inline,
            tls,
            registry,
            config,
            admission,
            shadow,
            error_log,
            security,
            metrics,
            observer,
            series,
            alerts,
            batch,
        })
    }

    /// The followed registry repositories' figures, once polled (none without `follow`).
    pub fn follow_figures(&self) -> Vec<metrics::FollowFigures> {
        #[cfg(feature = "oci")]
        return self
            .follows
            .iter()
            .filter(|state| state.polled())
            .map(|state| metrics::FollowFigures {
                repository: state.repository().to_string(),
                model: state.model().to_string(),
                reachable: state.reachable(),
                counts: state.counts(),
            })
            .collect();
        #[cfg(not(feature = "oci"))]
        Vec::new()
    }

    /// Current admission counters (connections, queue, in flight, refusals, disconnects).
    pub fn admission(&self) -> AdmissionSnapshot {
        self.admission.snapshot()
    }

    /// What `GET /v2/admin/server` answers: admission counters, reloads of the tokens file
    /// and TLS certificates, repository rescans.
    pub fn server_view(&self) -> serde_json::Value {
        admin::server(self)
    }
}

/// A server running on a tokio runtime; dropping the handle does not stop it, `shutdown` does.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address, when `admin_listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// The gRPC listener's address, when `grpc_listen` is set.
    pub grpc_addr: Option<SocketAddr>,
    app: Arc<App>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _watcher: Option<RepositoryWatcher>,
}

impl RunningServer {
    /// The server's shared state (admission counters).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn shutdown(mut self) {
        self.app.batch.stop();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerRole {
    /// Everything (`admin` false: the admin API lives on its own listener and is hidden here).
    Main {
        /// Whether `/v2/admin` is served here.
        admin: bool,
    },
    /// Only the admin API and health checks.
    Admin,
}

/// Refuses settings for what this build leaves out (cargo features `grpc`, `batch`), naming
/// the feature; call it before loading models to fail fast.
pub fn check_build(config: &ServerConfig) -> Result<()> {
    if config.grpc_listen.is_some() && cfg!(not(feature = "grpc")) {
        return Err(Error::Config(
            "grpc_listen is set, but this build of edgeinfer leaves out gRPC (cargo feature `grpc`)".into(),
        ));
    }
    if !config.follow.is_empty() && cfg!(not(feature = "oci")) {
        return Err(Error::Config(
            "follow is set, but this build of edgeinfer leaves out OCI registries (cargo feature `oci`)".into(),
        ));
    }
    #[cfg(feature = "oci")]
    follow::targets(config)?;
    if config.batch_dir.is_some() && cfg!(not(feature = "batch")) {
        return Err(Error::Config(
            "batch_dir is set, but this build of edgeinfer leaves out batch jobs (cargo feature `batch`)".into(),
        ));
    }
    Ok(())
}

/// Binds `config.listen` (and `config.admin_listen`) and serves `registry` until
/// [`RunningServer::shutdown`]; with `config.watch`, the repository is watched for new and
/// removed versions meanwhile. Every setting is checked before anything is bound.
pub async fn start(registry: Arc<ModelRegistry>, config: ServerConfig) -> Result<RunningServer> {
    check_build(&config)?;
    let security = security::Security::from_settings(&config.security_settings(), registry.repository().root())?;
    let observer =
        observer::Observer::open(&config.monitoring, registry.repository().root(), config.data_key_file.as_deref())?;
    let state_dir = edgeinfer_runtime::repository::state_dir(registry.repository().root());
    let batch = jobs::BatchJobs::open(config.batch_dir.as_deref(), &state_dir, config.batch_workers)?;
    let tls = config.tls.clone().map(security::tls::TlsReloader::load).transpose()?.map(Arc::new);
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|e| Error::io(format!("binding {addr}"), e))
    };
    let listener = bind(config.listen).await?;
    let admin_listener = match config.admin_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let grpc_listener = match config.grpc_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let local = |l: &TcpListener| l.local_addr().map_err(|e| Error::io("reading the bound address", e));
    let addr = local(&listener)?;
    let admin_addr = admin_listener.as_ref().map(local).transpose()?;
    let grpc_addr = grpc_listener.as_ref().map(local).transpose()?;
    let watcher = if config.watch { Some(watch(registry.clone())?) } else { None };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let app = App::new(registry, config, security, observer, format!("{scheme}://{addr}"), batch, tls.clone());
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let main_role = ListenerRole::Main { admin: admin_listener.is_none() };
    let mut tasks =
        vec![tokio::spawn(serve(listener, app.clone(), main_role, tls.clone(), until_stopped(stopped.clone())))];
    tasks.push(tokio::spawn(evaluate_rollouts(app.clone(), until_stopped(stopped.clone()))));
    #[cfg(feature = "oci")]
    tasks.extend(follow::spawn(&app, &stopped));
    if !app.alerts.is_empty() {
        tasks.push(tokio::spawn(evaluate_alerts(app.clone(), until_stopped(stopped.clone()))));
    }
    #[cfg(feature = "grpc")]
    if let Some(grpc) = grpc_listener {
        tasks.push(tokio::spawn(grpc::serve(grpc, app.clone(), tls.clone(), until_stopped(stopped.clone()))));
    }
    if let Some(admin) = admin_listener {
        tasks.push(tokio::spawn(serve(admin, app.clone(), ListenerRole::Admin, tls, until_stopped(stopped))));
    }
    Ok(RunningServer { addr, admin_addr, grpc_addr, app, stop: Some(stop), tasks, _watcher: watcher })
}

/// Evaluates the alert rules every `alert_interval_ms` until `shutdown` resolves.
async fn evaluate_alerts(app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let period = Duration::from_millis(app.config.monitoring.alert_interval_ms);
    every(period, shutdown, || {
        let follows = app.follow_figures();
        let signals = alerts::Signals {
            follows: &follows,
            series: &app.series,
            registry: &app.registry,
            observer: &app.observer,
            queued: app.admission.snapshot().queued,
        };
        app.alerts.evaluate(&signals);
        async {}
    })
    .await;
}

/// Evaluates running rollouts every `rollout_interval_ms` until `shutdown` resolves.
async fn evaluate_rollouts(app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let period = Duration::from_millis(app.config.rollout_interval_ms.max(1));
    every(period, shutdown, || {
        let app = app.clone();
        async move {
            if !app.registry.rollouts().iter().any(|(_, r)| r.state == rollout::RolloutState::Running) {
                return; // nothing to evaluate: no blocking thread is started for nothing
            }
            // A decision appends to the history log (fsync): off the async threads.
            let _ = tokio::task::spawn_blocking(move || app.rollouts.tick(&app.registry, &app.observer)).await;
        }
    })
    .await;
}

/// Runs `work` every `period` (a late tick delays the next) until `shutdown` resolves.
async fn every<W: Future<Output = ()>>(
    period: Duration,
    shutdown: impl Future<Output = ()>,
    mut work: impl FnMut() -> W,
) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut shutdown => return,
        }
        work().await;
    }
}

/// Accepts connections until `shutdown` resolves, then drains in-flight requests.
async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    role: ListenerRole,
    tls: Option<Arc<security::tls::TlsReloader>>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let read_timeout = Duration::from_millis(app.config.request_read_timeout_ms);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, peer.ip()),
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let place = match app.admission.connection() {
            Ok(place) => place,
            Err(refusal) => {
                tokio::spawn(refuse_connection(stream, refusal));
                continue;
            }
        };
        let connection = Connection { app: app.clone(), peer, role, read_timeout, watcher: graceful.watcher() };
        match &tls {
            None => {
                tokio::spawn(async move {
                    let _place = place;
                    connection.serve(stream).await;
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor(role == ListenerRole::Admin);
                tokio::spawn(async move {
                    let _place = place;
                    match tokio::time::timeout(read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing"),
    }
}

/// One accepted connection, plain or TLS.
struct Connection {
    app: Arc<App>,
    peer: std::net::IpAddr,
    role: ListenerRole,
    read_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { app, peer, role, read_timeout, watcher } = self;
        let service = service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(routes::handle(app, request, peer, role).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(read_timeout)
            .serve_connection(TokioIo::new(io), service);
        if let Err(error) = watcher.watch(connection).await {
            tracing::debug!(%error, "connection ended with an error");
        }
    }
}

/// Answers a connection over the cap with a 503 and closes it, without reading its request.
async fn refuse_connection(mut stream: TcpStream, refusal: Refusal) {
    let body = edgeinfer_oip::error_body(&refusal.to_string()).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
