//! Compiled components agree with onnxruntime, and compile refuses what tract cannot run.

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::Error;

use crate::common::*;

#[test]
fn digits_outputs_match_onnxruntime_and_accuracy_equals_the_recorded_one() {
    let holdout = holdout();
    let input = fp32(&holdout.input_name, &holdout.x);
    let outcome = fixtures().digits.infer(vec![input.clone()], &[], Default::default()).expect("infer");
    let names: Vec<&str> = outcome.outputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["label", "probabilities"]);
    let labels = i64s(&outcome.outputs[0].data);
    assert_eq!(labels, holdout.ort_labels, "labels differ from onnxruntime's");
    let expected: Vec<f32> = holdout.ort_probabilities.iter().flatten().copied().collect();
    assert_close(&f32s(&outcome.outputs[1].data), &expected, 1e-5, 1e-4);
    let correct = labels.iter().zip(&holdout.y).filter(|(a, b)| a == b).count();
    let accuracy = correct as f64 / holdout.y.len() as f64;
    // The recorded figure is numpy's mean of the same comparison; allow only float rounding.
    assert!((accuracy - holdout.accuracy).abs() < 1e-12, "accuracy {accuracy} vs recorded {}", holdout.accuracy);
    assert!(outcome.fuel_used > 0);
    let again = fixtures().digits.infer(vec![input], &[], Default::default()).expect("again");
    assert_eq!(again.fuel_used, outcome.fuel_used, "the sandbox is deterministic, so is its fuel");
}

#[test]
fn squeezenet_output_matches_onnxruntime() {
    let input = std::fs::read(fixture("squeezenet_input.bin")).expect("input");
    let expected = f32s(&std::fs::read(fixture("squeezenet_expected.bin")).expect("expected"));
    let tensor =
        Tensor { name: "data_0".into(), datatype: Datatype::Fp32, shape: vec![1, 3, 224, 224], data: input.into() };
    let outcome = fixtures().squeezenet.infer(vec![tensor], &[], Default::default()).expect("infer");
    assert_eq!(outcome.outputs[0].shape, vec![1, 1000, 1, 1]);
    assert_close(&f32s(&outcome.outputs[0].data), &expected, 1e-6, 1e-3);
}

#[test]
fn requested_outputs_are_the_only_ones_returned() {
    let holdout = holdout();
    let input = fp32(&holdout.input_name, &holdout.x[..3]);
    let outcome = fixtures().digits.infer(vec![input], &["probabilities".into()], Default::default()).expect("infer");
    assert_eq!(outcome.outputs.len(), 1);
    assert_eq!(outcome.outputs[0].name, "probabilities");
    assert_eq!(outcome.outputs[0].shape, vec![3, 10]);
}

#[test]
fn manifest_records_signature_digests_and_dynamic_batch() {
    let manifest = fixtures().digits.manifest();
    assert_eq!(manifest.inputs[0].shape, vec![-1, 64]);
    assert_eq!(manifest.inputs[0].datatype, Datatype::Fp32);
    assert_eq!(manifest.outputs[0].datatype, Datatype::Int64, "TDim label is served as INT64");
    let onnx = std::fs::read(fixture("digits.onnx")).expect("fixture");
    assert_eq!(manifest.source.sha256, edgeinfer_runtime::sha256_hex(&onnx));
    let wasm = std::fs::read(fixtures().digits.dir().join("model.wasm")).expect("component");
    assert_eq!(manifest.component.sha256, edgeinfer_runtime::sha256_hex(&wasm));
    assert_eq!(manifest.component.runtime_sha256, edgeinfer_runtime::sha256_hex(edgeinfer_runtime::RUNTIME_COMPONENT));
    assert_eq!(
        edgeinfer_runtime::RUNTIME_SHA256,
        manifest.component.runtime_sha256,
        "the build-time digest is the runtime's"
    );
}

#[test]
fn compile_is_reproducible() {
    let repo = tempfile::tempdir().expect("tempdir");
    let again = compile_fixture(&runtime(), repo.path(), "digits.onnx", "digits", 1);
    assert_eq!(again.manifest().component.sha256, fixtures().digits.manifest().component.sha256);
}

