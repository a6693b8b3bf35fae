//! On-disk caches of compiled code: whole components keyed by their digest and the engine's
//! compatibility, and cranelift's per-function cache so models share the runtime's code.
//!
//! `Component::deserialize` runs whatever native code it is given, so the cache must prove
//! who wrote a file, not only that it is intact: the directory must belong to this user and
//! be writable by nobody else, and every entry carries an HMAC-SHA256 of its payload under a
//! secret key that lives in the directory (mode 0600). An entry anyone else wrote fails the
//! check and is recompiled.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{CacheStore, Engine, Module};

use crate::{Error, Result};

/// Length of the HMAC tag in front of each entry's payload.
const TAG_LEN: usize = 32;

/// The host-local secret that authenticates cache entries.
#[derive(Clone)]
struct CacheKey(Arc<[u8; 32]>);

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

impl CacheKey {
    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; 32 bytes cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice()).unwrap_or_else(|_| unreachable!())
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    fn verify(&self, tag: &[u8], payload: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_slice(tag).is_ok()
    }
}

/// Compiled components on disk, keyed by component digest and engine compatibility.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
    key: CacheKey,
}

impl CodeCache {
    /// A cache rooted at `dir`: created 0700 if missing, refused when another user owns it
    /// or others may write to it.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        for sub in ["", "components", "modules", "functions", "splits"] {
            let path = dir.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(|e| Error::io(format!("creating cache directory {}", path.display()), e))?;
            check_private(&path)?;
        }
        let key = load_or_create_key(&dir.join("key"))?;
        Ok(CodeCache { dir, key })
    }

    /// The per-function store for cranelift's incremental compilation.
    pub fn function_store(&self) -> FunctionCache {
        FunctionCache { dir: self.dir.join("functions"), key: self.key.clone() }
    }

    /// Returns the compiled component for `wasm` (whose digest the caller already verified),
    /// from the cache when an authentic entry exists, else compiling and caching it.
    pub fn load_or_compile(&self, engine: &Engine, wasm: &[u8], digest: &str) -> Result<Component> {
        self.load_or_compile_with(
            &self.entry("components", engine, digest),
            || engine.precompile_component(wasm),
            // SAFETY: see `load_or_compile_with`: a file or bytes this engine's precompilation wrote.
            |path| unsafe { Component::deserialize_file(engine, path) },
            |bytes| unsafe { Component::deserialize(engine, bytes) },
        )
    }

    /// Returns the compiled core module for `wasm` (whose digest the caller computed from
    /// verified bytes), from the cache when an authentic entry exists, else compiling it.
    pub fn load_or_compile_module(&self, engine: &Engine, wasm: &[u8], digest: &str) -> Result<Module> {
        self.load_or_compile_with(
            &self.entry("modules", engine, digest),
            || engine.precompile_module(wasm),
            // SAFETY: see `load_or_compile_with`: a file or bytes this engine's precompilation wrote.
            |path| unsafe { Module::deserialize_file(engine, path) },
            |bytes| unsafe { Module::deserialize(engine, bytes) },
        )
    }

    /// The compiled component cached under `digest`, when an authentic entry exists (nothing
    /// is compiled).
    pub fn cached(&self, engine: &Engine, digest: &str) -> Option<Component> {
        // SAFETY: see `load_or_compile_with`: a file this engine's precompilation wrote.
        self.cached_at(&self.entry("components", engine, digest), |path| unsafe {
            Component::deserialize_file(engine, path)
        })
    }

    /// The compiled core module cached under `digest`, when an authentic entry exists.
    pub fn cached_module(&self, engine: &Engine, digest: &str) -> Option<Module> {
        // SAFETY: see `load_or_compile_with`: a file this engine's precompilation wrote.
        self.cached_at(&self.entry("modules", engine, digest), |path| unsafe { Module::deserialize_file(engine, path) })
    }

    /// The artifact at `path` loaded with `deserialize_file`, when its tag authenticates it.
    fn cached_at<T>(&self, path: &Path, deserialize_file: impl Fn(&Path) -> wasmtime::Result<T>) -> Option<T> {
        artifact_is_authentic(&self.key, path).then(|| deserialize_file(path).ok())?
    }

    /// The parts a model component was split into last time (see `shared_code`): the code
    /// module's digest and the shell's cache key, recorded by [`Self::record_split`] under the
    /// component's digest and how it was split. Lets a load skip splitting the component again.
    pub fn split_record(&self, engine: &Engine, key: &str) -> Option<(String, String)> {
        let payload = read_authentic(&self.key, &self.entry("splits", engine, key))?;
        let text = String::from_utf8(payload).ok()?;
        let (code, shell) = text.split_once('\n')?;
        Some((code.to_string(), shell.to_string()))
    }

    /// Records how the component `key` names was split (see [`Self::split_record`]).
    pub fn record_split(&self, engine: &Engine, key: &str, code_digest: &str, shell_key: &str) {
        write_authentic(
            &self.key,
            &self.entry("splits", engine, key),
            format!("{code_digest}\n{shell_key}").as_bytes(),
        );
    }

    /// Compiles a component into the cache without loading it (an engine for another target
    /// cannot load what it compiles); an authentic entry already there is kept.
    pub fn precompile(&self, engine: &Engine, wasm: &[u8], digest: &str) -> Result<()> {
        self.precompile_with(&self.entry("components", engine, digest), || engine.precompile_component(wasm))
    }

    /// Compiles a core module into the cache without loading it; see [`Self::precompile`].
    pub fn precompile_module(&self, engine: &Engine, wasm: &[u8], digest: &str) -> Result<()> {
        self.precompile_with(&self.entry("modules", engine, digest), || engine.precompile_module(wasm))
    }

    fn precompile_with(&self, path: &Path, precompile: impl FnOnce() -> wasmtime::Result<Vec<u8>>) -> Result<()> {
        if artifact_is_authentic(&self.key, path) {
            return Ok(());
        }
        let compiled = precompile().map_err(|e| Error::Compile(format!("{e:#}")))?;
        if write_artifact(&self.key, path, &compiled) {
            Ok(())
        } else {
            Err(Error::Runtime(format!("cannot write {} (see the warning above)", path.display())))
        }
    }

    fn entry(&self, kind: &str, engine: &Engine, digest: &str) -> PathBuf {
        self.dir.join(kind).join(format!("{digest}-{:016x}.cwasm", engine_hash(engine)))
    }

    /// The cached entry at `path` deserialized, else compiled, cached and deserialized.
    ///
    /// An entry is the compiled artifact as wasmtime wrote it, so it is mapped from the file
    /// (`deserialize_file`): only the code pages a model runs become resident, and they stay
    /// clean, shared with the page cache. Its HMAC tag lives beside it ([`tag_path`]).
    ///
    /// `deserialize_file` and `deserialize` are only ever given what `precompile` of an engine
    /// with the same compatibility hash wrote on this host: the HMAC under the host's secret key
    /// proves it for a cached entry, in a directory only this user can write (entries are
    /// replaced by rename, never written in place).
    fn load_or_compile_with<T>(
        &self,
        path: &Path,
        precompile: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
        deserialize_file: impl Fn(&Path) -> wasmtime::Result<T>,
        deserialize: impl FnOnce(&[u8]) -> wasmtime::Result<T>,
    ) -> Result<T> {
        if let Some(compiled) = self.cached_at(path, &deserialize_file) {
            return Ok(compiled);
        }
        let compiled = precompile().map_err(|e| Error::Compile(format!("{e:#}")))?;
        if write_artifact(&self.key, path, &compiled)
            && let Ok(loaded) = deserialize_file(path)
        {
            return Ok(loaded);
        }
        deserialize(&compiled).map_err(Error::runtime)
    }
}

