//! Who may do what: bearer tokens with scopes, per-caller quotas, lockout after repeated
//! authentication failures, and the audit log. The HTTP layer asks [`Security::admit`] before
//! routing a request; health checks stay open for load balancers.

pub mod audit;
pub mod file_stamps;
pub mod quotas;
pub mod tls;
pub mod tokens;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use hyper::Method;

use serde::Deserialize;

use crate::{Error, Result};

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Bearer tokens with scopes, from the tokens file.
    Tokens,
    /// Anyone who reaches the port.
    None,
}

/// What [`Security`] is built from: the listeners (to tell loopback-only servers) and the
/// authentication, quota, lockout and audit settings of `edgeinfer.toml`.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// Every address the server listens on.
    pub listeners: Vec<std::net::SocketAddr>,
    /// `auth`; unset: none.
    pub auth: Option<AuthMode>,
    /// `insecure_no_auth`.
    pub insecure_no_auth: bool,
    /// `tokens_file` (default `<repo>/.edgeinfer/tokens.toml`).
    pub tokens_file: Option<std::path::PathBuf>,
    /// `audit_file` (default `<repo>/.edgeinfer/audit.jsonl`).
    pub audit_file: Option<std::path::PathBuf>,
    /// `audit_max_bytes`.
    pub audit_max_bytes: u64,
    /// `audit_keep`.
    pub audit_keep: usize,
    /// `serve --accept-broken-audit`: set a broken audit chain aside and begin a new one
    /// instead of refusing to start.
    pub accept_broken_audit: bool,
    /// `quotas`.
    pub quotas: TokenLimits,
    /// `lockout_failures`.
    pub lockout_failures: usize,
    /// `lockout_window_s`.
    pub lockout_window: Duration,
    /// `lockout_s`.
    pub lockout: Duration,
}

pub use audit::{AuditError, AuditEvent, AuditKind, AuditLog, ChainBreak, ChainReport};
pub use quotas::{CallerUsage, Lockout, Quotas, Throttle};
pub use tokens::{AuthFailure, Scope, TokenEntry, TokenLimits, TokenStore, TokensFile};

/// The one who sent a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address.
    pub peer: IpAddr,
    /// The token's entry, when authentication is on.
    pub token: Option<TokenEntry>,
}

impl Caller {
    /// The key quotas are kept under: the token's name, else the address.
    pub fn quota_key(&self) -> String {
        match &self.token {
            Some(token) => format!("token:{}", token.name),
            None => format!("addr:{}", self.peer),
        }
    }

    /// The token's own quota settings.
    pub fn limits(&self) -> TokenLimits {
        self.token.as_ref().map(|t| t.limits).unwrap_or_default()
    }

    /// The token's name.
    pub fn token_name(&self) -> Option<String> {
        self.token.as_ref().map(|t| t.name.clone())
    }

    /// `event` with this caller's address and token name.
    pub fn stamp(&self, event: AuditEvent) -> AuditEvent {
        AuditEvent { peer: Some(self.peer), token: self.token_name(), ..event }
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// 401: no valid credentials.
    Unauthenticated(AuthFailure),
    /// 403: valid token without the scope.
    Forbidden {
        /// The token.
        token: String,
        /// The scope the request needs.
        needed: Scope,
    },
    /// 429: the address is locked out after repeated failures.
    LockedOut(Duration),
}

/// Security settings and state of one server.
pub struct Security {
    /// The tokens, when authentication is on.
    pub tokens: Option<TokenStore>,
    /// Request rate and fuel quotas.
    pub quotas: Quotas,
    /// Lockout of addresses failing authentication.
    pub lockout: Lockout,
    /// The audit log, if configured.
    pub audit: Option<AuditLog>,
}

impl Security {
    /// The security of a server with `config` over the repository at `repo`. Refuses, before
    /// anything is bound, to serve a non-loopback address without authentication unless
    /// `insecure_no_auth` says so, and token authentication without a tokens file.
    pub fn from_settings(config: &SecuritySettings, repo: &Path) -> Result<Security> {
        let tokens_path = config.tokens_file.clone().unwrap_or_else(|| TokensFile::default_path(repo));
        let create = format!("`edgeinfer token create --tokens {} --name NAME --scope admin`", tokens_path.display());
        let loopback = config.listeners.iter().all(|a| a.ip().is_loopback());
        let exposed = config.listeners.iter().find(|a| !a.ip().is_loopback()).copied();
        let mode = config.auth.unwrap_or(AuthMode::None);
        if mode == AuthMode::None && !loopback && !config.insecure_no_auth {
            return Err(Error::Config(format!(
                "{} is reachable beyond this machine and authentication is off: create a token with {create} \
                 and set auth = \"tokens\", or pass --insecure-no-auth (insecure_no_auth = true) to serve \
                 without authentication",
                exposed.map_or_else(String::new, |a| a.to_string())
            )));
        }
        let tokens = match mode {
            AuthMode::Tokens if !tokens_path.is_file() => {
                return Err(Error::Config(format!(
                    "auth = \"tokens\" but the tokens file {} does not exist: create a token with {create}",
                    tokens_path.display()
                )));
            }
            AuthMode::Tokens => Some(TokenStore::open(&tokens_path)?),
            AuthMode::None => None,
        };
        let audit = open_audit(config, &config.audit_file.clone().unwrap_or_else(|| AuditLog::default_path(repo)))?;
        Ok(Security {
            tokens,
            quotas: Quotas::new(config.quotas),
            lockout: Lockout::new(config.lockout_failures, config.lockout_window, config.lockout),
            audit: Some(audit),
        })
    }

