//! Following a registry repository: every tag whose artifact is a version this repository
//! does not have yet is pulled, verified and installed. A tag moved to an artifact of a
//! version already here is refused (and logged once per digest), never swapped in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edgeinfer_runtime::signature::SignaturePolicy;
use oci_client::Reference;

use crate::artifact::{Installed, already_here, install};
use crate::registry::{Registry, RegistryOptions, parse_reference};
use crate::{Error, Result};

/// One followed repository: `HOST[:PORT]/PATH` (the model is the path's last segment) or
/// `MODEL=HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowTarget {
    /// The model its versions are installed as.
    pub model: String,
    /// `host[:port]/path`, without tag.
    pub repository: String,
}

impl std::str::FromStr for FollowTarget {
    type Err = Error;

    fn from_str(text: &str) -> Result<FollowTarget> {
        let (model, repository) = match text.split_once('=') {
            Some((model, repository)) => (Some(model.trim().to_string()), repository.trim()),
            None => (None, text.trim()),
        };
        let last_segment = repository.rsplit('/').next().unwrap_or_default();
        if last_segment.contains([':', '@']) {
            return Err(Error::Reference {
                reference: text.to_string(),
                message: "a followed repository has no tag or digest (every tag is followed)".into(),
            });
        }
        let reference = parse_reference(repository)?;
        let model = model.unwrap_or_else(|| reference.repository().rsplit('/').next().unwrap_or_default().to_string());
        if model.is_empty() || model.starts_with('.') || model.contains(['/', '\\']) {
            return Err(Error::Reference {
                reference: text.to_string(),
                message: format!("'{model}' is not a model name"),
            });
        }
        Ok(FollowTarget { model, repository: format!("{}/{}", reference.registry(), reference.repository()) })
    }
}

/// What one poll found for one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagOutcome {
    /// A new version, now in the repository.
    Installed(Installed),
    /// The tag's artifact was refused (tampered, re-pointed, unsigned, not a model...).
    Refused {
        /// The tag.
        tag: String,
        /// Why.
        message: String,
    },
}

/// Follows one registry repository into a local model repository.
pub struct Follower {
    target: FollowTarget,
    repo: PathBuf,
    signatures: Arc<SignaturePolicy>,
    registry: Registry,
    repository: Reference,
    /// The digest each tag pointed to when last handled: unchanged tags cost one HEAD.
    seen: HashMap<String, String>,
}

impl Follower {
    /// A follower installing `target`'s versions into `repo`, checking signatures with
    /// `signatures`.
    pub fn new(
        target: FollowTarget,
        repo: PathBuf,
        signatures: Arc<SignaturePolicy>,
        options: &RegistryOptions,
    ) -> Result<Follower> {
        let repository = parse_reference(&target.repository)?;
        let registry = Registry::for_reference(&repository, options)?;
        Ok(Follower { target, repo, signatures, registry, repository, seen: HashMap::new() })
    }

    /// The followed repository.
    pub fn target(&self) -> &FollowTarget {
        &self.target
    }

    /// Looks at every tag once. `Err` means the registry could not be asked (nothing
    /// changed here); per-tag refusals are outcomes.
    pub async fn poll(&mut self) -> Result<Vec<TagOutcome>> {
        let mut outcomes = Vec::new();
        let tags = self.registry.tags(&self.repository).await?;
        for tag in tags {
            let tagged = Reference::with_tag(
                self.repository.registry().to_string(),
                self.repository.repository().to_string(),
                tag.clone(),
            );
            let digest = self.registry.digest(&tagged).await?;
            if self.seen.get(&tag) == Some(&digest) {
                continue;
            }
            match self.handle(&tagged, &digest).await {
                Ok(Some(installed)) => outcomes.push(TagOutcome::Installed(installed)),
                Ok(None) => {}
                Err(Error::Registry { registry, message }) => return Err(Error::Registry { registry, message }),
                Err(error) => outcomes.push(TagOutcome::Refused { tag: tag.clone(), message: error.to_string() }),
            }
            self.seen.insert(tag, digest);
        }
        Ok(outcomes)
    }

    /// Pulls and installs the artifact `digest` that `tagged` points to, unless its version
    /// is here already (`None`), refusing a different artifact for a version already here.
    async fn handle(&self, tagged: &Reference, digest: &str) -> Result<Option<Installed>> {
        // From here on the digest, not the tag: the tag may move while we pull.
        let pinned = tagged.clone_with_digest(digest.to_string());
        let (manifest, described, _) = self.registry.describe(&pinned).await?;
        let refuse = |message: String| Error::Refused { reference: tagged.whole(), message };
        if described.model != self.target.model {
            return Err(refuse(format!(
                "it holds model '{}', and this repository is followed as '{}'",
                described.model, self.target.model
            )));
        }
        let (repo, whole, wanted) = (self.repo.clone(), tagged.whole(), described.clone());
        if blocking(move || already_here(&whole, &wanted, &repo)).await?.is_some() {
            return Ok(None);
        }
        let layers = self.registry.layers(&pinned, &manifest).await?;
        let (repo, signatures, whole) = (self.repo.clone(), self.signatures.clone(), tagged.whole());
        blocking(move || install(&whole, &described, &layers, &repo, &signatures)).await.map(Some)
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Io { context: "a file task".into(), source: std::io::Error::other(e.to_string()) })?
}

/// The wait before the next poll: `interval` with ±20% jitter (replicas started together do
/// not poll together), doubled per consecutive failure up to 16 times `interval`.
pub fn next_wait(interval: Duration, failures: u32) -> Duration {
    let backoff = interval.saturating_mul(1u32 << failures.min(4));
    backoff.mul_f64(0.8 + 0.4 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_model() {
        let target: FollowTarget = "127.0.0.1:5000/models/digits".parse().expect("parses");
        assert_eq!(target.model, "digits");
        assert_eq!(target.repository, "127.0.0.1:5000/models/digits");
        let target: FollowTarget = "mnist=registry.example.com/team/digits".parse().expect("parses");
        assert_eq!(target.model, "mnist");
        assert_eq!(target.repository, "registry.example.com/team/digits");
    }

    #[test]
    fn targets_refuse_tags_and_digests() {
        for text in ["127.0.0.1:5000/models/digits:2", "digits", "127.0.0.1:5000/m/digits@sha256:00"] {
            assert!(text.parse::<FollowTarget>().is_err(), "{text}");
        }
    }

    #[test]
    fn waits_jitter_and_back_off() {
        let interval = Duration::from_secs(10);
        for _ in 0..100 {
            let wait = next_wait(interval, 0);
            assert!(wait >= Duration::from_secs(8) && wait <= Duration::from_secs(12), "{wait:?}");
        }
        assert!(next_wait(interval, 2) >= Duration::from_secs(32));
        assert!(next_wait(interval, 30) <= Duration::from_secs(192));
    }
}
