//! Malformed inputs get an invalid-input error naming the input; nothing else breaks.

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::Error;

use crate::common::*;

fn invalid(inputs: Vec<Tensor>, outputs: &[String]) -> (String, String) {
    match fixtures().digits.infer(inputs, outputs, Default::default()) {
        Err(Error::InvalidInput { input, message }) => (input, message),
        other => panic!("expected invalid input, got {other:?}"),
    }
}

fn pixels(datatype: Datatype, shape: Vec<u64>, bytes: usize) -> Tensor {
    Tensor { name: "X".into(), datatype, shape, data: vec![0; bytes].into() }
}

#[test]
fn wrong_shape_names_the_input_and_the_expected_shape() {
    let (input, message) = invalid(vec![pixels(Datatype::Fp32, vec![1, 63], 63 * 4)], &[]);
    assert_eq!(input, "X");
    assert!(message.contains("[1, 63]") && message.contains("[-1, 64]"), "{message}");
    let (_, message) = invalid(vec![pixels(Datatype::Fp32, vec![64], 64 * 4)], &[]);
    assert!(message.contains("shape"), "{message}");
    assert_digits_still_serve();
}

#[test]
fn wrong_datatype_names_both_types() {
    let (input, message) = invalid(vec![pixels(Datatype::Fp64, vec![1, 64], 64 * 8)], &[]);
    assert_eq!(input, "X");
    assert!(message.contains("FP64") && message.contains("FP32"), "{message}");
}

#[test]
fn data_length_must_match_the_shape() {
    let (input, message) = invalid(vec![pixels(Datatype::Fp32, vec![2, 64], 64 * 4)], &[]);
    assert_eq!(input, "X");
    assert!(message.contains("256 bytes") && message.contains("512"), "{message}");
}

#[test]
fn missing_input_is_named() {
    let (input, message) = invalid(vec![], &[]);
    assert_eq!(input, "X");
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn unknown_input_and_unknown_output_are_named() {
    let mut extra = pixels(Datatype::Fp32, vec![1, 64], 256);
    extra.name = "Y".into();
    let (input, message) = invalid(vec![pixels(Datatype::Fp32, vec![1, 64], 256), extra], &[]);
    assert_eq!(input, "Y");
    assert!(message.contains("unknown input") && message.contains('X'), "{message}");
    let (output, message) = invalid(vec![pixels(Datatype::Fp32, vec![1, 64], 256)], &["logits".into()]);
    assert_eq!(output, "logits");
    assert!(message.contains("label") && message.contains("probabilities"), "{message}");
}

/// A shape claiming 2^62 rows is refused as invalid input under a 16 MiB memory cap: had the
/// guest tried to allocate for it, the cap would have turned it into a memory-limit error.
#[test]
fn huge_shape_is_refused_without_allocating() {
    let tight = edgeinfer_runtime::LimitOverrides { memory_mb: Some(16), ..Default::default() };
    let huge = pixels(Datatype::Fp32, vec![u64::MAX / 4, 64], 256);
    match fixtures().digits.infer(vec![huge], &[], tight) {
        Err(Error::InvalidInput { input, message }) => {
            assert_eq!(input, "X");
            assert!(message.contains("too large") || message.contains("needs"), "{message}");
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
    assert_digits_still_serve();
}
