//! `edgeinfer replay --log DIR --repo REPO [--id ID] [--since T]`: re-runs logged
//! predictions on the exact components that made them; exit 1 unless all are bit-identical
//! and the whole log could be read. `--data-key PATH` opens a sealed log.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use edgeinfer_monitor::replay::{ReplayFilter, replay};

use super::RuntimeArgs;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The prediction log directory (default `<repo>/.edgeinfer/predictions`).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The model repository holding the components (found by sha256).
    #[arg(long)]
    repo: PathBuf,
    /// Only this request id.
    #[arg(long)]
    id: Option<String>,
    /// Only predictions made at or after this RFC 3339 time, e.g. 2026-11-24T00:00:00Z.
    #[arg(long)]
    since: Option<String>,
    /// The data key file of a sealed log (default: `$EDGEINFER_DATA_KEY`).
    #[arg(long)]
    data_key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReplayArgs, runtime: &RuntimeArgs) -> anyhow::Result<ExitCode> {
    let since_ms = args
        .since
        .as_deref()
        .map(|text| {
            let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--since {text:?} is not an RFC 3339 time (e.g. 2026-11-24T00:00:00Z)"))?;
            anyhow::Ok(u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
        })
        .transpose()?;
    let log = args.log.unwrap_or_else(|| edgeinfer_runtime::repository::state_dir(&args.repo).join("predictions"));
    let filter = ReplayFilter { id: args.id.clone(), since_ms };
    let keys = super::predictions::data_keys(args.data_key.as_deref())?;
    let runtime = runtime.runtime()?;
    let report = replay(&runtime, &args.repo, &log, &filter, keys.as_deref())
        .with_context(|| format!("replaying {}", log.display()))?;
    for problem in &report.unreadable {
        eprintln!("UNREADABLE {problem}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in report.mismatched.iter().chain(&report.missing) {
            println!("MISMATCH {} ({} v{}): {}", problem.id, problem.model, problem.version, problem.reason);
        }
        let seconds = report.elapsed.as_secs_f64();
        println!(
            "{} replayed, {} bit-identical, {} mismatched, {} missing components, {} not replayable \
             (an input logged as its digest only), {} not replayable (an input redacted), {} unreadable \
             parts of the log ({:.0} predictions/s)",
            report.replayed,
            report.identical,
            report.mismatched.len(),
            report.missing.len(),
            report.digest_only,
            report.redacted,
            report.unreadable.len(),
            report.replayed as f64 / seconds.max(1e-9)
        );
    }
    if args.id.is_some() && report.replayed + report.missing.len() + report.digest_only + report.redacted == 0 {
        anyhow::bail!("no prediction with id {:?} in {}", args.id.unwrap_or_default(), log.display());
    }
    let clean = report.mismatched.is_empty() && report.missing.is_empty() && report.unreadable.is_empty();
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
