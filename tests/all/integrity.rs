//! A component whose bytes differ from its manifest's digest is refused before compiling.

use edgeinfer::{Error, LoadedModel};

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
            assert_eq!(actual, &edgeinfer::sha256_hex(&bytes));
        }
        other => panic!("expected an integrity mismatch, got {other:?}"),
    }
    assert!(error.to_string().contains(expected.as_str()), "{error}");
    assert_digits_still_serve();
}

#[test]
fn corrupt_compiled_code_cache_is_ignored_and_rebuilt() {
    // Corrupt every cached component; loading must notice, recompile, and still serve.
    let cache = cache_dir().join("components");
    let digest = &fixtures().digits.manifest().component.sha256;
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("digits/3");
    copy_version(fixtures().digits.dir(), &dir);
    for entry in std::fs::read_dir(&cache).expect("cache dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with(digest.as_str()) {
            let mut bytes = std::fs::read(entry.path()).expect("read");
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            std::fs::write(entry.path(), bytes).expect("write");
        }
    }
    let model = LoadedModel::load(&runtime(), &dir).expect("recompiled from the verified component");
    let holdout = holdout();
    let outcome =
        model.infer(vec![fp32(&holdout.input_name, &holdout.x[..1])], &[], Default::default()).expect("infer");
    assert_eq!(i64s(&outcome.outputs[0].data), vec![holdout.ort_labels[0]]);
}
