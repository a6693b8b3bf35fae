//! `edgeinfer serve [--repo DIR] [--listen ADDR] [--config FILE]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use edgeinfer_runtime::{ModelRepository, Runtime};
use edgeinfer_server::{LogFormat, ModelRegistry, ServerConfig, start};

use crate::demo::demo_repository;

use super::RuntimeArgs;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model repository (default: the embedded demo model, the digits classifier).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8000).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address for the Open Inference Protocol over gRPC (off unless set; the demo model
    /// serves it on 127.0.0.1:8001).
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// Server settings file (TOML); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (knowingly insecure).
    #[arg(long)]
    insecure_no_auth: bool,
    /// When the audit log's hash chain is broken, move its files aside (renamed
    /// `*.broken-<unix ms>`, never deleted) and begin a new chain whose first record names the
    /// break, instead of refusing to start. Inspect first with `edgeinfer audit verify`.
    #[arg(long)]
    accept_broken_audit: bool,
    /// The data key file (`edgeinfer key create`): the prediction log is sealed with it
    /// (overrides `data_key_file`).
    #[arg(long)]
    data_key: Option<PathBuf>,
    /// Follow an OCI registry repository, `HOST[:PORT]/PATH` or `MODEL=HOST[:PORT]/PATH`:
    /// new version tags are pulled into --repo, verified and loaded. Repeatable (adds to
    /// `follow`).
    #[arg(long)]
    follow: Vec<String>,
    /// How often followed repositories are polled, in ms (overrides `follow_interval_ms`).
    #[arg(long)]
    follow_interval_ms: Option<u64>,
    /// A registry (`host[:port]`) followed over plain HTTP although not on loopback.
    /// Repeatable (adds to `insecure_registries`).
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
}

impl ServeArgs {
    /// The `log_format` of `--config`, when it parses.
    pub fn config_log_format(&self) -> Option<LogFormat> {
        self.config.as_deref().and_then(|path| ServerConfig::load(path).ok()).map(|config| config.log_format)
    }
}

pub fn run(args: ServeArgs, runtime: &RuntimeArgs) -> anyhow::Result<ExitCode> {
    // Every setting is checked before any socket is bound.
    let mut config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(grpc) = args.grpc_listen {
        config.grpc_listen = Some(grpc);
    }
    if let Some(repo) = args.repo {
        config.repo = Some(repo);
    }
    if config.repo.is_none() && config.grpc_listen.is_none() && cfg!(feature = "grpc") {
        // The demo turns gRPC on beside REST: :8001 next to the default :8000, any free
        // port when REST takes one (builds with gRPC).
        let port = if config.listen.port() == 0 { 0 } else { 8001 };
        config.grpc_listen = Some(SocketAddr::new(config.listen.ip(), port));
    }
    config.follow.extend(args.follow);
    config.insecure_registries.extend(args.insecure_registries);
    if let Some(interval) = args.follow_interval_ms {
        config.follow_interval_ms = interval;
    }
    config.validate().map_err(edgeinfer_server::Error::Config)?;
    if let (false, Some(repo)) = (config.follow.is_empty(), &config.repo) {
        // A replica following a registry may start with nothing: its versions arrive.
        std::fs::create_dir_all(repo).with_context(|| format!("creating the model repository {}", repo.display()))?;
    }
    config.insecure_no_auth |= args.insecure_no_auth;
    config.accept_broken_audit = args.accept_broken_audit;
    if let Some(key) = args.data_key {
        config.data_key_file = Some(key);
    }
    edgeinfer_server::check_build(&config)?;
    let runtime = runtime.runtime()?;
    let repo_dir = match &config.repo {
        Some(dir) => dir.clone(),
        None => demo_repository(&runtime).context("preparing the embedded demo model")?,
    };
    let repo = ModelRepository::open(&repo_dir)?;
    let history = config.history_file.clone().unwrap_or_else(|| ModelRegistry::default_history_path(&repo_dir));
    let registry = ModelRegistry::with_history(runtime.clone(), repo, &history)
        .with_context(|| format!("opening the history log {}", history.display()))?;
    registry.set_signature_policy(edgeinfer_runtime::signature::SignaturePolicy::from_files(&config.trusted_keys)?);
    let registry = Arc::new(registry);
    for (model, version, reason) in registry.load_all()? {
        eprintln!("refused {model}/{version}: {reason}");
    }
    return_freed_memory(&runtime);
    // One worker per core plus one: short inferences run on the workers (see
    // `server::inline`), and one worker is always left for I/O.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(cores + 1).enable_all().build()?;
    tokio.block_on(async move {
        let server = start(registry, config).await?;
        eprintln!("edgeinfer serving {} on http://{}", repo_dir.display(), server.addr);
        if let Some(grpc) = server.grpc_addr {
            eprintln!("gRPC (inference.GRPCInferenceService, health, reflection) on {grpc}");
        }
        shutdown_signal().await;
        server.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Gives the pages that loading freed (component bytes, parsed plans, compile buffers) back to
/// the kernel now: mimalloc keeps freed pages for reuse and purges them only as the thread
/// that freed them allocates again, which a loading thread never does. Then lets the kernel
/// reclaim the compiled code loading touched ([`Runtime::release_resident_code`]).
fn return_freed_memory(runtime: &Runtime) {
    // SAFETY: `mi_collect` has no preconditions; it only releases memory no allocation uses.
    unsafe { libmimalloc_sys::mi_collect(true) };
    runtime.release_resident_code();
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    eprintln!("shutting down: finishing in-flight requests");
}
