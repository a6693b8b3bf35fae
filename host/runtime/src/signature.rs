//! Signed model versions: an ed25519 signature over what a version directory holds, in the
//! layout of the OpenSSF model-signing work: an in-toto statement listing each file's sha256
//! (`manifest.toml`, which pins the component's and the ONNX source's digests, and the
//! component itself), wrapped in a DSSE envelope, written as `<version>/signature.json`.
//!
//! ```json
//! {"payloadType": "application/vnd.in-toto+json",
//!  "payload": "<base64 of the statement>",
//!  "signatures": [{"keyid": "<hex sha256 of the raw public key>", "sig": "<base64 ed25519 over PAE>"}]}
//! ```
//! PAE is DSSE's pre-authentication encoding: `DSSEv1 <len(type)> <type> <len(payload)> <payload>`.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::digest::sha256_hex;
use crate::manifest::Manifest;
use crate::{Error, Result};

/// The signature file in a version directory.
pub const SIGNATURE_FILE: &str = "signature.json";
const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
const PREDICATE_TYPE: &str = "https://edgeinfer.dev/model-signing/v1";

/// A DSSE envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope {
    payload_type: String,
    payload: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeSignature {
    keyid: String,
    sig: String,
}

/// The in-toto statement's subject: one file and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Subject {
    name: String,
    digest: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: serde_json::Value,
}

/// Writes an ed25519 key pair: `<out>.key` (PKCS#8 PEM, mode 0600) and `<out>.pub` (SPKI PEM).
pub fn generate_key_pair(out: &Path) -> Result<(PathBuf, PathBuf)> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Runtime(format!("drawing a key: {e}")))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::Runtime(format!("encoding the key: {e}")))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::Runtime(format!("encoding the public key: {e}")))?;
    let key_path = out.with_extension("key");
    let pub_path = out.with_extension("pub");
    let write_private = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&key_path)?;
        std::io::Write::write_all(&mut file, private.as_bytes())
    };
    write_private().map_err(|e| Error::io(format!("writing {}", key_path.display()), e))?;
    std::fs::write(&pub_path, public).map_err(|e| Error::io(format!("writing {}", pub_path.display()), e))?;
    Ok((key_path, pub_path))
}

/// Reads a private key written by [`generate_key_pair`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|e| Error::Config(format!("{} is not an ed25519 private key (PKCS#8 PEM): {e}", path.display())))
}

/// Reads a public key written by [`generate_key_pair`].
pub fn read_public_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|e| Error::Config(format!("{} is not an ed25519 public key (SPKI PEM): {e}", path.display())))
}

/// The key id of a public key: hex sha256 of its 32 raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())
}

/// DSSE's pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The subjects of a version directory: the manifest and the component it names.
fn subjects(dir: &Path) -> Result<Vec<Subject>> {
    let manifest_path = dir.join("manifest.toml");
    let manifest = Manifest::load(&manifest_path)?;
    let mut subjects = Vec::new();
    for name in ["manifest.toml".to_string(), manifest.component.file.clone()] {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        subjects.push(Subject { name, digest: [("sha256".to_string(), sha256_hex(&bytes))].into() });
    }
    Ok(subjects)
}

/// Signs the version in `dir` with `key`, writing `dir/signature.json`.
pub fn sign_version(dir: &Path, key: &SigningKey) -> Result<PathBuf> {
    let manifest = Manifest::load(&dir.join("manifest.toml"))?;
    let statement = Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: subjects(dir)?,
        predicate_type: PREDICATE_TYPE.into(),
        predicate: json!({"model": manifest.name, "version": manifest.version}),
    };
    let payload = serde_json::to_vec(&statement).map_err(Error::runtime)?;
    let signature = key.sign(&pae(PAYLOAD_TYPE, &payload));
    let envelope = Envelope {
        payload_type: PAYLOAD_TYPE.into(),
        payload: STANDARD.encode(&payload),
        signatures: vec![EnvelopeSignature {
            keyid: key_id(&key.verifying_key()),
            sig: STANDARD.encode(signature.to_bytes()),
        }],
    };
    let path = dir.join(SIGNATURE_FILE);
    let text = serde_json::to_string_pretty(&envelope).map_err(Error::runtime)?;
    std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// What signatures a repository's versions must carry.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    trusted: Vec<VerifyingKey>,
}

