//! Data keys: the AES-256-GCM keys that seal monitoring data at rest (the prediction log).
//!
//! A key file holds one key per line, `<id> <base64 of 32 random bytes>`, oldest first;
//! `#` starts a comment. The last key seals new data; every key opens data sealed with it,
//! so rotating ([`rotate_key_file`]) appends a key and keeps the old ones for reading. A key's
//! id is its creation date and the first 8 hex digits of the sha256 of its secret
//! (`20261207-3fa2b1c9`), so a different secret never passes for the same id: data sealed with
//! a key the file does not hold is reported as such, naming the id.
//!
//! The file must be readable by its owner only (mode 0600 or stricter), like an ssh key. The
//! same text may come from the `EDGEINFER_DATA_KEY` environment variable instead (lines or
//! `,`-separated entries).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// The environment variable that may hold the key file's text.
pub const KEY_ENV: &str = "EDGEINFER_DATA_KEY";
/// Bytes of the AEAD tag appended to every sealed piece.
pub const TAG_BYTES: usize = 16;
/// Bytes of a nonce.
pub const NONCE_BYTES: usize = NONCE_LEN;
const SECRET_BYTES: usize = 32;
/// The longest key id (it is written in every sealed segment).
const MAX_ID: usize = 64;

/// What can go wrong with data keys and sealed data.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is readable by others.
    #[error("key file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`")]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line of the key text is not `<id> <base64 secret>`.
    #[error("{source_name} line {line}: {message}")]
    Malformed {
        /// The file or variable.
        source_name: String,
        /// 1-based line (entry) number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The key text holds no key.
    #[error("{0} holds no key: create one with `edgeinfer key create --out PATH`")]
    Empty(String),
    /// `key create` would overwrite a file.
    #[error("{0} exists already: keys are never overwritten (use `edgeinfer key rotate --file {0}`)")]
    Exists(PathBuf),
    /// Data sealed with a key the keyring does not hold.
    #[error("sealed with key '{id}', which {held}")]
    UnknownKey {
        /// The key id the data names.
        id: String,
        /// What the keyring holds, in words.
        held: String,
    },
    /// Sealed data failed authentication: altered on disk.
    #[error("fails authentication with key '{0}': the bytes were altered on disk")]
    Tampered(String),
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Encryption itself failed (the data is too large for one sealed piece).
    #[error("cannot seal {0} bytes in one piece")]
    Seal(usize),
}

/// One data key.
struct DataKey {
    id: String,
    key: LessSafeKey,
}

/// The keys of a key file: the newest seals, all open.
pub struct Keyring {
    keys: Vec<DataKey>,
    source_name: String,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("ids", &self.ids()).field("source", &self.source_name).finish()
    }
}

impl Keyring {
    /// The keys of the file at `path`, refused when group or others may read it.
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        Keyring::parse(&read_private(path)?, &path.display().to_string())
    }

    /// The keys of `$EDGEINFER_DATA_KEY`, if set.
    pub fn from_env() -> Result<Option<Keyring>, KeyError> {
        match std::env::var(KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => Keyring::parse(&text.replace(',', "\n"), KEY_ENV).map(Some),
            _ => Ok(None),
        }
    }

    /// The keys of key-file text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Keyring, KeyError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let malformed = |message: String| KeyError::Malformed {
                source_name: source_name.to_string(),
                line: index + 1,
                message,
            };
            let mut parts = line.split_whitespace();
            let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(malformed("expected `<id> <base64 secret>`".into()));
            };
            let secret = STANDARD.decode(secret).map_err(|e| malformed(format!("secret is not base64: {e}")))?;
            if secret.len() != SECRET_BYTES {
                return Err(malformed(format!("secret has {} bytes, keys have {SECRET_BYTES}", secret.len())));
            }
            if id.len() > MAX_ID {
                return Err(malformed(format!("id has {} bytes, at most {MAX_ID}", id.len())));
            }
            if !id.ends_with(&fingerprint(&secret)) {
                return Err(malformed(format!("id '{id}' does not end with its secret's fingerprint")));
            }
            let key = UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| malformed("unusable secret".into()))?;
            keys.push(DataKey { id: id.to_string(), key: LessSafeKey::new(key) });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty(source_name.to_string()));
        }
        Ok(Keyring { keys, source_name: source_name.to_string() })
    }

    /// Key ids, oldest first (the last one seals).
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key that seals new data.
    pub fn current_id(&self) -> &str {
        &self.current().id
    }

    fn current(&self) -> &DataKey {
        self.keys.last().expect("a keyring holds at least one key")
    }

    /// Encrypts `data` in place with the current key, appending the tag; returns the key id
    /// and the nonce. `aad` is authenticated with it, not stored.
    pub fn seal(&self, aad: &[u8], data: &mut Vec<u8>) -> Result<(&str, [u8; NONCE_BYTES]), KeyError> {
        let mut nonce = [0u8; NONCE_BYTES];
        SystemRandom::new().fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let key = self.current();
        let length = data.len();
        key.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            .map_err(|_| KeyError::Seal(length))?;
        Ok((&key.id, nonce))
    }

    /// Decrypts `data` (ciphertext and tag) sealed with key `id`, in place; returns the
    /// plaintext part.
    pub fn open<'d>(
        &self,
        id: &str,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        data: &'d mut [u8],
    ) -> Result<&'d mut [u8], KeyError> {
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            return Err(KeyError::UnknownKey { id: id.to_string(), held: self.holds() });
        };
        key.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            .map_err(|_| KeyError::Tampered(id.to_string()))
            .map(|plain| &mut plain[..])
    }

    /// "the key file X holds only a, b".
    fn holds(&self) -> String {
        format!("{} does not hold (it holds {})", self.source_name, self.ids().join(", "))
    }
}

