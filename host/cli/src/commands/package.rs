//! `edgeinfer package --target cloudflare|fastly|browser|spin --repo DIR --model M [--version V]
//! --out OUT`: a compiled version as the named platform deploys it (see `crate::package`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgeinfer_runtime::signature::SignaturePolicy;
use edgeinfer_runtime::{ModelRepository, VerifiedComponent};

use super::ModelArgs;
use crate::package::{self, Target};

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The platform to package for.
    #[arg(long, value_enum)]
    target: Target,
    #[command(flatten)]
    version: ModelArgs,
    /// Output directory (must not exist, unless --replace).
    #[arg(long)]
    out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    replace: bool,
    /// A public key (PEM) one of which must have signed the version. Repeatable.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<PathBuf>,
}

pub fn run(args: PackageArgs) -> anyhow::Result<ExitCode> {
    let repo = ModelRepository::open(&args.version.repo)?;
    let version = repo.find(&args.version.model, args.version.version)?;
    let component = VerifiedComponent::read(&version.dir)
        .with_context(|| format!("checking {}/{}", version.model, version.version))?;
    let policy = SignaturePolicy::from_files(&args.trusted_keys)?;
    policy.check(&version.dir).with_context(|| format!("the signature of {}/{}", version.model, version.version))?;
    let files = package::write(&component, args.target, &args.out, args.replace)?;
    for file in &files {
        println!("wrote {}", args.out.join(file).display());
    }
    println!(
        "packaged {}/{} (sha256 {}) for {:?} into {}",
        version.model,
        version.version,
        component.digest(),
        args.target,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
