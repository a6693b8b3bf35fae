//! `edgeinfer predictions erase --request-id ID | --caller TOKEN`: removes one request's or
//! one caller's records from a prediction log on disk, rewriting the files that hold them, and
//! records the erasure in the repository's audit log. Files a running server is writing are
//! left alone and named (erase through that server's admin API:
//! `POST /v2/admin/predictions/erase`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use edgeinfer_monitor::keys::Keyring;
use edgeinfer_monitor::predictions::{Erasure, erase};
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
    let report = erase(&log, keys.as_ref(), &which).with_context(|| format!("erasing from {}", log.display()))?;
    let audit = AuditLog::open(&AuditLog::default_path(&args.repo), DEFAULT_MAX_BYTES, DEFAULT_KEEP)
        .context("opening the audit log")?;
    let outcome = if report.complete() { "erased" } else { "incomplete" };
    let summary = format!("{} records of {which} in {} files: {}", report.erased, report.files_rewritten, args.reason);
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
pub(super) fn data_keys(path: Option<&Path>) -> anyhow::Result<Option<Keyring>> {
    Ok(match path {
        Some(path) => Some(Keyring::load(path)?),
        None => Keyring::from_env()?,
    })
}