    /// Decides whether a request needing `needed` (none: open to all) gets in, and as whom.
    /// Failures are audited; failed authentications count towards the peer's lockout.
    pub fn admit(
        &self,
        peer: IpAddr,
        authorization: Option<&[u8]>,
        needed: Option<&Scope>,
        action: &str,
    ) -> Result<Caller, Denial> {
        let anonymous = Caller { peer, token: None };
        let (Some(store), Some(needed)) = (&self.tokens, needed) else {
            return Ok(anonymous);
        };
        if let Some(left) = self.lockout.locked(peer) {
            return Err(Denial::LockedOut(left));
        }
        let entry = match store.authenticate(authorization) {
            Ok(entry) => entry,
            Err(failure) => {
                self.audit(AuditKind::AuthFailed, &anonymous, action, "401", &failure.to_string());
                if self.lockout.failed(peer) {
                    tracing::warn!(%peer, "address locked out after repeated authentication failures (suspected intrusion)");
                    self.audit(AuditKind::Lockout, &anonymous, action, "429", "repeated authentication failures");
                }
                return Err(Denial::Unauthenticated(failure));
            }
        };
        if !entry.scopes.iter().any(|scope| scope.allows(needed)) {
            let caller = Caller { peer, token: Some(entry) };
            let token = caller.token_name().unwrap_or_default();
            let reason = format!("token '{token}' lacks scope {needed}");
            self.audit(AuditKind::Forbidden, &caller, action, "403", &reason);
            return Err(Denial::Forbidden { token, needed: needed.clone() });
        }
        Ok(Caller { peer, token: Some(entry) })
    }

    /// Appends to the audit log, when there is one.
    pub fn audit(&self, kind: AuditKind, caller: &Caller, action: &str, outcome: &str, reason: &str) {
        self.audit_event(caller.stamp(AuditEvent::new(kind, action, outcome, reason)));
    }

    /// Appends a prepared event, when there is an audit log.
    pub fn audit_event(&self, event: AuditEvent) {
        if let Some(log) = &self.audit {
            log.record(event);
        }
    }
}

/// The audit log, its chain checked: a broken one is refused (appending would bury the break)
/// unless `accept_broken_audit` says to set it aside.
fn open_audit(config: &SecuritySettings, path: &Path) -> Result<AuditLog> {
    let (max_bytes, keep) = (config.audit_max_bytes, config.audit_keep);
    let opened = if config.accept_broken_audit {
        AuditLog::open_or_restart(path, max_bytes, keep).map(|(log, restart)| {
            if let Some(restart) = restart {
                let moved: Vec<String> = restart.moved.iter().map(|p| p.display().to_string()).collect();
                tracing::warn!(broken = %restart.broken, moved = %moved.join(", "), "audit chain broken: its files were set aside and a new chain begun");
            }
            log
        })
    } else {
        AuditLog::open(path, max_bytes, keep)
    };
    opened.map_err(|error| match error {
        AuditError::Broken(broken) => Error::Config(format!(
            "the audit log's hash chain is broken at {broken}; the server will not append to it. Inspect it with `edgeinfer audit verify --file {}`; \
             to keep its files aside (renamed *.broken-<unix ms>, never deleted) and begin a new chain, start with \
             `edgeinfer serve --accept-broken-audit`",
            path.display()
        )),
        AuditError::Io { context, source } => Error::io(context, source),
    })
}

/// The scope a request needs (`None`: open, the health checks).
pub fn required_scope(method: &Method, segments: &[&str]) -> Option<Scope> {
    match segments {
        ["v2", "health", "live" | "ready"] | ["ui"] => None,
        ["v2", "models", model, "feedback"] => Some(Scope::Infer(Some((*model).to_string()))),
        ["v2", "models", model, "infer"] | ["v2", "models", model, "versions", _, "infer"] => {
            Some(Scope::Infer(Some((*model).to_string())))
        }
        ["v2", "repository", "index"] => Some(Scope::Read),
        ["v2", "repository", ..] | ["v2", "batch", ..] => Some(Scope::Admin),
        ["v2", "admin", ..] if *method == Method::GET => Some(Scope::Read),
        ["v2", "admin", ..] => Some(Scope::Admin),
        _ => Some(Scope::Read),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_needs_its_scope() {
        let scope = |method: Method, path: &str| {
            let segments: Vec<&str> = path.split('/').skip(1).collect();
            required_scope(&method, &segments).map(|s| s.to_string())
        };
        assert_eq!(scope(Method::GET, "/v2/health/live"), None);
        assert_eq!(scope(Method::GET, "/v2/health/ready"), None);
        assert_eq!(scope(Method::POST, "/v2/models/digits/infer").as_deref(), Some("infer:digits"));
        assert_eq!(scope(Method::POST, "/v2/models/digits/versions/2/infer").as_deref(), Some("infer:digits"));
        assert_eq!(scope(Method::GET, "/v2/models/digits").as_deref(), Some("read"));
        assert_eq!(scope(Method::POST, "/v2/repository/index").as_deref(), Some("read"));
        assert_eq!(scope(Method::POST, "/v2/repository/models/digits/unload").as_deref(), Some("admin"));
        assert_eq!(scope(Method::GET, "/v2/admin/models/digits/traffic").as_deref(), Some("read"));
        assert_eq!(scope(Method::PUT, "/v2/admin/models/digits/traffic").as_deref(), Some("admin"));
        assert_eq!(scope(Method::GET, "/metrics").as_deref(), Some("read"));
    }
}
