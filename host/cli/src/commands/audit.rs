//! `edgeinfer audit verify [--file PATH | --repo DIR]`: checks the audit log's hash chain,
//! oldest rotated file first, and names the first broken link.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use edgeinfer_server::security::{AuditLog, audit};

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit log and its rotated files; exit 1 at the first record
    /// edited, removed or out of order, naming its file and line.
    Verify {
        /// The audit log (default: <repo>/.edgeinfer/audit.jsonl).
        #[arg(long, conflicts_with = "repo")]
        file: Option<PathBuf>,
        /// The model repository whose default audit log to check.
        #[arg(long)]
        repo: Option<PathBuf>,
    },
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Verify { file, repo } => {
            let path = match (file, repo) {
                (Some(file), _) => file,
                (None, Some(repo)) => AuditLog::default_path(&repo),
                (None, None) => anyhow::bail!("say which audit log: --file PATH or --repo DIR"),
            };
            let report = audit::verify(&path)?;
            if report.files.is_empty() {
                anyhow::bail!("no audit log at {} (nor rotated files beside it)", path.display());
            }
            println!("audit chain intact: {report}");
            if let Some(last) = report.last_hash_hex() {
                // Kept somewhere else, it shows later whether records were cut off the end.
                println!("last record hash: {last}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