/// The error for data sealed with `id` when no key was given at all.
pub fn no_keyring(id: &str) -> KeyError {
    KeyError::UnknownKey {
        id: id.to_string(),
        held: "was not given: pass the key file (`--data-key PATH` or `data_key_file`)".into(),
    }
}

/// The first 8 hex digits of the sha256 of `secret`.
fn fingerprint(secret: &[u8]) -> String {
    hex::encode(&Sha256::digest(secret)[..4])
}

/// A new key line, `<id> <base64 secret>`.
fn new_key_line() -> Result<String, KeyError> {
    let mut secret = [0u8; SECRET_BYTES];
    SystemRandom::new().fill(&mut secret).map_err(|_| KeyError::Random)?;
    let date = edgeinfer_runtime::clock::now_rfc3339().get(..10).unwrap_or("0000-00-00").replace('-', "");
    Ok(format!("{date}-{} {}\n", fingerprint(&secret), STANDARD.encode(secret)))
}

const HEADER: &str = "# edgeinfer data keys: keep this file secret (0600) and backed up.\n\
                      # The last key seals new data; older keys stay to open data sealed with them.\n";

/// Writes a new key file with one key at `path` (mode 0600, never overwriting); returns its id.
pub fn create_key_file(path: &Path) -> Result<String, KeyError> {
    let line = new_key_line()?;
    let io = |what, source| KeyError::Io { what, path: path.into(), source };
    let mut file = private_file(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.into()),
        _ => io("creating key file", source),
    })?;
    file.write_all(HEADER.as_bytes()).and_then(|()| file.write_all(line.as_bytes())).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    Ok(line.split(' ').next().unwrap_or_default().to_string())
}

/// Appends a new key to the key file at `path` (atomically: a 0600 temporary file renamed
/// over it); the new key seals from now on, the old ones still open. Returns the new id.
pub fn rotate_key_file(path: &Path) -> Result<String, KeyError> {
    let text = read_private(path)?;
    Keyring::parse(&text, &path.display().to_string())?; // only a valid key file is extended
    let line = new_key_line()?;
    let temporary = path.with_extension("rotating");
    let io = |what, source| KeyError::Io { what, path: temporary.clone(), source };
    let _ = std::fs::remove_file(&temporary);
    let mut file = private_file(&temporary).map_err(|e| io("creating", e))?;
    let mut joined = text;
    if !joined.ends_with('\n') {
        joined.push('\n');
    }
    joined.push_str(&line);
    file.write_all(joined.as_bytes()).map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("syncing", e))?;
    std::fs::rename(&temporary, path).map_err(|e| io("renaming", e))?;
    Ok(line.split(' ').next().unwrap_or_default().to_string())
}

/// Creates `path` (it must not exist) for writing, with mode 0600.
pub(crate) fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// The text of a key file that only its owner may read.
fn read_private(path: &Path) -> Result<String, KeyError> {
    check_private(path)?;
    std::fs::read_to_string(path).map_err(|source| KeyError::Io { what: "reading key file", path: path.into(), source })
}

/// Refuses a key file that group or others may read or write.
fn check_private(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path).map_err(|source| KeyError::Io {
            what: "reading key file",
            path: path.into(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed { path: path.into(), mode });
        }
    }
    Ok(())
}