/// The current effective user id.
pub(crate) fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a directory another user owns or that group or others may write.
fn check_private(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let uid = current_uid();
    let refuse = |message: String| Err(Error::UntrustedCache { path: path.to_path_buf(), message });
    if meta.uid() != uid {
        return refuse(format!(
            "it belongs to uid {} but edgeinfer runs as uid {uid}; use a directory of your own \
             (--cache-dir / EDGEINFER_CACHE_DIR) or `chown {uid} {}`",
            meta.uid(),
            path.display()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return refuse(format!(
            "it is writable by group or others (mode {mode:o}); run `chmod 700 {}`",
            path.display()
        ));
    }
    Ok(())
}

/// Reads the cache's secret key, creating it (32 random bytes, mode 0600) on first use.
fn load_or_create_key(path: &Path) -> Result<CacheKey> {
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
    match created {
        Ok(mut file) => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| Error::Runtime(format!("drawing a cache key: {e}")))?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            Ok(CacheKey(Arc::new(key)))
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if meta.uid() != current_uid() || meta.permissions().mode() & 0o077 != 0 {
                return Err(Error::UntrustedCache {
                    path: path.to_path_buf(),
                    message: format!(
                        "the cache key must belong to uid {} with mode 600; delete it to start a new cache",
                        current_uid()
                    ),
                });
            }
            let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Error::UntrustedCache {
                path: path.to_path_buf(),
                message: format!("the cache key has {} bytes, not 32; delete it to start a new cache", bytes.len()),
            })?;
            Ok(CacheKey(Arc::new(key)))
        }
        Err(error) => Err(Error::io(format!("creating {}", path.display()), error)),
    }
}

/// A stable hash of everything that makes compiled code compatible with `engine`.
fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// Reads a cache file: a 32-byte HMAC tag, then the payload it authenticates.
fn read_authentic(key: &CacheKey, path: &Path) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    is_authentic(key, path, &bytes).then(|| bytes.split_off(TAG_LEN))
}

/// Whether `bytes` (a cache file read from `path`: tag, then payload) carry a tag this host's
/// key gives their payload; warns about one that does not.
fn is_authentic(key: &CacheKey, path: &Path, bytes: &[u8]) -> bool {
    let authentic = bytes.len() >= TAG_LEN && key.verify(&bytes[..TAG_LEN], &bytes[TAG_LEN..]);
    if !authentic {
        tracing::warn!(path = %path.display(), "ignoring a cache file this host did not write (or a corrupt one)");
    }
    authentic
}

