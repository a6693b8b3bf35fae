//! On-disk caches of compiled code: whole components keyed by their digest and the engine's
//! compatibility, and cranelift's per-function cache so models share the runtime's code.
//!
//! Every cached file carries the SHA-256 of its payload and is verified before use, since
//! `Component::deserialize` must only ever see bytes this host wrote.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{CacheStore, Engine};

use crate::{Error, Result};

/// Compiled components on disk, keyed by component digest and engine compatibility.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
}

impl CodeCache {
    /// A cache rooted at `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        for sub in ["components", "functions"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("creating cache directory {}", dir.display()), e))?;
        }
        Ok(CodeCache { dir })
    }

    /// The per-function store for cranelift's incremental compilation.
    pub fn function_store(&self) -> FunctionCache {
        FunctionCache { dir: self.dir.join("functions") }
    }

    /// Returns the compiled component for `wasm` (whose digest the caller already verified),
    /// from the cache when a verified entry exists, else compiling and caching it.
    pub fn load_or_compile(&self, engine: &Engine, wasm: &[u8], digest: &str) -> Result<Component> {
        let path = self.dir.join("components").join(format!("{digest}-{:016x}.cwasm", engine_hash(engine)));
        if let Some(bytes) = read_verified(&path) {
            // SAFETY: the bytes are exactly what `precompile_component` of an engine with the
            // same compatibility hash wrote, as the embedded SHA-256 of the payload proves.
            if let Ok(component) = unsafe { Component::deserialize(engine, &bytes) } {
                return Ok(component);
            }
        }
        let compiled = engine.precompile_component(wasm).map_err(|e| Error::Compile(format!("{e:#}")))?;
        write_verified(&path, &compiled);
        // SAFETY: produced just now by this engine.
        unsafe { Component::deserialize(engine, &compiled) }.map_err(Error::runtime)
    }
}

/// A stable hash of everything that makes compiled code compatible with `engine`.
fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// Reads a cache file: 32 bytes of SHA-256, then the payload it covers.
fn read_verified(path: &Path) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    if bytes.len() < 32 || Sha256::digest(&bytes[32..]).as_slice() != &bytes[..32] {
        tracing::warn!(path = %path.display(), "ignoring a corrupt cache file");
        return None;
    }
    Some(bytes.split_off(32))
}

/// Writes a cache file atomically; a failure only costs a recompile later.
fn write_verified(path: &Path, payload: &[u8]) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    let write = || -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut file, &Sha256::digest(payload))?;
        std::io::Write::write_all(&mut file, payload)?;
        file.persist(path)?;
        Ok(())
    };
    write().map_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot write cache file")).is_ok()
}

/// Cranelift's incremental compilation cache, one verified file per compiled function.
#[derive(Debug)]
pub struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    fn path(&self, key: &[u8]) -> PathBuf {
        self.dir.join(hex::encode(Sha256::digest(key)))
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        read_verified(&self.path(key)).map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        write_verified(&self.path(key), &value)
    }
}
