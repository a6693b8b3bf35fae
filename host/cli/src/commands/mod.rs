//! Subcommands of the `edgeinfer` CLI.

mod alerts;
mod audit;
#[cfg(feature = "batch")]
mod batch;
mod compile;
mod infer;
mod key;
mod package;
mod precompile;
mod predictions;
mod profile;
#[cfg(feature = "oci")]
mod registry;
mod replay;
mod rollout;
mod serve;
mod signing;
mod token;
mod traffic;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use edgeinfer_runtime::{Runtime, RuntimeConfig};

/// Serve ONNX models as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "edgeinfer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Log format: text (colour only on a terminal) or json (default: the server config's
    /// `log_format`, else text).
    #[arg(
        long,
        global = true,
        env = "EDGEINFER_LOG_FORMAT",
        value_parser = clap::builder::TypedValueParser::try_map(
            clap::builder::PossibleValuesParser::new(edgeinfer_server::LogFormat::NAMES),
            |name| name.parse::<edgeinfer_server::LogFormat>(),
        )
    )]
    log_format: Option<edgeinfer_server::LogFormat>,
}

impl Cli {
    /// The log format: the flag, else `serve --config`'s `log_format`, else text. A config
    /// that does not parse is reported later, by the command itself.
    pub fn log_format(&self) -> edgeinfer_server::LogFormat {
        let from_config = match &self.command {
            Command::Serve(args) => args.config_log_format(),
            _ => None,
        };
        self.log_format.or(from_config).unwrap_or_default()
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile an ONNX model into a component in a model repository.
    Compile(compile::CompileArgs),
    /// Verify every model version in a repository (digest, imports, compile, metadata).
    Verify(verify::VerifyArgs),
    /// Compile every version of a repository for another target (aarch64) into a cache
    /// directory that a host of that target then loads from.
    Precompile(precompile::PrecompileArgs),
    /// Package a compiled version for another platform: a Cloudflare Worker, a browser ES
    /// module, or a Spin application (Fastly Compute is refused, saying why).
    Package(package::PackageArgs),
    /// Run one Open Inference Protocol v2 JSON request and print the v2 response.
    Infer(infer::InferArgs),
    /// Serve a model repository over the Open Inference Protocol v2 (HTTP/REST).
    Serve(serve::ServeArgs),
    /// Show or set a served model's traffic split and shadow (admin API).
    Traffic(traffic::TrafficArgs),
    /// Put a served model's traffic back to the split before the current one (admin API).
    Rollback(traffic::RollbackArgs),
    /// Watch and steer a model's automated rollout: status, start, pause, resume, promote,
    /// abort (admin API).
    Rollout(rollout::RolloutArgs),
    /// Create, list or revoke bearer tokens for `serve` with auth = "tokens".
    Token(token::TokenArgs),
    /// Write an ed25519 key pair for signing model versions.
    Keygen(signing::KeygenArgs),
    /// Sign existing model versions (writes signature.json beside each manifest).
    Sign(signing::SignArgs),
    /// Re-run logged predictions on the exact components that made them; report any output
    /// that is not bit-identical.
    Replay(replay::ReplayArgs),
    /// Record the drift reference (input distributions) of an existing version from a sample.
    Profile(profile::ProfileArgs),
    /// Work with the server config's alert rules (export them for Prometheus).
    Alerts(alerts::AlertsArgs),
    /// Score a file (CSV, NDJSON, Parquet) on every core; resumable, every row exactly once.
    #[cfg(feature = "batch")]
    Batch(batch::BatchArgs),
    /// (Left out of this build: cargo feature `batch`.)
    #[cfg(not(feature = "batch"))]
    #[command(hide = true)]
    Batch(LeftOut),
    /// Upload a model version to an OCI registry as one artifact; prints its digest.
    #[cfg(feature = "oci")]
    Push(registry::PushArgs),
    /// Download a model version from an OCI registry into a repository, verified.
    #[cfg(feature = "oci")]
    Pull(registry::PullArgs),
    #[cfg(not(feature = "oci"))]
    #[command(hide = true)]
    Push(LeftOut),
    #[cfg(not(feature = "oci"))]
    #[command(hide = true)]
    Pull(LeftOut),
    /// Check the audit log's hash chain: any record edited, removed or reordered is named.
    Audit(audit::AuditArgs),
    /// Create, rotate or list data keys (they seal the prediction log at rest).
    Key(key::KeyArgs),
    /// Work with a prediction log on disk: erase one request's or one caller's records.
    Predictions(predictions::PredictionsArgs),
}

/// Per-request limits given on the command line.
#[derive(Debug, Args)]
struct LimitArgs {
    /// Fuel budget per request.
    #[arg(long)]
    fuel: Option<u64>,
    /// Deadline per request, in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Memory cap per request, in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
}

impl LimitArgs {
    fn overrides(&self) -> edgeinfer_runtime::LimitOverrides {
        edgeinfer_runtime::LimitOverrides { fuel: self.fuel, timeout_ms: self.timeout_ms, memory_mb: self.memory_mb }
    }
}

/// One model version of a repository, as `--repo`, `--model` and `--version` name it.
#[derive(Debug, Args)]
struct ModelArgs {
    /// Model repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// Model name.
    #[arg(long)]
    model: String,
    /// Model version (default: the highest).
    #[arg(long)]
    version: Option<u64>,
}

impl ModelArgs {
    /// Loads the version (digest, imports, compile or cached code, smoke test).
    fn load(&self, runtime: &Arc<Runtime>) -> anyhow::Result<edgeinfer_runtime::LoadedModel> {
        let repo = edgeinfer_runtime::ModelRepository::open(&self.repo)?;
        Ok(repo.load(runtime, &self.model, self.version)?)
    }
}

/// Options shared by every subcommand that runs components.
#[derive(Debug, Args)]
struct RuntimeArgs {
    /// Directory for compiled code (default: $EDGEINFER_CACHE_DIR or ~/.cache/edgeinfer).
    #[arg(long, global = true, env = "EDGEINFER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// MiB of each pool slot's memory kept resident between instances and reset in place
    /// (Linux 6.7+; only the pages a request dirtied): faster fresh instances for a little
    /// resident memory (default 32; 0 returns the pages after every instance).
    #[arg(long, global = true, env = "EDGEINFER_KEEP_RESIDENT_MB")]
    keep_resident_mb: Option<usize>,
    /// Run models on the wasm kernels their components carry instead of the host's native
    /// kernels (same output bits; slower; for comparison or to rule the native kernels out).
    /// The variable takes 1/0, true/false, yes/no or on/off.
    #[arg(long, global = true, env = "EDGEINFER_WASM_KERNELS", value_parser = clap::builder::FalseyValueParser::new())]
    wasm_kernels: bool,
}

impl RuntimeArgs {
    fn runtime(&self) -> anyhow::Result<Arc<Runtime>> {
        Ok(Runtime::new(self.config())?)
    }

