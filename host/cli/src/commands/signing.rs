//! `edgeinfer keygen --out NAME` and `edgeinfer sign --key NAME.key DIR/model/version`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use edgeinfer_runtime::signature::{generate_key_pair, key_id, read_signing_key, sign_version};

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the pair: OUT.key (private, mode 0600) and OUT.pub.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The ed25519 private key (PKCS#8 PEM).
    #[arg(long)]
    key: PathBuf,
    /// Version directories to sign, e.g. models/digits/3.
    #[arg(required = true)]
    versions: Vec<PathBuf>,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let (private, public) = generate_key_pair(&args.out)?;
    let key = edgeinfer_runtime::signature::read_public_key(&public)?;
    println!("wrote {} (keep it secret) and {} (key id {})", private.display(), public.display(), key_id(&key));
    Ok(ExitCode::SUCCESS)
}

pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let key = read_signing_key(&args.key)?;
    for dir in &args.versions {
        let path = sign_version(dir, &key)?;
        println!("signed {} -> {}", dir.display(), path.display());
    }
    Ok(ExitCode::SUCCESS)
}
