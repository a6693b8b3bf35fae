//! Output rows of a batch job: the id, then each model output: scalar outputs as one
//! column, vectors as one column per element (`<output>_<i>`) in CSV and as lists in NDJSON
//! (and Parquet, converted from NDJSON once the job is complete).

use edgeinfer_oip::{Datatype, Tensor};
use serde_json::{Map, Value};

use super::Format;
use edgeinfer_runtime::manifest::TensorSignature;

/// One output column group.
#[derive(Debug, Clone)]
pub struct OutputColumn {
    /// The output's name.
    pub name: String,
    /// Its datatype.
    pub datatype: Datatype,
    /// Values per row (None: a scalar).
    pub width: Option<usize>,
}

/// What output rows look like.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The output columns, in the model's order.
    pub columns: Vec<OutputColumn>,
    /// CSV, or NDJSON (also the staging format of Parquet).
    pub text: Format,
}

impl Layout {
    /// The layout of a model's outputs written as `format`.
    pub fn new(outputs: &[TensorSignature], format: Format) -> Layout {
        let columns = outputs
            .iter()
            .map(|o| {
                let inner: Vec<i64> = o.shape.iter().skip(1).copied().collect();
                let width = (!inner.is_empty())
                    .then(|| inner.iter().map(|&d| usize::try_from(d).unwrap_or(0)).product::<usize>());
                OutputColumn { name: o.name.clone(), datatype: o.datatype, width }
            })
            .collect();
        let text = if format == Format::Csv { Format::Csv } else { Format::Ndjson };
        Layout { columns, text }
    }

    /// The first bytes of the output file (the CSV header).
    pub fn header(&self) -> Vec<u8> {
        if self.text != Format::Csv {
            return Vec::new();
        }
        let mut names = vec!["id".to_string()];
        for column in &self.columns {
            match column.width {
                None => names.push(column.name.clone()),
                Some(width) => names.extend((0..width).map(|i| format!("{}_{i}", column.name))),
            }
        }
        csv_line(&names)
    }

    /// Appends one line per row of a batch's `outputs` (rows in `ids` order).
    pub fn rows(&self, ids: &[&str], outputs: &[Tensor], out: &mut Vec<u8>) -> Result<(), String> {
        let per_row: Vec<Vec<Vec<Value>>> = self
            .columns
            .iter()
            .map(|column| {
                let tensor = outputs
                    .iter()
                    .find(|t| t.name == column.name)
                    .ok_or_else(|| format!("the model gave no output '{}'", column.name))?;
                split_rows(tensor, ids.len())
            })
            .collect::<Result<_, String>>()?;
        for (r, id) in ids.iter().enumerate() {
            match self.text {
                Format::Csv => {
                    let mut cells = vec![(*id).to_string()];
                    for values in &per_row {
                        cells.extend(values[r].iter().map(cell_text));
                    }
                    out.extend(csv_line(&cells));
                }
                _ => {
                    let mut object = Map::new();
                    object.insert("id".into(), Value::from(*id));
                    for (column, values) in self.columns.iter().zip(&per_row) {
                        let value = match column.width {
                            None => values[r].first().cloned().unwrap_or(Value::Null),
                            Some(_) => Value::Array(values[r].clone()),
                        };
                        object.insert(column.name.clone(), value);
                    }
                    out.extend(Value::Object(object).to_string().into_bytes());
                    out.push(b'\n');
                }
            }
        }
        Ok(())
    }
}

/// The header of an errors file of `format`.
pub fn error_header(format: Format) -> Vec<u8> {
    if format == Format::Csv { csv_line(&["row".into(), "id".into(), "error".into()]) } else { Vec::new() }
}

/// One line of an errors file.
pub fn error_line(format: Format, row: u64, id: &str, message: &str) -> Vec<u8> {
    match format {
        Format::Csv => csv_line(&[row.to_string(), id.to_string(), message.to_string()]),
        _ => {
            let mut line = serde_json::json!({"row": row, "id": id, "error": message}).to_string().into_bytes();
            line.push(b'\n');
            line
        }
    }
}

fn csv_line(cells: &[String]) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    // Writing strings into memory cannot fail.
    let _ = writer.write_record(cells);
    writer.into_inner().unwrap_or_default()
}

fn cell_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A batch output tensor split into per-row lists of JSON values.
fn split_rows(tensor: &Tensor, rows: usize) -> Result<Vec<Vec<Value>>, String> {
    let values = match edgeinfer_oip::encode_output(tensor).map_err(|e| e.to_string())? {
        Value::Array(values) => values,
        other => vec![other],
    };
    if rows == 0 || values.len() % rows != 0 {
        return Err(format!("output '{}' has {} values for {rows} rows", tensor.name, values.len()));
    }
    Ok(values.chunks(values.len() / rows).map(<[Value]>::to_vec).collect())
}