/// Where a writer's keys come from: a key file re-read when it changes (so `edgeinfer key
/// rotate` takes effect without a restart), or fixed keys (the environment variable).
pub struct KeySource {
    path: Option<PathBuf>,
    keyring: std::sync::Arc<Keyring>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// How often a key file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);

impl KeySource {
    /// Keys from the file at `path`, re-read when it changes.
    pub fn file(path: &Path) -> Result<KeySource, KeyError> {
        let keyring = Keyring::load(path)?;
        Ok(KeySource {
            path: Some(path.into()),
            keyring: keyring.into(),
            modified: modified(path),
            checked: Instant::now(),
        })
    }

    /// Fixed keys.
    pub fn fixed(keyring: Keyring) -> KeySource {
        KeySource { path: None, keyring: keyring.into(), modified: None, checked: Instant::now() }
    }

    /// The keys of the key file at `path` when given, else of `$EDGEINFER_DATA_KEY` when
    /// set, else none (data stays plain).
    pub fn from_file_or_env(path: Option<&Path>) -> Result<Option<KeySource>, KeyError> {
        match path {
            Some(path) => KeySource::file(path).map(Some),
            None => Ok(Keyring::from_env()?.map(KeySource::fixed)),
        }
    }

    /// The keys now: the file re-read if it changed (a file that no longer loads keeps the
    /// keys it had, with a warning).
    pub fn keyring(&mut self) -> std::sync::Arc<Keyring> {
        if let Some(path) = &self.path
            && self.checked.elapsed() >= RECHECK
        {
            self.checked = Instant::now();
            let now = modified(path);
            if now != self.modified {
                self.modified = now;
                match Keyring::load(path) {
                    Ok(keyring) => {
                        tracing::info!(key = keyring.current_id(), "data key file changed: sealing with its last key");
                        self.keyring = keyring.into();
                    }
                    Err(error) => tracing::warn!(%error, "data key file changed but does not load; keeping its keys"),
                }
            }
        }
        self.keyring.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_seal_rotate_and_refuse_what_they_cannot_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.key");
        let first = create_key_file(&path).expect("create");
        assert!(matches!(create_key_file(&path), Err(KeyError::Exists(_))), "never overwritten");
        let old = Keyring::load(&path).expect("load");
        let mut sealed = b"secret row".to_vec();
        let (id, nonce) = old.seal(b"aad", &mut sealed).map(|(id, n)| (id.to_string(), n)).expect("seal");
        assert_eq!(id, first);
        assert!(!sealed.windows(10).any(|w| w == b"secret row"));

        let second = rotate_key_file(&path).expect("rotate");
        let rotated = Keyring::load(&path).expect("load rotated");
        assert_eq!(rotated.ids(), vec![first.as_str(), second.as_str()]);
        assert_eq!(rotated.current_id(), second);
        let mut copy = sealed.clone();
        assert_eq!(rotated.open(&id, nonce, b"aad", &mut copy).expect("old key opens"), b"secret row");

        let mut flipped = sealed.clone();
        flipped[3] ^= 1;
        assert!(matches!(rotated.open(&id, nonce, b"aad", &mut flipped), Err(KeyError::Tampered(_))));
        let mut other_aad = sealed.clone();
        assert!(matches!(rotated.open(&id, nonce, b"other", &mut other_aad), Err(KeyError::Tampered(_))));

        let stranger = dir.path().join("other.key");
        create_key_file(&stranger).expect("create other");
        let error = Keyring::load(&stranger).expect("load").open(&id, nonce, b"aad", &mut sealed).unwrap_err();
        assert!(error.to_string().contains(&first), "names the missing key: {error}");
    }

    #[test]
    fn exposed_or_malformed_key_files_are_refused_with_the_reason() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data.key");
        create_key_file(&path).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(Keyring::load(&path).unwrap_err().to_string().contains("chmod 600"));

        let cases = [
            ("", "holds no key"),
            ("# only a comment\n", "holds no key"),
            ("justone\n", "line 1"),
            ("20261207-00000000 notbase64!\n", "not base64"),
            ("20261207-00000000 AAAA\n", "3 bytes"),
        ];
        for (text, expected) in cases {
            let error = Keyring::parse(text, "test").unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let line = new_key_line().expect("line");
        let forged = format!("20261207-ffffffff {}", line.split(' ').nth(1).expect("secret"));
        assert!(Keyring::parse(&forged, "test").unwrap_err().to_string().contains("fingerprint"));
    }
}
