//! The audit log: one JSON object per line, flushed on every write, for what matters after an
//! incident (failed authentication, forbidden and throttled requests, lockouts, admin changes,
//! refused components, guest traps). Rotated by size, keeping a fixed number of old files.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A request without a valid token (401).
    AuthFailed,
    /// A valid token without the scope needed (403).
    Forbidden,
    /// A request over its caller's rate or fuel quota (429).
    Throttled,
    /// An address locked out after repeated authentication failures.
    Lockout,
    /// An admin change (traffic, rollback, load, unload).
    AdminChange,
    /// A model version refused (digest, signature, capability, smoke test).
    VersionRefused,
    /// An inference stopped by its fuel, deadline or memory limit, or a guest trap.
    GuestTrap,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When (RFC 3339).
    pub time: String,
    /// What.
    pub kind: AuditKind,
    /// The client's address, when a client was involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<IpAddr>,
    /// The token's name (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The request (`METHOD /path`) or operation.
    pub action: String,
    /// The model concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The version concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The HTTP status or outcome.
    pub outcome: String,
    /// Why.
    pub reason: String,
}

impl AuditEvent {
    /// An event happening now, with no peer, token, model or version yet.
    pub fn new(kind: AuditKind, action: &str, outcome: &str, reason: &str) -> AuditEvent {
        AuditEvent {
            time: edgeinfer_runtime::clock::now_rfc3339(),
            kind,
            peer: None,
            token: None,
            action: action.to_string(),
            model: None,
            version: None,
            outcome: outcome.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// An append-only, size-rotated JSON-lines file.
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    lock: Mutex<()>,
}

impl AuditLog {
    /// An audit log at `path`, rotated past `max_bytes` keeping `keep` older files
    /// (`audit.jsonl.1` the newest).
    pub fn new(path: &Path, max_bytes: u64, keep: usize) -> AuditLog {
        AuditLog { path: path.to_path_buf(), max_bytes, keep, lock: Mutex::new(()) }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event; a failure is logged, never fails the request being audited.
    pub fn record(&self, event: AuditEvent) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = self.append(&event) {
            tracing::error!(path = %self.path.display(), %error, ?event, "cannot write the audit log");
        }
    }

    fn append(&self, event: &AuditEvent) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.max_bytes) {
            self.rotate()?;
        }
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        file.write_all(&line)?;
        file.flush()
    }

    /// `audit.jsonl` -> `.1` -> `.2` ...; the oldest beyond `keep` is removed.
    fn rotate(&self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            if numbered(n).exists() {
                std::fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        if self.keep == 0 { std::fs::remove_file(&self.path) } else { std::fs::rename(&self.path, numbered(1)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            time: "2026-11-26T00:00:00Z".into(),
            kind: AuditKind::AuthFailed,
            peer: Some(IpAddr::from([127, 0, 0, 1])),
            token: None,
            action: format!("GET /v2/{n}"),
            model: None,
            version: None,
            outcome: "401".into(),
            reason: "unknown token".into(),
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("audit.jsonl");
        let log = AuditLog::new(&path, 300, 2);
        for n in 0..20 {
            log.record(event(n));
        }
        assert!(
            path.exists() && temp.path().join("audit.jsonl.1").exists() && temp.path().join("audit.jsonl.2").exists()
        );
        assert!(!temp.path().join("audit.jsonl.3").exists());
        let last: Vec<AuditEvent> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(last.last().expect("one").action, "GET /v2/19");
    }
}
