//! Rows of model inputs from files (CSV or NDJSON), and tensors back into per-feature rows.
//!
//! CSV: a header row, then one row per sample. When every header names an input, each column
//! is one `[N, 1]` input; otherwise the model must have one input and the columns are its
//! features in order. NDJSON: one object per line mapping input names to a value or a flat
//! array of values.

use std::path::Path;

use edgeinfer_oip::{Datatype, Tensor};

use crate::manifest::TensorSignature;
use crate::{Error, Result};

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

/// Reads a CSV or NDJSON file (by extension) into rows of features for `signature`.
pub fn read_feature_rows(path: &Path, signature: &[TensorSignature]) -> Result<Vec<Vec<f64>>> {
    let bad = |message: String| Error::Config(format!("{}: {message}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    match extension {
        "csv" => csv_rows(&text, signature).map_err(bad),
        "ndjson" | "jsonl" => ndjson_rows(&text, signature).map_err(bad),
        other => Err(bad(format!("unknown sample format '.{other}' (expected .csv or .ndjson)"))),
    }
}

fn csv_rows(text: &str, signature: &[TensorSignature]) -> std::result::Result<Vec<Vec<f64>>, String> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> = reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_string).collect();
    let per_input = signature.len() > 1 || headers.len() == 1;
    let order: Vec<usize> = if per_input {
        signature
            .iter()
            .map(|s| headers.iter().position(|h| *h == s.name).ok_or_else(|| format!("no column named '{}'", s.name)))
            .collect::<std::result::Result<_, _>>()?
    } else {
        let width = feature_names(signature).len();
        if headers.len() != width {
            return Err(format!("{} columns, but input '{}' has {width} features", headers.len(), signature[0].name));
        }
        (0..width).collect()
    };
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| e.to_string())?;
        let row = order
            .iter()
            .map(|&i| {
                let cell = record.get(i).unwrap_or_default();
                cell.parse::<f64>().map_err(|_| format!("row {}: column {}: '{cell}' is not a number", line + 2, i + 1))
            })
            .collect::<std::result::Result<Vec<f64>, String>>()?;
        rows.push(row);
    }
    Ok(rows)
}

fn ndjson_rows(text: &str, signature: &[TensorSignature]) -> std::result::Result<Vec<Vec<f64>>, String> {
    let width = feature_names(signature).len();
    let mut rows = Vec::new();
    for (line, text) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("line {}: {e}", line + 1))?;
        let mut row = Vec::with_capacity(width);
        for sig in signature {
            let value = object.get(&sig.name).ok_or_else(|| format!("line {}: no '{}'", line + 1, sig.name))?;
            let values: Vec<&serde_json::Value> = match value {
                serde_json::Value::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            for item in values {
                row.push(
                    item.as_f64()
                        .ok_or_else(|| format!("line {}: '{}': {item} is not a number", line + 1, sig.name))?,
                );
            }
        }
        if row.len() != width {
            return Err(format!("line {}: {} values, the model takes {width}", line + 1, row.len()));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature() -> Vec<TensorSignature> {
        vec![TensorSignature { name: "X".into(), datatype: Datatype::Fp32, shape: vec![-1, 3], labels: vec![] }]
    }

    #[test]
    fn csv_and_ndjson_give_the_same_rows_and_name_bad_cells() {
        let csv = "a,b,c\n1,2,3\n4,5,6\n";
        let ndjson = "{\"X\": [1,2,3]}\n{\"X\": [4,5,6]}\n";
        let rows = csv_rows(csv, &signature()).expect("csv");
        assert_eq!(rows, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        assert_eq!(ndjson_rows(ndjson, &signature()).expect("ndjson"), rows);
        let error = csv_rows("a,b,c\n1,x,3\n", &signature()).expect_err("bad cell");
        assert!(error.contains("row 2: column 2: 'x'"), "{error}");
        assert!(csv_rows("a,b\n1,2\n", &signature()).expect_err("width").contains("3 features"));
    }

    #[test]
    fn tensors_become_feature_rows() {
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = Tensor { name: "X".into(), datatype: Datatype::Fp32, shape: vec![2, 3], data };
        let rows = feature_rows(&[tensor], &signature()).expect("rows");
        assert_eq!(rows, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        assert_eq!(feature_names(&signature()), vec!["X[0]", "X[1]", "X[2]"]);
    }
}
