//! `edgeinfer predictions erase --request-id ID | --caller TOKEN`: removes one request's or
//! one caller's records from a prediction log on disk, rewriting the files that hold them, and
//! records the erasure in the repository's audit log. Files a running server is writing are
//! left alone and named (erase through that server's admin API:
//! `POST /v2/admin/predictions/erase`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use std::sync::Arc;

use edgeinfer_monitor::keys::{KeySource, Keyring};
use edgeinfer_monitor::predictions::{Erasure, erase};
use edgeinfer_server::ServerConfig;
use edgeinfer_server::security::audit::{AuditEvent, AuditKind, AuditLog, DEFAULT_KEEP, DEFAULT_MAX_BYTES};

#[derive(Debug, Args)]
pub struct PredictionsArgs {
    #[command(subcommand)]
    action: PredictionsAction,
}

#[derive(Debug, Subcommand)]
enum PredictionsAction {
    /// Erase one request's or one caller's logged predictions.
    Erase(EraseArgs),
}

#[derive(Debug, Args)]
struct EraseArgs {
    /// The records of this request id.
    #[arg(long, conflicts_with = "caller", required_unless_present = "caller")]
    request_id: Option<String>,
    /// Every record of this caller (a token name).
    #[arg(long)]
    caller: Option<String>,
    /// The model repository (its log, key defaults and audit log).
    #[arg(long)]
    repo: PathBuf,
    /// The prediction log directory (default `<repo>/.edgeinfer/predictions`).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The data key file of a sealed log (default: `$EDGEINFER_DATA_KEY`).
    #[arg(long)]
    data_key: Option<PathBuf>,
    /// The server's edgeinfer.toml, for its `audit_file`, `audit_max_bytes` and `audit_keep`
    /// (default: `<repo>/.edgeinfer/audit.jsonl` with the default sizes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Why, for the audit log.
    #[arg(long, default_value = "erasure request")]
    reason: String,
}

pub fn run(args: PredictionsArgs) -> anyhow::Result<ExitCode> {
    let PredictionsAction::Erase(args) = args.action;
    let which = match (args.request_id, args.caller) {
        (Some(id), _) => Erasure::RequestId(id),
        (None, Some(caller)) => Erasure::Caller(caller),
        (None, None) => anyhow::bail!("say whose records: --request-id ID or --caller TOKEN"),
    };
    let log = args.log.unwrap_or_else(|| edgeinfer_runtime::repository::state_dir(&args.repo).join("predictions"));
    let keys = data_keys(args.data_key.as_deref())?;
    // The audit log first: no erasure goes unrecorded.
    let (audit_file, max_bytes, keep) = match &args.config {
        Some(path) => {
            let config = ServerConfig::load(path)?;
            let file = config.audit_file.unwrap_or_else(|| AuditLog::default_path(&args.repo));
            (file, config.audit_max_bytes, config.audit_keep)
        }
        None => (AuditLog::default_path(&args.repo), DEFAULT_MAX_BYTES, DEFAULT_KEEP),
    };
    let audit = AuditLog::open(&audit_file, max_bytes, keep)
        .with_context(|| format!("opening the audit log {}", audit_file.display()))?;
    let report = erase(&log, keys.as_deref(), &which).with_context(|| format!("erasing from {}", log.display()))?;
    let outcome = if report.complete() { "erased" } else { "incomplete" };
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown user".into());
    let summary = format!(
        "{} records of {which} in {} files, by {who} on the command line: {}",
        report.erased, report.files_rewritten, args.reason
    );
    audit
        .append(&AuditEvent::new(AuditKind::AdminChange, "edgeinfer predictions erase", outcome, &summary))
        .context("recording the erasure in the audit log")?;
    println!("erased {} records of {which} ({} files rewritten)", report.erased, report.files_rewritten);
    for path in &report.files_being_written {
        eprintln!("not searched: {} is being written by a running server; erase through its admin API", path.display());
    }
    for problem in &report.files_unreadable {
        eprintln!("not searched: {problem}");
    }
    Ok(if report.complete() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The data keys of `--data-key`, else `$EDGEINFER_DATA_KEY`, else none.
pub(super) fn data_keys(path: Option<&Path>) -> anyhow::Result<Option<Arc<Keyring>>> {
    Ok(KeySource::from_file_or_env(path)?.map(|mut source| source.keyring()))
}
