//! `edgeinfer precompile --repo DIR --target TRIPLE`: compiles every version of a repository
//! for another target into the cache directory (`--cache-dir`), so a host of that target (an
//! aarch64 board) loads the code instead of compiling it under its own, slower CPU. The cache
//! directory travels whole: its entries are authenticated with its `key`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgeinfer_runtime::{LoadedModel, ModelRepository, Runtime};

use super::RuntimeArgs;

#[derive(Debug, Args)]
pub struct PrecompileArgs {
    /// Model repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The target triple of the hosts that will load the code, e.g. aarch64-unknown-linux-gnu.
    #[arg(long)]
    target: String,
}

pub fn run(args: PrecompileArgs, runtime: &RuntimeArgs) -> anyhow::Result<ExitCode> {
    let repo = ModelRepository::open(&args.repo)?;
    let mut config = runtime.config();
    config.target = Some(args.target.clone());
    let runtime = Runtime::new(config).with_context(|| format!("a runtime for {}", args.target))?;
    let versions = repo.versions()?;
    for version in &versions {
        LoadedModel::precompile(&runtime, &version.dir)
            .with_context(|| format!("precompiling {}/{}", version.model, version.version))?;
        println!("compiled {}/{} for {}", version.model, version.version, args.target);
    }
    println!("{} versions compiled into {}", versions.len(), runtime.config().cache_dir.display());
    Ok(ExitCode::SUCCESS)
}