    /// The runtime configuration these flags ask for.
    fn config(&self) -> RuntimeConfig {
        let mut config = RuntimeConfig::default();
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = dir.clone();
        }
        if let Some(mb) = self.keep_resident_mb {
            config.keep_resident_bytes = mb << 20;
        }
        config.native_kernels = !self.wasm_kernels;
        config
    }
}

/// The arguments of a command this build leaves out: anything, refused when run.
#[cfg(not(feature = "batch"))]
#[derive(Debug, clap::Args)]
struct LeftOut {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Compile(args) => compile::run(args, &cli.runtime),
        Command::Verify(args) => verify::run(args, &cli.runtime),
        Command::Precompile(args) => precompile::run(args, &cli.runtime),
        Command::Package(args) => package::run(args),
        Command::Infer(args) => infer::run(args, &cli.runtime),
        Command::Serve(args) => serve::run(args, &cli.runtime),
        Command::Traffic(args) => traffic::traffic(args),
        Command::Rollback(args) => traffic::rollback(args),
        Command::Rollout(args) => rollout::rollout(args),
        Command::Token(args) => token::run(args),
        Command::Keygen(args) => signing::keygen(args),
        Command::Sign(args) => signing::sign(args),
        Command::Replay(args) => replay::run(args, &cli.runtime),
        Command::Profile(args) => profile::profile(args),
        Command::Alerts(args) => alerts::run(args),
        #[cfg(feature = "batch")]
        Command::Batch(args) => batch::run(args, &cli.runtime),
        #[cfg(not(feature = "batch"))]
        Command::Batch(_) => anyhow::bail!("this build of edgeinfer leaves out batch scoring (cargo feature `batch`)"),
        #[cfg(feature = "oci")]
        Command::Push(args) => registry::push(args),
        #[cfg(feature = "oci")]
        Command::Pull(args) => registry::pull(args),
        #[cfg(not(feature = "oci"))]
        Command::Push(_) | Command::Pull(_) => {
            anyhow::bail!("this build of edgeinfer leaves out OCI registries (cargo feature `oci`)")
        }
        Command::Audit(args) => audit::run(args),
        Command::Key(args) => key::run(args),
        Command::Predictions(args) => predictions::run(args),
    }
}