#[test]
fn unsupported_operator_fails_compile_naming_it() {
    let onnx = std::fs::read(fixture("unsupported.onnx")).expect("fixture");
    let repo = tempfile::tempdir().expect("tempdir");
    let error =
        try_compile(&runtime(), repo.path(), &onnx, "unsupported.onnx", "unsupported", 1).err().expect("must fail");
    assert!(matches!(error, Error::Compile(_)), "{error:?}");
    assert!(error.to_string().contains("Col2Im"), "{error}");
    assert!(!repo.path().join("unsupported/1").exists(), "nothing is written for a failed compile");
}

#[test]
fn garbage_onnx_fails_compile_cleanly() {
    let repo = tempfile::tempdir().expect("tempdir");
    let error = try_compile(&runtime(), repo.path(), b"definitely not protobuf", "junk.onnx", "junk", 1)
        .err()
        .expect("must fail");
    assert!(error.to_string().contains("cannot parse the ONNX model"), "{error}");
}

#[test]
fn runtime_component_uses_simd_and_imports_only_the_sandbox_minimum() {
    let mut simd_ops = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(edgeinfer_runtime::RUNTIME_COMPONENT) {
        if let Ok(wasmparser::Payload::CodeSectionEntry(body)) = payload {
            let mut ops = body.get_operators_reader().expect("operators");
            while !ops.eof() {
                let name = format!("{:?}", ops.read().expect("operator"));
                let simd = name.starts_with("V128") || SIMD_LANES.iter().any(|lanes| name.starts_with(lanes));
                simd_ops += usize::from(simd);
            }
        }
    }
    assert!(simd_ops > 1000, "simd128 did not take effect: {simd_ops} SIMD instructions");
    let imports = component_imports(edgeinfer_runtime::RUNTIME_COMPONENT);
    for import in &imports {
        assert!(MODEL_IMPORTS.iter().any(|p| import.starts_with(p)), "runtime imports {import}");
    }
    let snapshot = std::fs::read(fixtures().digits.dir().join("model.wasm")).expect("component");
    for import in component_imports(&snapshot) {
        assert!(imports.contains(&import), "the snapshot imports {import}, which the runtime did not");
    }
}

const SIMD_LANES: [&str; 6] = ["I8x16", "I16x8", "I32x4", "I64x2", "F32x4", "F64x2"];

fn component_imports(wasm: &[u8]) -> Vec<String> {
    edgeinfer_runtime::capabilities::component_imports(wasm).expect("a component")
}

/// Models share the runtime's compiled code: a fresh runtime loading two different models
/// holds one code module, and each model's own cached code is only its shell (its memory
/// image), a fraction of the runtime's.
#[test]
fn models_share_one_compiled_runtime_code_module() {
    let config =
        edgeinfer_runtime::RuntimeConfig { cache_dir: cache_dir(), ..edgeinfer_runtime::RuntimeConfig::default() };
    let runtime = edgeinfer_runtime::Runtime::new(config).expect("runtime");
    assert_eq!(runtime.shared_code_modules(), 0);
    let digits = edgeinfer_runtime::LoadedModel::load(&runtime, fixtures().digits.dir()).expect("digits");
    let squeezenet = edgeinfer_runtime::LoadedModel::load(&runtime, fixtures().squeezenet.dir()).expect("squeezenet");
    assert_eq!(runtime.shared_code_modules(), 1, "both models run the same compiled runtime code");
    let holdout = holdout();
    let outcome =
        digits.infer(vec![fp32(&holdout.input_name, &holdout.x[..1])], &[], Default::default()).expect("infer");
    assert_eq!(i64s(&outcome.outputs[0].data), vec![holdout.ort_labels[0]]);
    assert!(squeezenet.manifest().component.sha256 != digits.manifest().component.sha256);

    let cached_size = |kind: &str, prefix: &str| -> u64 {
        std::fs::read_dir(cache_dir().join(kind))
            .expect("cache dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.metadata().expect("metadata").len())
            .max()
            .expect("a cache entry")
    };
    let shell = cached_size("components", &format!("{}-shell-", digits.manifest().component.sha256));
    let code = cached_size("modules", "");
    assert!(shell * 10 < code, "the digits shell ({shell} bytes) carries no copy of the runtime code ({code} bytes)");
}
