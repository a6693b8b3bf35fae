//! `edgeinfer infer --repo DIR --model NAME [--version N] --input REQUEST.json`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgeinfer_runtime::pipeline::{self, Options, RequestBody};

use super::RuntimeArgs;

#[derive(Debug, Args)]
pub struct InferArgs {
    /// The model version to run.
    #[command(flatten)]
    target: super::ModelArgs,
    /// An Open Inference Protocol v2 JSON request body ('-' for stdin).
    #[arg(long)]
    input: PathBuf,
    /// Limits overriding the manifest's.
    #[command(flatten)]
    limits: super::LimitArgs,
}

pub fn run(args: InferArgs, runtime: &RuntimeArgs) -> anyhow::Result<ExitCode> {
    let body = if args.input.as_os_str() == "-" {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer).context("reading stdin")?;
        buffer
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let runtime = runtime.runtime()?;
    let model = args.target.load(&runtime)?;
    let options = Options { limits: args.limits.overrides(), ..Options::default() };
    let answer = pipeline::run(&model, RequestBody::json(body.into()), options).map_err(|failure| failure.error)?;
    let body = answer.body.into_http()?;
    if body.header_length.is_some() {
        anyhow::bail!("binary outputs need the HTTP binary tensor extension; drop binary_data here");
    }
    let response: serde_json::Value = serde_json::from_slice(&body.json)?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(ExitCode::SUCCESS)
}
