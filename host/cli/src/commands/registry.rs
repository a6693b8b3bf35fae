//! `edgeinfer push --repo DIR --model M --version V REF` and `edgeinfer pull REF --repo DIR`:
//! model versions through an OCI registry (see `docs/src/kubernetes.md`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgeinfer_oci::RegistryOptions;
use edgeinfer_runtime::ModelRepository;
use edgeinfer_runtime::signature::SignaturePolicy;

/// How to reach the registry (shared by push, pull and serve --follow).
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// A registry (`host[:port]`) spoken to over plain HTTP although not on loopback
    /// (loopback registries always are). Repeatable.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Registry user name (default: `~/.docker/config.json`, else anonymous).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password from standard input (with --username).
    #[arg(long, requires = "username")]
    password_stdin: bool,
}

impl RegistryArgs {
    /// The options these flags give.
    pub fn options(&self) -> anyhow::Result<RegistryOptions> {
        let credentials = match &self.username {
            Some(user) if self.password_stdin => {
                let mut password = String::new();
                std::io::stdin().read_to_string(&mut password).context("reading the password from standard input")?;
                Some((user.clone(), password.trim_end_matches(['\n', '\r']).to_string()))
            }
            _ => None,
        };
        Ok(RegistryOptions { insecure: self.insecure_registries.clone(), credentials })
    }
}

/// `edgeinfer push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    model: super::ModelArgs,
    /// Where to: `host[:port]/path[:tag]` (the tag defaults to the version number).
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `edgeinfer pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// What: `host[:port]/path:tag` or `host[:port]/path@sha256:...`.
    reference: String,
    /// The model repository it is written into, as `<repo>/<model>/<version>/`.
    #[arg(long)]
    repo: PathBuf,
    /// A public key (PEM) one of which must have signed the version. Repeatable.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(work))
}

pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let version = ModelRepository::open(&args.model.repo)?.find(&args.model.model, args.model.version)?;
    let options = args.registry.options()?;
    let (reference, digest) = block_on(edgeinfer_oci::push(&version.dir, &args.reference, &options))??;
    println!("pushed {}/{} to {reference}", version.model, version.version);
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.repo).with_context(|| format!("creating {}", args.repo.display()))?;
    let signatures = SignaturePolicy::from_files(&args.trusted_keys)?;
    let options = args.registry.options()?;
    let installed = block_on(edgeinfer_oci::pull(&args.reference, &args.repo, &signatures, &options))??;
    let verb = if installed.new { "pulled" } else { "already have" };
    println!(
        "{verb} {}/{} in {} (component sha256 {})",
        installed.model,
        installed.version,
        installed.dir.display(),
        installed.component_sha256
    );
    Ok(ExitCode::SUCCESS)
}
