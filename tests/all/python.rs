//! The Python package (`python/`, installed by `tests/setup.sh` with `pip install ./python`):
//! its pytest suites against the digits fixture compiled for this run, this build's
//! `edgeinfer` binary (for `edgeinfer batch` and `edgeinfer serve` answers to compare with) and
//! the shared code cache. The engines suite starts real local Ray, Dask and Spark clusters.
//! EDGEINFER_SKIP_PYTHON_CLIENT=1 skips both where Python is missing; under CI nothing skips.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Runs one pytest file, failing if it fails or runs longer than `limit`.
fn pytest(file: &str, limit: Duration) {
    if std::env::var("EDGEINFER_SKIP_PYTHON_CLIENT").is_ok_and(|v| v == "1") {
        assert!(std::env::var_os("CI").is_none(), "EDGEINFER_SKIP_PYTHON_CLIENT must not be set in CI");
        eprintln!("SKIPPED python/tests/{file}: EDGEINFER_SKIP_PYTHON_CLIENT=1");
        return;
    }
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:logging", "-W", "ignore"])
        .arg(root.join("python/tests").join(file))
        .current_dir(root)
        .env("EDGEINFER_TEST_MODEL", fixtures().digits.dir())
        .env("EDGEINFER_BIN", env!("CARGO_BIN_EXE_edgeinfer"))
        .env("EDGEINFER_CACHE_DIR", cache_dir())
        .stdin(Stdio::null())
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("python3 runs (tests/setup.sh installs the package; EDGEINFER_SKIP_PYTHON_CLIENT=1 where Python is missing)");
    let mut status = None;
    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(&format!("pytest {file} finishes"), limit, || {
            status = child.try_wait().expect("pytest status");
            status.is_some()
        })
    }));
    if finished.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    let tail: String =
        output.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert!(finished.is_ok(), "pytest {file} ran longer than {limit:?}:\n{tail}");
    assert!(status.is_some_and(|s| s.success()), "pytest {file} failed:\n{tail}");
    assert!(output.contains(" passed"), "{tail}");
    assert!(!output.contains(" skipped") || std::env::var_os("CI").is_none(), "under CI nothing skips:\n{tail}");
}

#[test]
fn python_package_predicts_like_serve_and_batch() {
    pytest("test_model.py", Duration::from_secs(300));
}

#[test]
fn ray_dask_and_spark_score_a_file_like_batch() {
    pytest("test_engines.py", Duration::from_secs(600));
}
