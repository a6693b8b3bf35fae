//! Bearer tokens and their scopes: the tokens file (TOML, mode 0600, only sha256 hashes of
//! tokens), scope checks, and a store that re-reads the file when it changes, so a revoked
//! token stops working within a second without a restart.

use edgeinfer_runtime::clock::rfc3339;
use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::file_stamps::FileStamps;
use crate::{Error, Result};

/// Every token starts with this, so leaked tokens are easy to recognise (secret scanners).
pub const TOKEN_PREFIX: &str = "ei_";
/// Random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;
/// How often the store looks at the file's modification time.
const RECHECK: Duration = Duration::from_millis(250);

/// What a token may do. `admin` implies `read` and `infer`; `infer` covers every model,
/// `infer:<model>` one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Run inferences on every model (`None`) or on one.
    Infer(Option<String>),
    /// Metadata, statistics, metrics, repository index, traffic and history reads.
    Read,
    /// Traffic changes, rollback, loading and unloading.
    Admin,
}

impl Scope {
    /// Whether holding `self` allows what `needed` guards.
    pub fn allows(&self, needed: &Scope) -> bool {
        match (self, needed) {
            (Scope::Admin, _) => true,
            (Scope::Read, Scope::Read) => true,
            (Scope::Infer(None), Scope::Infer(_)) => true,
            (Scope::Infer(Some(mine)), Scope::Infer(Some(model))) => mine == model,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Infer(None) => f.write_str("infer"),
            Scope::Infer(Some(model)) => write!(f, "infer:{model}"),
            Scope::Read => f.write_str("read"),
            Scope::Admin => f.write_str("admin"),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "infer" => Ok(Scope::Infer(None)),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => match other.strip_prefix("infer:") {
                Some(model) if !model.is_empty() && !model.contains(['/', ' ']) => {
                    Ok(Scope::Infer(Some(model.to_string())))
                }
                _ => Err(format!("unknown scope '{other}' (expected infer, infer:<model>, read or admin)")),
            },
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Per-token request rate and fuel quota; unset fields take the server's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLimits {
    /// Sustained requests per second, e.g. `50`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_s: Option<f64>,
    /// Requests allowed in a burst above the rate, e.g. `100`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Fuel the token's requests may consume per minute, e.g. `50000000000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_per_minute: Option<u64>,
}

/// One token as the file stores it: never the token itself, only its sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A unique name, e.g. `"ci-deployer"`.
    pub name: String,
    /// Hex sha256 of the token.
    pub sha256: String,
    /// What it may do, e.g. `["infer:digits", "read"]`.
    pub scopes: Vec<Scope>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// When it stops working (RFC 3339), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// When it was revoked (RFC 3339), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    /// Its rate and fuel quota.
    #[serde(default, flatten)]
    pub limits: TokenLimits,
}

/// The tokens file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// The tokens, by creation.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
}

impl TokensFile {
    /// The default tokens file of a repository: `<repo>/.edgeinfer/tokens.toml`.
    pub fn default_path(repo: &Path) -> PathBuf {
        edgeinfer_runtime::repository::state_dir(repo).join("tokens.toml")
    }

    /// Reads a tokens file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<TokensFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
            Err(error) => return Err(Error::io(format!("reading {}", path.display()), error)),
        };
        toml::from_str(&text)
            .map_err(|e| Error::Manifest { path: path.to_path_buf(), message: e.to_string().trim().into() })
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let context = || format!("writing {}", path.display());
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(context(), e))?;
        let text = toml::to_string_pretty(self).map_err(|e| Error::Runtime(format!("{}: {e}", context())))?;
        let staging = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("tokens")));
        let write = || -> std::io::Result<()> {
            let mut file =
                std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&staging)?;
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&staging, path)
        };
        write().map_err(|e| Error::io(context(), e))
    }

    /// Adds a token named `name` and returns the token, which is shown once and never stored.
    pub fn create(
        &mut self,
        name: &str,
        scopes: Vec<Scope>,
        expires_in: Option<Duration>,
        limits: TokenLimits,
    ) -> Result<String> {
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(Error::Runtime(format!("token name '{name}' must be 1-64 of A-Z a-z 0-9 - _ .")));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(Error::Runtime(format!(
                "a token named '{name}' already exists; revoke it or pick another name"
            )));
        }
        if scopes.is_empty() {
            return Err(Error::Runtime("a token needs at least one --scope".into()));
        }
        let mut secret = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut secret).map_err(|e| Error::Runtime(format!("drawing a token: {e}")))?;
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
        let now = OffsetDateTime::now_utc();
        self.tokens.push(TokenEntry {
            name: name.to_string(),
            sha256: token_hash(&token),
            scopes,
            created: rfc3339(now),
            expires: expires_in.map(|d| rfc3339(now + d)),
            revoked: None,
            limits,
        });
        Ok(token)
    }

    /// Marks the token named `name` revoked.
    pub fn revoke(&mut self, name: &str) -> Result<()> {
        let entry = self.tokens.iter_mut().find(|t| t.name == name);
        let entry = entry.ok_or_else(|| Error::NotFound(format!("no token named '{name}'")))?;
        if entry.revoked.is_none() {
            entry.revoked = Some(rfc3339(OffsetDateTime::now_utc()));
        }
        Ok(())
    }
}

