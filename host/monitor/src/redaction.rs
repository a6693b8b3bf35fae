//! Redaction of logged predictions, per model (`[redaction]` in `<repo>/<model>/config.toml`):
//! each input or output tensor is kept (the default), dropped (logged as its name, datatype
//! and shape only) or hashed (each element replaced by a keyed hash, so records still join on
//! it while the value is gone). Applied by the log's writer before anything is written.
//!
//! The hash is HMAC-SHA256 under the repository's redaction key (`redaction.key` in its state
//! directory, 32 random bytes, mode 0600, created on first use), truncated to 128 bits and
//! written as 32 hex digits: a hashed tensor is a BYTES tensor of the same shape.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use edgeinfer_oip::{Datatype, Tensor};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keys::KeyError;

/// What happens to one tensor in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Logged as it is.
    #[default]
    Keep,
    /// Each element replaced by its keyed hash (a BYTES tensor of the same shape).
    Hash,
    /// Not logged: name, datatype and shape only.
    Drop,
}

/// `[redaction]`: rules by tensor name; tensors not named are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redaction {
    /// Inputs by name, e.g. `{ ssn = "drop", customer_id = "hash" }`.
    pub inputs: BTreeMap<String, Rule>,
    /// Outputs by name, e.g. `{ probabilities = "drop" }`.
    pub outputs: BTreeMap<String, Rule>,
}

impl Redaction {
    /// Whether every tensor is kept.
    pub fn keeps_all(&self) -> bool {
        self.inputs.values().chain(self.outputs.values()).all(|r| *r == Rule::Keep)
    }

