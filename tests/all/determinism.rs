//! The same component gives the same output bits whatever the x86-64 CPU's features: an
//! engine told to generate code without AVX, AVX2, FMA, AVX-512, BMI or LZCNT must agree bit
//! for bit with the default engine (which uses what this CPU has) on every output.

use edgeinfer_runtime::{LimitOverrides, LoadedModel, Runtime, RuntimeConfig};

use edgeinfer_oip::{Datatype, Tensor};

use crate::common::*;

#[test]
fn outputs_are_the_same_bits_without_avx() {
    // A cache of its own: the shared one holds one entry per component (integrity tests count).
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("edgeinfer-cache-without-avx");
    let baseline = Runtime::new(RuntimeConfig { cache_dir: cache, without_avx: true, ..RuntimeConfig::default() })
        .expect("runtime without AVX");
    let hash = |runtime: &Runtime| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        runtime.engine().precompile_compatibility_hash().hash(&mut hasher);
        hasher.finish()
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        assert_ne!(hash(&baseline), hash(&fixtures().runtime), "the flags changed code generation");
    }
    let holdout = holdout();
    let image = std::fs::read(fixture("squeezenet_input.bin")).expect("input");
    let cases = [
        (&fixtures().digits, fp32(&holdout.input_name, &holdout.x[..40])),
        (
            &fixtures().squeezenet,
            Tensor { name: "data_0".into(), datatype: Datatype::Fp32, shape: vec![1, 3, 224, 224], data: image.into() },
        ),
    ];
    for (model, input) in cases {
        let portable = LoadedModel::load(&baseline, model.dir()).expect("load without AVX");
        assert!(model.native_kernels() && !portable.native_kernels(), "native kernels on by default, off without AVX");
        let expected = model.infer(vec![input.clone()], &[], LimitOverrides::default()).expect("default engine");
        let actual = portable.infer(vec![input], &[], LimitOverrides::default()).expect("engine without AVX");
        assert_eq!(actual.outputs.len(), expected.outputs.len());
        for (a, e) in actual.outputs.iter().zip(&expected.outputs) {
            assert!(a.data == e.data, "{}: output {} differs without AVX", model.manifest().name, a.name);
        }
        // Fuel is counted in wasm operators, not machine code; the default runtime's native
        // kernels charge per call in proportion to the work (`kernels::fuel_cost`), so the
        // budgets mean the same within 10%.
        let ratio = expected.fuel_used as f64 / actual.fuel_used as f64;
        println!(
            "{}: fuel {} with native kernels, {} in wasm ({ratio:.3}x)",
            model.manifest().name,
            expected.fuel_used,
            actual.fuel_used
        );
        if model.native_kernels() {
            assert!(
                (0.9..=1.1).contains(&ratio),
                "{}: fuel with native kernels is {ratio:.3}x the wasm kernels'",
                model.manifest().name
            );
        } else {
            assert_eq!(actual.fuel_used, expected.fuel_used, "fuel is counted in wasm operators, not machine code");
        }
    }
}
