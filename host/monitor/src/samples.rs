//! Sample files of typical inputs (CSV or NDJSON) read into per-feature rows: the drift
//! reference a version records at compile time (`edgeinfer compile --reference`).
//!
//! CSV: a header row, then one row per sample. When every header names an input, each column
//! is one `[N, 1]` input; otherwise the model must have one input and the columns are its
//! features in order. NDJSON: one object per line mapping input names to a value or a flat
//! array of values.

use std::path::{Path, PathBuf};

use edgeinfer_runtime::features::feature_names;
use edgeinfer_runtime::manifest::TensorSignature;
use edgeinfer_runtime::reference::SampleSource;
use edgeinfer_runtime::{Error, Result};

/// A sample file, read when a reference is computed from it.
#[derive(Debug, Clone)]
pub struct SampleFile(pub PathBuf);

impl SampleSource for SampleFile {
    fn feature_rows(&self, inputs: &[TensorSignature]) -> Result<Vec<Vec<f64>>> {
        read_feature_rows(&self.0, inputs)
    }
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
    use edgeinfer_oip::Datatype;

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
}