    /// Names a rule for a tensor the model does not have (`inputs`, `outputs`: its names).
    pub fn check(&self, inputs: &[&str], outputs: &[&str]) -> Result<(), String> {
        for (side, rules, names) in [("inputs", &self.inputs, inputs), ("outputs", &self.outputs, outputs)] {
            if let Some(unknown) = rules.keys().find(|name| !names.contains(&name.as_str())) {
                return Err(format!(
                    "[redaction] {side} names '{unknown}', which the model does not have ({side}: {})",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Applies the rules to a record's tensors; returns what was done to each redacted one.
    pub fn apply(&self, key: &HashKey, inputs: &mut [Tensor], outputs: &mut [Tensor]) -> BTreeMap<String, Rule> {
        let mut done = BTreeMap::new();
        for (rules, tensors) in [(&self.inputs, inputs), (&self.outputs, outputs)] {
            for tensor in tensors.iter_mut() {
                let rule = rules.get(&tensor.name).copied().unwrap_or_default();
                match rule {
                    Rule::Keep => continue,
                    Rule::Drop => tensor.data = Default::default(),
                    Rule::Hash => *tensor = key.hash_tensor(tensor),
                }
                done.insert(tensor.name.clone(), rule);
            }
        }
        done
    }
}

/// The key of redaction hashes.
pub struct HashKey([u8; 32]);

impl HashKey {
    /// The key at `path`.
    pub fn load(path: &Path) -> Result<HashKey, KeyError> {
        let io = |source| KeyError::Io { what: "reading redaction key", path: path.into(), source };
        let bytes = std::fs::read(path).map_err(io)?;
        let key = bytes
            .try_into()
            .map_err(|bytes: Vec<u8>| io(std::io::Error::other(format!("{} bytes, not 32", bytes.len()))))?;
        Ok(HashKey(key))
    }

    /// The key at `path`, created (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> Result<HashKey, KeyError> {
        let io = |what, source| KeyError::Io { what, path: path.into(), source };
        match std::fs::read(path) {
            Ok(_) => HashKey::load(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| KeyError::Random)?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
                }
                match crate::keys::private_file(path) {
                    Ok(mut file) => {
                        file.write_all(&key).and_then(|()| file.sync_all()).map_err(|e| io("writing", e))?;
                        Ok(HashKey(key))
                    }
                    // Another process created it first: use theirs.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => HashKey::load_or_create(path),
                    Err(error) => Err(io("creating redaction key", error)),
                }
            }
            Err(error) => Err(io("reading redaction key", error)),
        }
    }

    /// `tensor` with every element replaced by its keyed hash: BYTES, same name and shape.
    pub fn hash_tensor(&self, tensor: &Tensor) -> Tensor {
        let elements: Vec<&[u8]> = match tensor.datatype.element_size() {
            Some(size) if size > 0 => tensor.data.chunks(size).collect(),
            _ => bytes_elements(&tensor.data),
        };
        let mut data = Vec::with_capacity(elements.len() * 36);
        for element in elements {
            let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
            mac.update(element);
            let digest = hex::encode(&mac.finalize().into_bytes()[..16]);
            data.extend_from_slice(&(digest.len() as u32).to_le_bytes());
            data.extend_from_slice(digest.as_bytes());
        }
        Tensor { name: tensor.name.clone(), datatype: Datatype::Bytes, shape: tensor.shape.clone(), data: data.into() }
    }
}

/// The elements of BYTES data (4-byte little-endian length, then the bytes); a length past
/// the end takes the rest.
fn bytes_elements(mut data: &[u8]) -> Vec<&[u8]> {
    let mut elements = Vec::new();
    while data.len() >= 4 {
        let length = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let end = (4 + length).min(data.len());
        elements.push(&data[4..end]);
        data = &data[end..];
    }
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, datatype: Datatype, data: Vec<u8>, count: u64) -> Tensor {
        Tensor { name: name.into(), datatype, shape: vec![count], data: data.into() }
    }

    #[test]
    fn rules_drop_hash_and_keep_and_hashes_join() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = HashKey::load_or_create(&dir.path().join("redaction.key")).expect("key");
        let again = HashKey::load_or_create(&dir.path().join("redaction.key")).expect("same key");
        let rules: Redaction = toml::from_str(
            "inputs = { ssn = \"drop\", email = \"hash\" }\noutputs = { score = \"hash\", label = \"keep\" }",
        )
        .expect("toml");
        let mut email = Vec::new();
        for value in ["a@x.org", "b@x.org", "a@x.org"] {
            email.extend_from_slice(&(value.len() as u32).to_le_bytes());
            email.extend_from_slice(value.as_bytes());
        }
        let floats: Vec<u8> = [1.5f32, 2.5].iter().flat_map(|f| f.to_le_bytes()).collect();
        let mut inputs = vec![
            tensor("ssn", Datatype::Fp32, floats.clone(), 2),
            tensor("email", Datatype::Bytes, email, 3),
            tensor("age", Datatype::Fp32, floats.clone(), 2),
        ];
        let mut outputs =
            vec![tensor("score", Datatype::Fp32, floats.clone(), 2), tensor("label", Datatype::Int64, vec![7; 16], 2)];
        let done = rules.apply(&key, &mut inputs, &mut outputs);
        assert_eq!(done.len(), 3);
        assert!(inputs[0].data.is_empty() && inputs[0].shape == vec![2], "dropped: shape only");
        let hashed = edgeinfer_oip::bytes_items(&inputs[1].data).expect("bytes");
        assert_eq!(hashed.len(), 3);
        assert_eq!(hashed[0], hashed[2], "equal values hash equal: joins work");
        assert_ne!(hashed[0], hashed[1]);
        assert!(!hashed[0].contains('@'));
        assert_eq!(
            again
                .hash_tensor(&tensor("email", Datatype::Bytes, [&7u32.to_le_bytes()[..], b"a@x.org"].concat(), 1))
                .data[4..],
            *hashed[0].as_bytes()
        );
        assert_eq!(inputs[2].data, floats, "not named: kept");
        assert_eq!(outputs[0].datatype, Datatype::Bytes);
        assert_eq!(outputs[1].data, vec![7; 16]);
        assert!(rules.check(&["ssn", "email", "age"], &["score", "label"]).is_ok());
        let error = rules.check(&["email", "age"], &["score", "label"]).unwrap_err();
        assert!(error.contains("'ssn'"), "{error}");
        assert!(toml::from_str::<Redaction>("inputs = { a = \"scramble\" }").is_err());
    }
}
