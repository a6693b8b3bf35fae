//! `edgeinfer verify [--repo DIR]`: one line per version, exit 1 if any fails. Without
//! `--repo` it verifies the embedded demo model, compiling it into the code cache (what the
//! container image build does so the image starts serving at once).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use edgeinfer_runtime::ModelRepository;

use super::RuntimeArgs;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Model repository directory (default: the embedded demo model).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// A public key (PEM) one of which must have signed every version. Repeatable.
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<PathBuf>,
}

pub fn run(args: VerifyArgs, runtime: &RuntimeArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime.runtime()?;
    let repo = match args.repo {
        Some(repo) => ModelRepository::open(repo)?,
        None => ModelRepository::open(crate::demo::demo_repository(&runtime)?)?,
    };
    let policy = edgeinfer_runtime::signature::SignaturePolicy::from_files(&args.trusted_keys)?;
    let results = repo.verify_all(&runtime, &policy)?;
    let mut failures = 0;
    for (version, outcome) in &results {
        match outcome {
            Ok(()) => println!("ok      {}/{}", version.model, version.version),
            Err(error) => {
                failures += 1;
                println!("FAILED  {}/{}: {error}", version.model, version.version);
            }
        }
    }
    println!("{} versions checked, {failures} failed", results.len());
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