/// The hex sha256 of a token, as the file stores it.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Why a request's credentials were refused (HTTP 401); never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization` header.
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    /// Not `Bearer <token>`.
    #[error("malformed Authorization header: expected 'Bearer <token>'")]
    Malformed,
    /// No token has this hash.
    #[error("unknown token")]
    Unknown,
    /// The token was revoked.
    #[error("token '{0}' was revoked")]
    Revoked(String),
    /// The token expired.
    #[error("token '{0}' expired")]
    Expired(String),
}

/// The tokens in force, re-read from their file when it changes.
pub struct TokenStore {
    path: PathBuf,
    tokens: ArcSwap<TokensFile>,
    file: FileStamps,
}

impl TokenStore {
    /// Opens the tokens file at `path` (it must parse; it may be empty).
    pub fn open(path: &Path) -> Result<TokenStore> {
        let tokens = TokensFile::load(path)?;
        Ok(TokenStore {
            path: path.to_path_buf(),
            tokens: ArcSwap::from_pointee(tokens),
            file: FileStamps::new(vec![path.to_path_buf()], RECHECK),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry a bearer `Authorization` header value names, checked for revocation and
    /// expiry. The hash is compared with every entry in constant time.
    pub fn authenticate(&self, header: Option<&[u8]>) -> std::result::Result<TokenEntry, AuthFailure> {
        self.refresh();
        let header = header.ok_or(AuthFailure::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthFailure::Malformed)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthFailure::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(char::is_whitespace) {
            return Err(AuthFailure::Malformed);
        }
        let hash = token_hash(token);
        let tokens = self.tokens.load();
        let mut found = None;
        for entry in &tokens.tokens {
            if bool::from(entry.sha256.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthFailure::Unknown)?;
        if entry.revoked.is_some() {
            return Err(AuthFailure::Revoked(entry.name.clone()));
        }
        let expired = entry
            .expires
            .as_deref()
            .and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok())
            .is_some_and(|at| at <= OffsetDateTime::now_utc());
        if expired {
            return Err(AuthFailure::Expired(entry.name.clone()));
        }
        Ok(entry.clone())
    }

    /// How often the changed tokens file was reloaded or refused.
    pub fn reloads(&self) -> super::file_stamps::ReloadCounts {
        self.file.counts()
    }

    /// Every token (no secrets), by name.
    pub fn entries(&self) -> BTreeMap<String, TokenEntry> {
        self.refresh();
        self.tokens.load().tokens.iter().map(|t| (t.name.clone(), t.clone())).collect()
    }

    /// Re-reads the file when its modification time or size changed; a file that no longer
    /// parses keeps the last good tokens (and says so in the log).
    fn refresh(&self) {
        if !self.file.changed() {
            return;
        }
        match TokensFile::load(&self.path) {
            Ok(tokens) => {
                tracing::info!(path = %self.path.display(), tokens = tokens.tokens.len(), "tokens file reloaded");
                self.tokens.store(std::sync::Arc::new(tokens));
                self.file.record(true);
            }
            Err(error) => {
                tracing::error!(%error, "tokens file unreadable; keeping the last good tokens");
                self.file.record(false);
            }
        }
    }
}

pub use edgeinfer_runtime::clock::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_imply() {
        let admin: Scope = "admin".parse().expect("admin");
        let digits: Scope = "infer:digits".parse().expect("infer:digits");
        assert!(admin.allows(&Scope::Read) && admin.allows(&digits));
        assert!(Scope::Infer(None).allows(&digits));
        assert!(digits.allows(&Scope::Infer(Some("digits".into()))));
        assert!(!digits.allows(&Scope::Infer(Some("other".into()))));
        assert!(!Scope::Read.allows(&digits) && !digits.allows(&Scope::Read));
        assert!("infer:".parse::<Scope>().is_err() && "root".parse::<Scope>().is_err());
        assert_eq!(digits.to_string(), "infer:digits");
    }

    #[test]
    fn the_file_keeps_hashes_only_and_is_private() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("tokens.toml");
        let mut file = TokensFile::default();
        let token = file
            .create("ci", vec![Scope::Read], Some(Duration::from_secs(60)), TokenLimits::default())
            .expect("create");
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64);
        file.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&token) && text.contains(&token_hash(&token)));
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(file.create("ci", vec![Scope::Read], None, TokenLimits::default()).is_err(), "names are unique");
        let store = TokenStore::open(&path).expect("store");
        let header = format!("Bearer {token}");
        assert_eq!(store.authenticate(Some(header.as_bytes())).expect("valid").name, "ci");
        assert_eq!(store.authenticate(None), Err(AuthFailure::Missing));
        assert_eq!(store.authenticate(Some(token.as_bytes())), Err(AuthFailure::Malformed));
        assert_eq!(store.authenticate(Some(b"Bearer ei_nope")), Err(AuthFailure::Unknown));
    }
}
