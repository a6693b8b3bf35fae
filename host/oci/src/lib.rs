//! Models as OCI artifacts: `edgeinfer push` uploads a version directory as one artifact
//! ([`artifact`] describes its layout), `edgeinfer pull` writes one back after verifying it,
//! and `serve --follow` ([`follow`]) keeps a repository in step with a registry.

pub mod artifact;
pub mod follow;
pub mod registry;

use std::path::{Path, PathBuf};

use edgeinfer_runtime::signature::SignaturePolicy;

pub use artifact::{Artifact, Installed};
pub use follow::{FollowTarget, Follower, TagOutcome};
pub use registry::{Registry, RegistryOptions, parse_reference};

/// What can go wrong moving a model through a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference does not parse.
    #[error("invalid reference '{reference}': {message}")]
    Reference {
        /// As given.
        reference: String,
        /// Why.
        message: String,
    },
    /// The registry could not be reached, refused us, or answered something unusable.
    #[error("registry {registry}: {message}")]
    Registry {
        /// `host[:port]`.
        registry: String,
        /// What it said.
        message: String,
    },
    /// Credentials could not be read.
    #[error("credentials for {registry}: {message}")]
    Credentials {
        /// `host[:port]`.
        registry: String,
        /// Why.
        message: String,
    },
    /// The reference holds something other than an edgeinfer model.
    #[error("{reference} is not an edgeinfer model: {message}")]
    NotAModel {
        /// The reference.
        reference: String,
        /// Why.
        message: String,
    },
    /// The artifact failed a check (digest, sha256, signature, capabilities, re-pointed version).
    #[error("refused {reference}: {message}")]
    Refused {
        /// The reference.
        reference: String,
        /// The failed check.
        message: String,
    },
    /// The local version could not be read.
    #[error(transparent)]
    Runtime(#[from] edgeinfer_runtime::Error),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    fn io(path: PathBuf, source: std::io::Error) -> Error {
        Error::Io { context: path.display().to_string(), source }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Pushes the version in `dir` as `reference` (a tag, the version number when `reference`
/// names none) and returns the reference pushed and its manifest digest.
pub async fn push(dir: &Path, reference: &str, options: &RegistryOptions) -> Result<(String, String)> {
    let artifact = Artifact::from_version_dir(dir)?;
    let reference_text = reference;
    let mut reference = parse_reference(reference_text)?;
    if reference.digest().is_some() {
        return Err(Error::Reference {
            reference: reference.whole(),
            message: "push to a tag: the digest is the registry's answer".into(),
        });
    }
    let tagged = reference_text.rsplit('/').next().is_some_and(|last| last.contains(':'));
    if !tagged {
        reference = oci_client::Reference::with_tag(
            reference.registry().to_string(),
            reference.repository().to_string(),
            artifact.model.version.to_string(),
        );
    }
    let registry = Registry::for_reference(&reference, options)?;
    let digest = registry.push(&reference, &artifact).await?;
    Ok((reference.whole(), digest))
}

/// Pulls `reference` into `repo` as `<repo>/<model>/<version>/`, verified as
/// [`artifact::install`] says.
pub async fn pull(
    reference: &str,
    repo: &Path,
    signatures: &SignaturePolicy,
    options: &RegistryOptions,
) -> Result<Installed> {
    let reference = parse_reference(reference)?;
    let registry = Registry::for_reference(&reference, options)?;
    let (manifest, described, digest) = registry.describe(&reference).await?;
    let pinned = reference.clone_with_digest(digest);
    if let Some(here) = artifact::already_here(&reference.whole(), &described, repo)? {
        return Ok(here);
    }
    let layers = registry.layers(&pinned, &manifest).await?;
    artifact::install(&reference.whole(), &described, &layers, repo, signatures)
}
