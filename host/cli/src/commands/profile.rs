//! `edgeinfer profile --repo R --model M --version V --reference SAMPLE`: records the drift
//! reference of an existing version (as `compile --reference` does for a new one).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgeinfer_runtime::Manifest;

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Model repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// Model name.
    #[arg(long)]
    model: String,
    /// Model version.
    #[arg(long)]
    version: u64,
    /// A sample of typical inputs: CSV with a header row, or NDJSON objects of input names.
    #[arg(long, value_name = "SAMPLE.csv|SAMPLE.ndjson")]
    reference: PathBuf,
}

pub fn profile(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let dir = edgeinfer_runtime::compile::version_dir(&args.repo, &args.model, args.version);
    let path = dir.join("manifest.toml");
    let mut manifest = Manifest::load(&path)?;
    edgeinfer_runtime::reference::attach_reference(
        &dir,
        &mut manifest,
        &edgeinfer_monitor::samples::SampleFile(args.reference.clone()),
    )
    .with_context(|| format!("profiling {}", args.reference.display()))?;
    manifest.save(&path)?;
    let info = manifest.reference.as_ref().map(|r| r.rows).unwrap_or_default();
    println!("recorded the reference of {}/{} from {info} rows", args.model, args.version);
    if dir.join("signature.json").exists() {
        println!("the manifest changed: sign the version again (`edgeinfer sign`), its signature no longer matches");
    }
    Ok(ExitCode::SUCCESS)
}
