//! TLS with rustls (no OpenSSL): certificate chain and key from PEM files, reloaded when
//! the files change (renewal without a restart; open connections keep their session), and an
//! optional client CA that makes clients present a certificate (mutual TLS), on every
//! listener or only on the admin listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

use super::file_stamps::FileStamps;
use crate::{Error, Result};

/// How often the files' modification times are looked at.
const RECHECK: Duration = Duration::from_millis(500);

/// `[tls]` in `edgeinfer.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain (PEM), e.g. `"server.pem"`.
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1), e.g. `"server.key"`.
    pub key: PathBuf,
    /// CA certificates (PEM) clients must present a certificate from, e.g. `"clients-ca.pem"`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Where client certificates are required: `"all"` listeners (default) or `"admin"` only.
    #[serde(default)]
    pub client_auth: ClientAuthScope,
}

/// See [`TlsSettings::client_auth`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthScope {
    /// Every listener.
    #[default]
    All,
    /// Only the admin listener.
    Admin,
}

/// The current server configurations: for the main listener, the admin listener, and the
/// gRPC listener (the main one's, speaking HTTP/2).
struct Configs {
    main: Arc<rustls::ServerConfig>,
    admin: Arc<rustls::ServerConfig>,
    grpc: Arc<rustls::ServerConfig>,
}

/// TLS acceptors that follow their certificate files.
pub struct TlsReloader {
    settings: TlsSettings,
    configs: ArcSwap<Configs>,
    files: FileStamps,
}

impl TlsReloader {
    /// Loads the certificate, key and client CA; every error names the file.
    pub fn load(settings: TlsSettings) -> Result<TlsReloader> {
        let configs = build(&settings)?;
        let paths = [Some(&settings.cert), Some(&settings.key), settings.client_ca.as_ref()];
        let files = FileStamps::new(paths.into_iter().flatten().cloned().collect(), RECHECK);
        Ok(TlsReloader { settings, configs: ArcSwap::from_pointee(configs), files })
    }

    /// The acceptor for a new connection (`admin`: on the admin listener), after taking in
    /// changed files; files that no longer load keep the last good configuration.
    pub fn acceptor(&self, admin: bool) -> TlsAcceptor {
        self.refresh();
        let configs = self.configs.load();
        TlsAcceptor::from(if admin { configs.admin.clone() } else { configs.main.clone() })
    }

    /// The acceptor for a new gRPC connection: the main listener's certificate and client
    /// authentication, with HTTP/2 negotiated (ALPN `h2`), as gRPC clients require.
    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        self.refresh();
        TlsAcceptor::from(self.configs.load().grpc.clone())
    }

    /// How often changed certificate files were reloaded or refused.
    pub fn reloads(&self) -> super::file_stamps::ReloadCounts {
        self.files.counts()
    }

    fn refresh(&self) {
        if !self.files.changed() {
            return;
        }
        match build(&self.settings) {
            Ok(configs) => {
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
                self.configs.store(Arc::new(configs));
                self.files.record(true);
            }
            Err(error) => {
                tracing::error!(%error, "TLS files changed but do not load; keeping the last good ones");
                self.files.record(false);
            }
        }
    }
}

fn tls_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("TLS file {}: {message}", path.display()))
}

fn build(settings: &TlsSettings) -> Result<Configs> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert)
        .map_err(|e| tls_error(&settings.cert, e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(&settings.cert, e))?;
    if certs.is_empty() {
        return Err(tls_error(&settings.cert, "no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| tls_error(&settings.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config =
        |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>| -> Result<Arc<rustls::ServerConfig>> {
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(rustls::DEFAULT_VERSIONS)
                .map_err(|e| Error::Config(format!("TLS: {e}")))?;
            let builder = match verifier {
                Some(verifier) => builder.with_client_cert_verifier(verifier),
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_single_cert(certs.clone(), key.clone_key()).map_err(|e| {
                tls_error(&settings.key, format!("does not match the certificate {}: {e}", settings.cert.display()))
            })?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        };
    let verifier = match &settings.client_ca {
        None => None,
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| tls_error(path, e))? {
                roots.add(cert.map_err(|e| tls_error(path, e))?).map_err(|e| tls_error(path, e))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| tls_error(path, e))?;
            Some(verifier)
        }
    };
    let plain = config(None)?;
    let mutual = verifier.map(|v| config(Some(v))).transpose()?;
    let (main, admin) = match (mutual, settings.client_auth) {
        (None, _) => (plain.clone(), plain),
        (Some(mutual), ClientAuthScope::All) => (mutual.clone(), mutual),
        (Some(mutual), ClientAuthScope::Admin) => (plain, mutual),
    };
    let mut grpc = (*main).clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Configs { main, admin, grpc: Arc::new(grpc) })
}
