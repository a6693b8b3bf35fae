//! Native kernels keep the request's limits: a budget that runs out inside the matrix
//! products is fuel exhausted, a deadline passing inside them stops the request, and the same
//! model keeps serving afterwards. (Bit-identity with the wasm kernels: `determinism.rs`;
//! hostile kernel calls: the runtime crate's `runtime::native_kernel_tests`.)

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{Error, LimitOverrides};

use crate::common::*;

fn image() -> Tensor {
    let data = std::fs::read(fixture("squeezenet_input.bin")).expect("input");
    Tensor { name: "data_0".into(), datatype: Datatype::Fp32, shape: vec![1, 3, 224, 224], data: data.into() }
}

#[test]
fn native_kernels_keep_the_fuel_budget_and_the_deadline() {
    let model = &fixtures().squeezenet;
    assert!(model.native_kernels(), "the fixture runs on native kernels");
    let full = model.infer(vec![image()], &[], LimitOverrides::default()).expect("a full run");

    // Half the fuel a run needs: most of it is charged by the kernels.
    let budget = full.fuel_used / 2;
    let error = model
        .infer(vec![image()], &[], LimitOverrides { fuel: Some(budget), ..Default::default() })
        .expect_err("half the fuel");
    assert!(matches!(error, Error::FuelExhausted { budget: b } if b == budget), "{error:?}");

    // A 1 ms deadline passes inside the products; the request stops near it, not at the end.
    let started = std::time::Instant::now();
    let error = model
        .infer(vec![image()], &[], LimitOverrides { timeout_ms: Some(1), ..Default::default() })
        .expect_err("a 1 ms deadline");
    assert!(matches!(error, Error::DeadlineExceeded { timeout_ms: 1 }), "{error:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "stopped by the deadline");

    let again = model.infer(vec![image()], &[], LimitOverrides::default()).expect("serves again");
    assert!(again.outputs[0].data == full.outputs[0].data, "same bits after the refusals");
    assert_eq!(again.fuel_used, full.fuel_used, "fuel is deterministic");
}
