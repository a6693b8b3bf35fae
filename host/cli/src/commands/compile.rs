//! `edgeinfer compile MODEL.onnx --name NAME --version N --repo DIR`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use edgeinfer_runtime::{CompileRequest, Limits, TextInput, compile_model};
use indicatif::{ProgressBar, ProgressStyle};

use super::RuntimeArgs;

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The ONNX model file.
    model: PathBuf,
    /// Model name in the repository.
    #[arg(long)]
    name: String,
    /// Version number.
    #[arg(long)]
    version: u64,
    /// Model repository directory (created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// An Open Inference Protocol v2 JSON request whose outputs are recorded in the manifest
    /// as a smoke test; every later load (and hot swap) must reproduce them. Repeatable.
    #[arg(long = "example", value_name = "REQUEST.json")]
    examples: Vec<PathBuf>,
    /// Replace the version if it already exists (for build scripts such as `spin build`); the
    /// old one stays until the new one is complete.
    #[arg(long)]
    replace: bool,
    /// A sample of typical inputs (CSV with a header row, or NDJSON objects of input names)
    /// whose per-feature distributions become the drift reference the server compares live
    /// inputs with.
    #[arg(long, value_name = "SAMPLE.csv|SAMPLE.ndjson")]
    reference: Option<PathBuf>,
    /// A Hugging Face `tokenizer.json` to compile in front of a text model: clients then send
    /// strings (one BYTES input `text`), tokenized, truncated and padded inside the sandbox.
    #[arg(long, value_name = "TOKENIZER.json")]
    tokenizer: Option<PathBuf>,
    /// With --tokenizer: the class names of the model's scores, one per line in column order;
    /// adds a BYTES output `label` naming each row's best class.
    #[arg(long, value_name = "LABELS.txt", requires = "tokenizer")]
    labels: Option<PathBuf>,
    /// Sign the new version with this ed25519 private key (from `edgeinfer keygen`).
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    /// Default limits written to the manifest.
    #[command(flatten)]
    limits: super::LimitArgs,
}

pub fn run(args: CompileArgs, runtime: &RuntimeArgs) -> anyhow::Result<ExitCode> {
    let signing_key = args.sign.as_deref().map(edgeinfer_runtime::signature::read_signing_key).transpose()?;
    let onnx = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let limits = Limits::default().with(args.limits.overrides());
    let examples = args
        .examples
        .iter()
        .map(|path| {
            let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let (_, inputs) =
                edgeinfer_oip::decode_request(&body).with_context(|| format!("decoding {}", path.display()))?;
            anyhow::Ok(inputs)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // With --replace the new version is compiled beside the repository and swapped in only
    // once it is complete, so a failed compile leaves the old version as it was.
    let final_dir = edgeinfer_runtime::compile::version_dir(&args.repo, &args.name, args.version);
    let staging = match args.replace && final_dir.exists() {
        true => Some(
            tempfile::Builder::new()
                .prefix(".replace-")
                .tempdir_in(&args.repo)
                .with_context(|| format!("creating a staging directory in {}", args.repo.display()))?,
        ),
        false => None,
    };
    let text = args.tokenizer.as_deref().map(|path| read_text_input(path, args.labels.as_deref())).transpose()?;
    let request = CompileRequest {
        onnx: &onnx,
        source_file: args.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        name: args.name,
        version: args.version,
        repo: staging.as_ref().map_or(args.repo.clone(), |dir| dir.path().to_path_buf()),
        limits,
        examples,
        reference: args.reference.map(|path| std::sync::Arc::new(edgeinfer_monitor::samples::SampleFile(path)) as _),
        text,
    };
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let progress = |message: &str| spinner.set_message(message.to_string());
    let runtime = runtime.runtime()?;
    let result = compile_model(&runtime, &request, &progress);
    spinner.finish_and_clear();
    let model = result.with_context(|| format!("compiling {}", args.model.display()))?;
    if let Some(key) = &signing_key {
        edgeinfer_runtime::signature::sign_version(model.dir(), key)?;
    }
    if staging.is_some() {
        swap_in(model.dir(), &final_dir)?;
    }
    let manifest = model.manifest();
    println!(
        "compiled {} version {} into {} (sha256 {})",
        manifest.name,
        manifest.version,
        final_dir.display(),
        manifest.component.sha256
    );
    Ok(ExitCode::SUCCESS)
}

/// Puts the freshly compiled `new` version directory in place of `existing`.
fn swap_in(new: &Path, existing: &Path) -> anyhow::Result<()> {
    let name = existing.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let old = existing.with_file_name(format!(".replaced-{name}-{}", std::process::id()));
    std::fs::rename(existing, &old).with_context(|| format!("moving {} aside", existing.display()))?;
    std::fs::rename(new, existing).with_context(|| format!("moving the new version into {}", existing.display()))?;
    std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))
}

/// Reads `--tokenizer` and `--labels` (one class name per line; blank lines are skipped).
fn read_text_input(tokenizer: &Path, labels: Option<&Path>) -> anyhow::Result<TextInput> {
    let tokenizer_json = std::fs::read(tokenizer).with_context(|| format!("reading {}", tokenizer.display()))?;
    let labels = match labels {
        None => Vec::new(),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect(),
    };
    Ok(TextInput { tokenizer_json, labels })
}
