//! `edgeinfer token create|list|revoke`: bearer tokens in a tokens file (only their hashes).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use edgeinfer_server::security::tokens::parse_duration;
use edgeinfer_server::security::{Scope, TokenLimits, TokensFile};

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
}

/// Where the tokens file is.
#[derive(Debug, Args)]
struct TokensPath {
    /// The tokens file (default: <repo>/.edgeinfer/tokens.toml).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// The model repository whose default tokens file to use.
    #[arg(long)]
    repo: Option<PathBuf>,
}

impl TokensPath {
    fn path(&self) -> anyhow::Result<PathBuf> {
        match (&self.tokens, &self.repo) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(repo)) => Ok(TokensFile::default_path(repo)),
            (None, None) => anyhow::bail!("say where the tokens live: --tokens FILE or --repo DIR"),
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token and print it (once: only its hash is stored).
    Create {
        /// A unique name, e.g. ci-deployer.
        #[arg(long)]
        name: String,
        /// What it may do: infer, infer:<model>, read, admin (admin implies the others).
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// Lifetime, e.g. 30d, 12h (default: no expiry).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        /// Sustained requests per second (default: the server's quotas).
        #[arg(long)]
        rate: Option<f64>,
        /// Burst above the rate.
        #[arg(long)]
        burst: Option<u32>,
        /// Fuel per minute.
        #[arg(long)]
        fuel_per_minute: Option<u64>,
        #[command(flatten)]
        file: TokensPath,
    },
    /// List tokens (names, scopes, dates; never secrets).
    List {
        #[command(flatten)]
        file: TokensPath,
    },
    /// Revoke a token by name; servers stop accepting it within a second.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        file: TokensPath,
    },
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        TokenAction::Create { name, scopes, expires, rate, burst, fuel_per_minute, file } => {
            let path = file.path()?;
            let mut tokens = TokensFile::load(&path)?;
            let limits = TokenLimits { rate_per_s: rate, burst, fuel_per_minute };
            let token = tokens.create(&name, scopes, expires, limits)?;
            tokens.save(&path)?;
            eprintln!("token '{name}' added to {} (shown once; only its hash is stored):", path.display());
            println!("{token}");
        }
        TokenAction::List { file } => {
            let tokens = TokensFile::load(&file.path()?)?;
            for token in tokens.tokens {
                let scopes: Vec<String> = token.scopes.iter().map(ToString::to_string).collect();
                let state = match (&token.revoked, &token.expires) {
                    (Some(at), _) => format!("revoked {at}"),
                    (None, Some(at)) => format!("expires {at}"),
                    (None, None) => "no expiry".into(),
                };
                println!("{}\t{}\tcreated {}\t{state}", token.name, scopes.join(","), token.created);
            }
        }
        TokenAction::Revoke { name, file } => {
            let path = file.path()?;
            let mut tokens = TokensFile::load(&path)?;
            tokens.revoke(&name)?;
            tokens.save(&path)?;
            eprintln!("token '{name}' revoked in {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
