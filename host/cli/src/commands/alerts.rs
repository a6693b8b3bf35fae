//! `edgeinfer alerts export --config edgeinfer.toml`: the config's alert rules as a
//! Prometheus rules file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use edgeinfer_server::ServerConfig;
use edgeinfer_server::alerts::export::rules_file;

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Write the `[[alerts]]` rules of a server config as a Prometheus rules file.
    Export {
        /// The server config (`edgeinfer.toml`).
        #[arg(long)]
        config: PathBuf,
        /// Where to write the rules (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AlertsCommand::Export { config, output } => {
            let config = ServerConfig::load(&config)?;
            let text = rules_file(&config.alerts);
            match output {
                Some(path) => std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
