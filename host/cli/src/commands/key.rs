//! `edgeinfer key create|rotate|list`: data key files, the AES-256-GCM keys that seal the
//! prediction log at rest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use edgeinfer_monitor::keys::{Keyring, create_key_file, rotate_key_file};

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    action: KeyAction,
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Write a new key file holding one key (mode 0600; an existing file is never
    /// overwritten). Point `data_key_file` (edgeinfer.toml) or `serve --data-key` at it.
    Create {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add a new key to a key file: it seals from now on (a running server picks it up within
    /// a second); the older keys stay to read what they sealed.
    Rotate {
        /// The key file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Print a key file's key ids, oldest first (never the secrets).
    List {
        /// The key file.
        #[arg(long)]
        file: PathBuf,
    },
}

pub fn run(args: KeyArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        KeyAction::Create { out } => {
            let id = create_key_file(&out)?;
            println!("created {} holding key {id} (mode 0600): keep it secret and backed up", out.display());
        }
        KeyAction::Rotate { file } => {
            let id = rotate_key_file(&file)?;
            println!("added key {id} to {}: it seals new data; older keys still open old data", file.display());
        }
        KeyAction::List { file } => {
            let keyring = Keyring::load(&file)?;
            let ids = keyring.ids();
            for (index, id) in ids.iter().enumerate() {
                let current = if index + 1 == ids.len() { "  (seals new data)" } else { "" };
                println!("{id}{current}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
