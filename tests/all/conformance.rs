//! ONNX conformance: every case of the onnx package's backend node test suite listed in
//! `tests/conformance/passing.txt` (those that passed in the sandbox when the list was made)
//! is compiled into a component and run in a fresh sandbox; its outputs must still match
//! onnx's expected outputs, and the cases of operators that lower to matrix products give the
//! same bits on the host's native kernels and on the component's wasm kernels. Regenerate the list (and the per-operator table of the book's
//! conformance page, docs/src/conformance.md) with
//! `EDGEINFER_WRITE_PASSING=1 cargo bench --features bench-native --bench conformance`.

#[path = "../support/conformance.rs"]
mod support;

use std::time::Duration;

use crate::common;

/// How long the suite may run; cases not started by then fail the test (compiles take about
/// half a second each; the whole list takes a few minutes on 2 cores).
const BUDGET: Duration = Duration::from_secs(900);

#[test]
fn onnx_node_tests_that_passed_still_pass_in_the_sandbox() {
    if crate::common::skip_slow("onnx_node_tests_that_passed_still_pass_in_the_sandbox") {
        return;
    }
    let export = tempfile::tempdir().expect("tempdir");
    assert!(
        support::export_cases(export.path()),
        "exporting the ONNX node tests needs Python's onnx (tests/setup.sh installs it)"
    );
    let names = support::passing_list();
    assert!(names.len() > 500, "the passing list has only {} cases", names.len());
    let cases: Vec<_> = names.iter().map(|name| support::load_case(export.path(), name)).collect();
    let runtime = common::runtime();
    // A cache of its own: the shared one holds one entry per component (integrity tests count).
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("edgeinfer-cache-wasm-kernels");
    let wasm_kernels = edgeinfer_runtime::Runtime::new(edgeinfer_runtime::RuntimeConfig {
        cache_dir: cache,
        native_kernels: false,
        ..edgeinfer_runtime::RuntimeConfig::default()
    })
    .expect("runtime on wasm kernels");
    let repo = tempfile::tempdir().expect("repo");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results = support::run_parallel(&cases, threads, BUDGET, |case| {
        support::run_in_sandbox(&runtime, Some(&wasm_kernels), repo.path(), case)
    });
    let mut regressions = Vec::new();
    for (case, result) in cases.iter().zip(&results) {
        match result {
            Some(Ok(())) => {}
            Some(Err(why)) => regressions.push(format!("{} ({}): {why}", case.name, case.op)),
            None => regressions.push(format!("{}: not run within {BUDGET:?}", case.name)),
        }
    }
    assert!(
        regressions.is_empty(),
        "{} of {} listed ONNX node tests no longer pass:\n{}",
        regressions.len(),
        cases.len(),
        regressions.join("\n")
    );
}