/// Where the HMAC tag of the compiled artifact at `path` lives.
fn tag_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.tag")
}

/// Whether the artifact at `path` carries (beside it) a tag this host's key gives it. The
/// artifact is mapped to be checked, so its tens of MB never pass through the heap.
fn artifact_is_authentic(key: &CacheKey, path: &Path) -> bool {
    let check = || -> Option<bool> {
        let tag = std::fs::read(tag_path(path)).ok()?;
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: the file lives in the cache directory, which belongs to this user and nobody
        // else may write (checked when the cache is opened); entries are replaced by rename,
        // never written in place, so the mapping does not change under us.
        let mapped = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        Some(key.verify(&tag, &mapped))
    };
    match check() {
        Some(true) => true,
        Some(false) => {
            tracing::warn!(path = %path.display(), "ignoring a cache file this host did not write (or a corrupt one)");
            false
        }
        None => false,
    }
}

/// Writes a compiled artifact and then its tag, each atomically; a failure only costs a
/// recompile later (an artifact without its matching tag is never loaded).
fn write_artifact(key: &CacheKey, path: &Path, artifact: &[u8]) -> bool {
    write_atomically(path, &[artifact]) && write_atomically(&tag_path(path), &[&key.tag(artifact)])
}

/// Writes a cache file (tag, then payload) atomically; a failure only costs a recompile later.
fn write_authentic(key: &CacheKey, path: &Path, payload: &[u8]) -> bool {
    write_atomically(path, &[&key.tag(payload), payload])
}

/// Writes `parts` one after another to a temporary file, then renames it to `path`.
fn write_atomically(path: &Path, parts: &[&[u8]]) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    let write = || -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.persist(path)?;
        Ok(())
    };
    write().map_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot write cache file")).is_ok()
}

/// Cranelift's incremental compilation cache, one authenticated file per compiled function.
#[derive(Debug)]
pub struct FunctionCache {
    dir: PathBuf,
    key: CacheKey,
}

impl FunctionCache {
    fn path(&self, key: &[u8]) -> PathBuf {
        self.dir.join(hex::encode(Sha256::digest(key)))
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        read_authentic(&self.key, &self.path(key)).map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        write_authentic(&self.key, &self.path(key), &value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_written_with_another_key_is_ignored() {
        let temp = tempfile::tempdir().expect("tempdir");
        let cache = CodeCache::new(temp.path().join("cache")).expect("cache");
        let path = temp.path().join("cache/functions/entry");
        assert!(write_authentic(&cache.key, &path, b"payload"));
        assert_eq!(read_authentic(&cache.key, &path).as_deref(), Some(&b"payload"[..]));
        let forged = CacheKey(Arc::new([9; 32]));
        assert!(write_authentic(&forged, &path, b"native code"));
        assert_eq!(read_authentic(&cache.key, &path), None);
        // The old scheme (unkeyed sha256 of the payload) is not accepted either.
        let mut unkeyed = Sha256::digest(b"native code").to_vec();
        unkeyed.extend_from_slice(b"native code");
        std::fs::write(&path, unkeyed).expect("write");
        assert_eq!(read_authentic(&cache.key, &path), None);
    }

    #[test]
    fn a_forged_module_entry_is_recompiled_not_loaded() {
        let temp = tempfile::tempdir().expect("tempdir");
        let cache = CodeCache::new(temp.path()).expect("cache");
        let engine = Engine::default();
        let wasm = wat::parse_str(r#"(module (func (export "answer") (result i32) i32.const 42))"#).expect("wat");
        cache.load_or_compile_module(&engine, &wasm, "answer").expect("compiled");
        let path = cache.entry("modules", &engine, "answer");
        assert!(artifact_is_authentic(&cache.key, &path), "a genuine entry and its tag");
        let genuine = std::fs::read(&path).expect("cached entry");
        let forged = CacheKey(Arc::new([9; 32]));
        assert!(write_artifact(&forged, &path, &genuine));
        assert!(!artifact_is_authentic(&cache.key, &path));
        let module = cache.load_or_compile_module(&engine, &wasm, "answer").expect("recompiled");
        assert!(artifact_is_authentic(&cache.key, &path), "the forged entry was replaced by a genuine one");
        assert!(module.get_export("answer").is_some());
        // An artifact whose tag is missing is not loaded either.
        std::fs::remove_file(tag_path(&path)).expect("remove the tag");
        assert!(!artifact_is_authentic(&cache.key, &path));
    }

    #[test]
    fn the_key_survives_a_restart_and_is_private() {
        let temp = tempfile::tempdir().expect("tempdir");
        let first = CodeCache::new(temp.path()).expect("cache");
        let second = CodeCache::new(temp.path()).expect("cache again");
        assert_eq!(first.key.0, second.key.0);
        let mode = std::fs::metadata(temp.path().join("key")).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
