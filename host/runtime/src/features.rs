//! Model inputs as numeric features: the names of a signature's feature columns, and tensors
//! turned into per-feature rows (for drift windows and quality).

use edgeinfer_oip::{Datatype, Tensor};

use crate::manifest::TensorSignature;

/// One numeric feature column: `<input>` or `<input>[j]`.
pub fn feature_names(inputs: &[TensorSignature]) -> Vec<String> {
    inputs
        .iter()
        .flat_map(|input| {
            let width = row_width(&input.shape);
            (0..width).map(move |j| if width == 1 { input.name.clone() } else { format!("{}[{j}]", input.name) })
        })
        .collect()
}

/// Values per row of an input: the product of its dimensions after the first (1 if unknown).
fn row_width(shape: &[i64]) -> usize {
    shape.iter().skip(1).map(|&d| usize::try_from(d).unwrap_or(1)).product::<usize>().max(1)
}

/// Numeric inputs as rows of features (`f64`), in [`feature_names`] order; `None` when an
/// input is not numeric or does not have the shapes the signature says.
pub fn feature_rows(inputs: &[Tensor], signature: &[TensorSignature]) -> Option<Vec<Vec<f64>>> {
    let mut rows: Option<Vec<Vec<f64>>> = None;
    for sig in signature {
        let tensor = inputs.iter().find(|t| t.name == sig.name)?;
        let values = tensor_numbers(tensor)?;
        let width = row_width(&sig.shape);
        if values.len() % width != 0 {
            return None;
        }
        let count = values.len() / width;
        let rows = rows.get_or_insert_with(|| vec![Vec::new(); count]);
        if rows.len() != count {
            return None;
        }
        for (row, chunk) in rows.iter_mut().zip(values.chunks(width)) {
            row.extend_from_slice(chunk);
        }
    }
    rows
}

/// A numeric (or boolean) tensor's elements as `f64`; `None` for other datatypes.
pub fn tensor_numbers(tensor: &Tensor) -> Option<Vec<f64>> {
    let data = &tensor.data;
    macro_rules! read {
        ($t:ty) => {
            data.chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()) as f64)
                .collect()
        };
    }
    Some(match tensor.datatype {
        Datatype::Fp32 => read!(f32),
        Datatype::Fp64 => read!(f64),
        Datatype::Int8 => read!(i8),
        Datatype::Int16 => read!(i16),
        Datatype::Int32 => read!(i32),
        Datatype::Int64 => read!(i64),
        Datatype::Uint8 => read!(u8),
        Datatype::Uint16 => read!(u16),
        Datatype::Uint32 => read!(u32),
        Datatype::Uint64 => read!(u64),
        Datatype::Bool => data.iter().map(|&b| f64::from(b != 0)).collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> Vec<TensorSignature> {
        vec![TensorSignature { name: "X".into(), datatype: Datatype::Fp32, shape: vec![-1, 3], labels: vec![] }]
    }

    #[test]
    fn tensors_become_feature_rows() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = Tensor { name: "X".into(), datatype: Datatype::Fp32, shape: vec![2, 3], data: data.into() };
        let rows = feature_rows(&[tensor], &signature()).expect("rows");
        assert_eq!(rows, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        assert_eq!(feature_names(&signature()), vec!["X[0]", "X[1]", "X[2]"]);
    }
}