/// What [`SignaturePolicy::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No signature file, and none required.
    Unsigned,
    /// Signed by a trusted key (its id).
    Trusted(String),
    /// Signed consistently by a key nobody said to trust (its id); allowed only without
    /// trusted keys.
    Untrusted(String),
}

impl SignaturePolicy {
    /// Every version must be signed by one of `trusted` (none: signatures are checked when
    /// present, not required).
    pub fn new(trusted: Vec<VerifyingKey>) -> SignaturePolicy {
        SignaturePolicy { trusted }
    }

    /// Reads the trusted public keys from PEM files.
    pub fn from_files(paths: &[PathBuf]) -> Result<SignaturePolicy> {
        Ok(SignaturePolicy::new(paths.iter().map(|p| read_public_key(p)).collect::<Result<_>>()?))
    }

    /// Whether signatures are required.
    pub fn required(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// Checks the version in `dir`: unsigned, wrongly signed, or signed and then modified
    /// versions are refused when keys are trusted; a signature present but not matching
    /// the files is refused in any case.
    pub fn check(&self, dir: &Path) -> Result<SignatureStatus> {
        let refuse = |message: String| Err(Error::Signature { dir: dir.to_path_buf(), message });
        let path = dir.join(SIGNATURE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return if self.required() {
                    refuse(format!("unsigned: no {SIGNATURE_FILE}, and trusted_keys requires a signature"))
                } else {
                    Ok(SignatureStatus::Unsigned)
                };
            }
            Err(error) => return Err(Error::io(format!("reading {}", path.display()), error)),
        };
        let envelope: Envelope = match serde_json::from_str(&text) {
            Ok(envelope) => envelope,
            Err(error) => return refuse(format!("{SIGNATURE_FILE} is not a DSSE envelope: {error}")),
        };
        if envelope.payload_type != PAYLOAD_TYPE {
            return refuse(format!("payload type '{}', expected {PAYLOAD_TYPE}", envelope.payload_type));
        }
        let Ok(payload) = STANDARD.decode(&envelope.payload) else {
            return refuse("the payload is not base64".into());
        };
        let message = pae(PAYLOAD_TYPE, &payload);
        let mut signer = None;
        for entry in &envelope.signatures {
            let Ok(bytes) = STANDARD.decode(&entry.sig) else { continue };
            let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else { continue };
            if let Some(key) = self.trusted.iter().find(|k| k.verify(&message, &signature).is_ok()) {
                signer = Some(SignatureStatus::Trusted(key_id(key)));
                break;
            }
            if self.trusted.is_empty() {
                signer = Some(SignatureStatus::Untrusted(entry.keyid.clone()));
            }
        }
        let Some(signer) = signer else {
            return refuse("not signed by any trusted key (wrong key or a forged signature)".into());
        };
        let statement: Statement = match serde_json::from_slice(&payload) {
            Ok(statement) => statement,
            Err(error) => return refuse(format!("the signed statement is malformed: {error}")),
        };
        if statement.statement_type != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
            return refuse("the signed statement is not an edgeinfer model-signing statement".into());
        }
        let actual = subjects(dir)?;
        for subject in &actual {
            match statement.subject.iter().find(|s| s.name == subject.name) {
                Some(signed) if signed.digest == subject.digest => {}
                Some(_) => return refuse(format!("{} was modified after it was signed", subject.name)),
                None => return refuse(format!("{} is not covered by the signature", subject.name)),
            }
        }
        Ok(signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_follows_dsse() {
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
    }
}
