//! Do two sets of output tensors agree? Used by smoke tests (expected outputs recorded in a
//! manifest) and by shadow traffic (live vs shadow version).

use edgeinfer_oip::{Datatype, Tensor};

/// Absolute tolerance for floating-point elements.
pub const ATOL: f64 = 1e-5;
/// Relative tolerance for floating-point elements.
pub const RTOL: f64 = 1e-4;

/// `Ok` when `actual` has the same tensors as `expected` (by name, datatype and shape) with
/// equal data: floats within `ATOL + RTOL * |expected|`, everything else bit for bit.
/// The error names the first tensor that differs and how.
pub fn outputs_agree(actual: &[Tensor], expected: &[Tensor]) -> Result<(), String> {
    for want in expected {
        let got =
            actual.iter().find(|t| t.name == want.name).ok_or_else(|| format!("output '{}' is missing", want.name))?;
        if got.datatype != want.datatype || got.shape != want.shape {
            return Err(format!(
                "output '{}' is {} {:?}, expected {} {:?}",
                want.name, got.datatype, got.shape, want.datatype, want.shape
            ));
        }
        let equal = match want.datatype {
            Datatype::Fp32 => floats_close(&f32_values(&got.data), &f32_values(&want.data)),
            Datatype::Fp64 => floats_close(&f64_values(&got.data), &f64_values(&want.data)),
            _ => (got.data == want.data).then_some(()).ok_or(0),
        };
        if let Err(index) = equal {
            return Err(format!("output '{}' differs at element {index}", want.name));
        }
    }
    Ok(())
}

fn floats_close(actual: &[f64], expected: &[f64]) -> Result<(), usize> {
    if actual.len() != expected.len() {
        return Err(actual.len().min(expected.len()));
    }
    match actual.iter().zip(expected).position(|(a, e)| !((a - e).abs() <= ATOL + RTOL * e.abs() || a == e)) {
        Some(index) => Err(index),
        None => Ok(()),
    }
}

fn f32_values(data: &[u8]) -> Vec<f64> {
    data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
}

fn f64_values(data: &[u8]) -> Vec<f64> {
    data.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp32(name: &str, values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: Datatype::Fp32,
            shape: vec![values.len() as u64],
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn floats_within_tolerance_agree_and_beyond_do_not() {
        assert_eq!(outputs_agree(&[fp32("p", &[1.0, 0.5])], &[fp32("p", &[1.000_001, 0.5])]), Ok(()));
        let error = outputs_agree(&[fp32("p", &[1.0, 0.6])], &[fp32("p", &[1.0, 0.5])]).unwrap_err();
        assert_eq!(error, "output 'p' differs at element 1");
    }

    #[test]
    fn missing_or_reshaped_outputs_are_named() {
        assert_eq!(outputs_agree(&[], &[fp32("p", &[1.0])]).unwrap_err(), "output 'p' is missing");
        let error = outputs_agree(&[fp32("p", &[1.0, 2.0])], &[fp32("p", &[1.0])]).unwrap_err();
        assert!(error.contains("expected FP32 [1]"), "{error}");
    }

    #[test]
    fn integers_compare_exactly() {
        let label = |v: i64| Tensor {
            name: "l".into(),
            datatype: Datatype::Int64,
            shape: vec![1],
            data: v.to_le_bytes().to_vec().into(),
        };
        assert!(outputs_agree(&[label(3)], &[label(3)]).is_ok());
        assert!(outputs_agree(&[label(3)], &[label(4)]).is_err());
    }
}
