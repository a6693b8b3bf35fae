//! A component whose bytes differ from its manifest's digest is refused before compiling.

use std::os::unix::fs::PermissionsExt;

use edgeinfer_runtime::{Error, LoadedModel, Runtime, RuntimeConfig};

use crate::common::*;

fn copy_version(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("dir");
    for file in ["model.wasm", "manifest.toml"] {
        std::fs::copy(from.join(file), to.join(file)).expect("copy");
    }
}

#[test]
fn one_flipped_byte_is_refused_naming_the_digest() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("digits/2");
    copy_version(fixtures().digits.dir(), &dir);
    let path = dir.join("model.wasm");
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let error = LoadedModel::load(&runtime(), &dir).err().expect("must be refused");
    let expected = &fixtures().digits.manifest().component.sha256;
    match &error {
        Error::IntegrityMismatch { expected: e, actual, .. } => {
            assert_eq!(e, expected);
            assert_eq!(actual, &edgeinfer_runtime::sha256_hex(&bytes));
        }
        other => panic!("expected an integrity mismatch, got {other:?}"),
    }
    assert!(error.to_string().contains(expected.as_str()), "{error}");
    assert_digits_still_serve();
}

#[test]
fn corrupt_compiled_code_cache_is_ignored_and_rebuilt() {
    // Corrupt the digits model's cached code (its shell: the runtime's code module is shared
    // and cached apart); loading must notice, recompile, and still serve.
    let cache = cache_dir().join("components");
    let digest = format!("{}-shell-", fixtures().digits.manifest().component.sha256);
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("digits/3");
    copy_version(fixtures().digits.dir(), &dir);
    let mut corrupted = 0;
    for entry in std::fs::read_dir(&cache).expect("cache dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(digest.as_str()) && name.ends_with(".cwasm") {
            let mut bytes = std::fs::read(entry.path()).expect("read");
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            std::fs::write(entry.path(), bytes).expect("write");
            corrupted += 1;
        }
    }
    assert_eq!(corrupted, 1, "the digits component has exactly one cache entry to corrupt");
    let model = LoadedModel::load(&runtime(), &dir).expect("recompiled from the verified component");
    let holdout = holdout();
    let outcome =
        model.infer(vec![fp32(&holdout.input_name, &holdout.x[..1])], &[], Default::default()).expect("infer");
    assert_eq!(i64s(&outcome.outputs[0].data), vec![holdout.ort_labels[0]]);
}

/// A cache entry this host did not write (authenticated with another key, as anyone able to
/// write the directory could, or with the old unkeyed checksum) is ignored and replaced by a
/// fresh compile.
#[test]
fn a_forged_cache_entry_is_ignored_and_recompiled() {
    use hmac::Mac;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("digits/4");
    copy_version(fixtures().digits.dir(), &dir);
    let digest = format!("{}-shell-", fixtures().digits.manifest().component.sha256);
    let entry = std::fs::read_dir(cache_dir().join("components"))
        .expect("cache dir")
        .flatten()
        .find(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(digest.as_str()) && name.ends_with(".cwasm")
        })
        .expect("the digits entry")
        .path();
    // The entry is the compiled artifact; its HMAC tag is beside it (`.cwasm.tag`).
    let tag_path = entry.with_extension("cwasm.tag");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[7u8; 32]).expect("key");
    mac.update(&std::fs::read(&entry).expect("read"));
    let forged = mac.finalize().into_bytes().to_vec();
    std::fs::write(&tag_path, &forged).expect("plant the forged tag");
    let model = LoadedModel::load(&runtime(), &dir).expect("recompiled, not deserialized");
    assert_ne!(std::fs::read(&tag_path).expect("read"), forged, "the forged entry was replaced");
    let holdout = holdout();
    let outcome =
        model.infer(vec![fp32(&holdout.input_name, &holdout.x[..1])], &[], Default::default()).expect("infer");
    assert_eq!(i64s(&outcome.outputs[0].data), vec![holdout.ort_labels[0]]);
}

#[test]
fn a_cache_directory_others_can_write_or_own_is_refused() {
    let temp = tempfile::tempdir().expect("tempdir");
    let open = temp.path().join("open");
    std::fs::create_dir(&open).expect("dir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let config = RuntimeConfig { cache_dir: open.clone(), ..RuntimeConfig::default() };
    let error = Runtime::new(config).err().expect("refused");
    assert!(matches!(error, Error::UntrustedCache { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&open.display().to_string()) && message.contains("chmod 700"), "{message}");

    // A directory owned by another user: as root, hand one to `nobody`; otherwise `/` is one.
    let foreign = if std::fs::metadata("/").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).ok() == Some(current_uid())
    {
        let dir = temp.path().join("foreign");
        std::fs::create_dir(&dir).expect("dir");
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown to nobody");
        dir
    } else {
        std::path::PathBuf::from("/")
    };
    let config = RuntimeConfig { cache_dir: foreign.clone(), ..RuntimeConfig::default() };
    let message = Runtime::new(config).err().expect("refused").to_string();
    assert!(message.contains("belongs to uid") && message.contains(&foreign.display().to_string()), "{message}");

    // A fresh default-style directory is created private.
    let fresh = temp.path().join("a/b/cache");
    Runtime::new(RuntimeConfig { cache_dir: fresh.clone(), ..RuntimeConfig::default() }).expect("created");
    let mode = std::fs::metadata(&fresh).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

fn current_uid() -> u32 {
    let probe = tempfile::tempfile().expect("probe");
    std::os::unix::fs::MetadataExt::uid(&probe.metadata().expect("meta"))
}

/// The per-operator profile runs the model node by node and times every node; a bad input is
/// the same typed error as for `infer`.
#[test]
fn the_profile_times_every_node_and_refuses_bad_inputs() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("digits/1");
    copy_version(fixtures().digits.dir(), &dir);
    let model = LoadedModel::load(&runtime(), &dir).expect("load");
    let holdout = holdout();
    let input = fp32(&holdout.input_name, &holdout.x[..4]);
    let nodes = model.profile(std::slice::from_ref(&input), 3, Default::default()).expect("profile");
    assert!(nodes.len() >= 2, "{nodes:?}");
    assert!(nodes.iter().all(|n| !n.op.is_empty() && !n.node.is_empty() && !n.time.is_zero()), "{nodes:?}");
    assert!(nodes.iter().any(|n| n.op.contains("MatMul")), "a dense layer shows as a matrix product: {nodes:?}");
    let wrong = edgeinfer_oip::Tensor { shape: vec![4, 3], data: vec![0; 48].into(), ..input };
    let error = model.profile(&[wrong], 1, Default::default()).expect_err("refused");
    assert!(matches!(error, edgeinfer_runtime::Error::InvalidInput { .. }), "{error}");
}
