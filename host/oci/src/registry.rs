//! Talking to an OCI registry: references, credentials, plain HTTP only where allowed, and the
//! push and pull of one model artifact.

use std::str::FromStr;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, ImageLayer};
use oci_client::manifest::{OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::artifact::{Artifact, COMPONENT_MEDIA_TYPE, Described, MANIFEST_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE, describe};
use crate::{Error, Result};

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP although not on loopback
    /// (`--insecure-registry`, as docker and oras name it).
    pub insecure: Vec<String>,
    /// Credentials given on the command line; otherwise `~/.docker/config.json` (or
    /// `$DOCKER_CONFIG/config.json`, with its credential helpers) is asked, else anonymous.
    pub credentials: Option<(String, String)>,
}

/// Parses `host[:port]/path[:tag|@sha256:...]`.
pub fn parse_reference(text: &str) -> Result<Reference> {
    let invalid = |message: String| Error::Reference { reference: text.to_string(), message };
    if !text.contains('/') {
        return Err(invalid("expected host[:port]/path[:tag], e.g. 127.0.0.1:5000/models/digits:1".into()));
    }
    Reference::from_str(text).map_err(|e| invalid(e.to_string()))
}

/// Whether `registry` (`host[:port]`) is this machine.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A client for the registry of one reference.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    registry: String,
}

impl Registry {
    /// A client for `reference`'s registry: plain HTTP for loopback or `options.insecure`
    /// hosts, HTTPS (system roots) otherwise.
    pub fn for_reference(reference: &Reference, options: &RegistryOptions) -> Result<Registry> {
        // reqwest's rustls uses the process-wide provider: ring, as the server's own TLS.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = reference.resolve_registry().to_string();
        let plain = is_loopback(&registry) || options.insecure.iter().any(|host| host == &registry);
        let protocol = if plain { ClientProtocol::HttpsExcept(vec![registry.clone()]) } else { ClientProtocol::Https };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        let auth = credentials(&registry, options)?;
        Ok(Registry { client: Client::new(config), auth, registry })
    }

    fn failed(&self, error: impl std::error::Error) -> Error {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        Error::Registry { registry: self.registry.clone(), message }
    }

    /// Pushes `artifact` as `reference` and returns the manifest digest.
    pub async fn push(&self, reference: &Reference, artifact: &Artifact) -> Result<String> {
        self.client
            .push(reference, &artifact.layers, artifact.config.clone(), &self.auth, Some(artifact.manifest.clone()))
            .await
            .map_err(|e| self.failed(e))?;
        let digest = self.client.fetch_manifest_digest(reference, &self.auth).await.map_err(|e| self.failed(e))?;
        Ok(digest)
    }

    /// The repository's tags.
    pub async fn tags(&self, repository: &Reference) -> Result<Vec<String>> {
        let response = self.client.list_tags(repository, &self.auth, None, None).await.map_err(|e| self.failed(e))?;
        Ok(response.tags)
    }

    /// The manifest digest `reference` (a tag) points to now.
    pub async fn digest(&self, reference: &Reference) -> Result<String> {
        self.client.fetch_manifest_digest(reference, &self.auth).await.map_err(|e| self.failed(e))
    }

    /// The OCI manifest at `reference` and what it says it holds, checking the digest when
    /// the reference names one.
    pub async fn describe(&self, reference: &Reference) -> Result<(OciImageManifest, Described, String)> {
        let (manifest, digest) = self.client.pull_manifest(reference, &self.auth).await.map_err(|e| self.failed(e))?;
        if let Some(expected) = reference.digest()
            && expected != digest
        {
            return Err(Error::Refused {
                reference: reference.whole(),
                message: format!("the registry answered manifest {digest}, not {expected}"),
            });
        }
        let OciManifest::Image(manifest) = manifest else {
            return Err(Error::NotAModel {
                reference: reference.whole(),
                message: "an image index, not a model artifact".into(),
            });
        };
        let described = describe(&reference.whole(), &manifest)?;
        Ok((manifest, described, digest))
    }

    /// Pulls every layer of `manifest` (each one's digest checked as it arrives).
    pub async fn layers(&self, reference: &Reference, manifest: &OciImageManifest) -> Result<Vec<ImageLayer>> {
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for descriptor in &manifest.layers {
            if ![MANIFEST_MEDIA_TYPE, COMPONENT_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE]
                .contains(&descriptor.media_type.as_str())
            {
                return Err(Error::Refused {
                    reference: reference.whole(),
                    message: format!("unexpected layer of media type {}", descriptor.media_type),
                });
            }
            let mut data = Vec::new();
            self.client.pull_blob(reference, descriptor, &mut data).await.map_err(|e| self.failed(e))?;
            layers.push(ImageLayer::new(data, descriptor.media_type.clone(), descriptor.annotations.clone()));
        }
        Ok(layers)
    }
}

fn credentials(registry: &str, options: &RegistryOptions) -> Result<RegistryAuth> {
    if let Some((user, password)) = &options.credentials {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    use docker_credential::{CredentialRetrievalError as Missing, DockerCredential};
    match docker_credential::get_credential(registry) {
        Ok(DockerCredential::UsernamePassword(user, password)) => Ok(RegistryAuth::Basic(user, password)),
        Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
        Err(Missing::ConfigNotFound | Missing::NoCredentialConfigured | Missing::ConfigReadError) => {
            Ok(RegistryAuth::Anonymous)
        }
        Err(error) => Err(Error::Credentials { registry: registry.to_string(), message: error.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.0.0.2"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["registry.example.com", "10.0.0.1:5000", "ghcr.io", "[2001:db8::1]:443"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn references_need_a_registry_host() {
        assert!(parse_reference("digits:1").is_err());
        let reference = parse_reference("127.0.0.1:5000/models/digits:2").expect("parses");
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "models/digits");
        assert_eq!(reference.tag(), Some("2"));
    }
}
