//! Input rows of a batch job, streamed from CSV, NDJSON or Parquet: each row becomes the
//! model's inputs with a batch dimension of 1, or the reason it cannot (the row is then
//! reported, not fatal).

use std::fs::File;
use std::io::{BufRead, BufReader};

use edgeinfer_oip::{Datatype, Tensor};
use serde_json::Value;

use super::{BatchError, Format};
use edgeinfer_runtime::manifest::TensorSignature;

/// One input row.
#[derive(Debug)]
pub struct InputRow {
    /// 0-based position among the file's data rows.
    pub row: u64,
    /// The id column's value, or the row number.
    pub id: String,
    /// The model's inputs for this row (batch dimension 1), or why there are none.
    pub inputs: Result<Vec<Tensor>, String>,
}

/// How rows map onto the model's inputs.
#[derive(Debug, Clone)]
pub struct RowSchema {
    /// The model's inputs.
    pub inputs: Vec<TensorSignature>,
    /// The column holding row ids.
    pub id_column: Option<String>,
    /// Feature columns, in input order (default: every column but the id, in file order).
    pub columns: Option<Vec<String>>,
}

impl RowSchema {
    /// Features per row of the single 2-D input, or why feature rows do not fit the model.
    fn width(&self) -> Result<usize, String> {
        match self.inputs.as_slice() {
            [input] => Ok(input.shape.iter().skip(1).map(|&d| usize::try_from(d).unwrap_or(1)).product::<usize>()),
            _ => Err(format!(
                "the model has {} inputs; feature columns map onto a single input: give NDJSON rows with an \
                 `inputs` object instead",
                self.inputs.len()
            )),
        }
    }

    /// The model input of one row of features.
    pub fn tensor(&self, values: &[f64]) -> Tensor {
        let input = &self.inputs[0];
        let mut shape: Vec<u64> = input.shape.iter().map(|&d| u64::try_from(d).unwrap_or(1)).collect();
        if let Some(first) = shape.first_mut() {
            *first = 1;
        }
        Tensor {
            name: input.name.clone(),
            datatype: input.datatype,
            shape,
            data: encode(input.datatype, values).into(),
        }
    }
}

/// Values as raw little-endian data of `datatype`.
pub fn encode(datatype: Datatype, values: &[f64]) -> Vec<u8> {
    macro_rules! bytes {
        ($t:ty) => {
            values.iter().flat_map(|&v| (v as $t).to_le_bytes()).collect()
        };
    }
    match datatype {
        Datatype::Fp64 => bytes!(f64),
        Datatype::Int64 => bytes!(i64),
        Datatype::Int32 => bytes!(i32),
        Datatype::Int16 => bytes!(i16),
        Datatype::Int8 => bytes!(i8),
        Datatype::Uint64 => bytes!(u64),
        Datatype::Uint32 => bytes!(u32),
        Datatype::Uint16 => bytes!(u16),
        Datatype::Uint8 => bytes!(u8),
        Datatype::Bool => values.iter().map(|&v| u8::from(v != 0.0)).collect(),
        _ => bytes!(f32),
    }
}

/// Checks one row's parsed cells.
fn features(cells: impl Iterator<Item = (String, Result<f64, String>)>) -> Result<Vec<f64>, String> {
    cells
        .map(|(column, value)| match value {
            Ok(v) if v.is_nan() => Err(format!("column '{column}' is NaN")),
            Ok(v) => Ok(v),
            Err(text) => Err(format!("column '{column}': '{text}' is not a number")),
        })
        .collect()
}

/// A stream of rows and how far into the file it is.
pub trait RowSource: Iterator<Item = Result<InputRow, BatchError>> + Send {
    /// Bytes of the file consumed so far (for progress).
    fn position(&self) -> u64;
}

/// Reads `file` as the text `format` (CSV or NDJSON) for `schema`.
pub fn open_text(file: File, format: Format, schema: &RowSchema) -> Result<Box<dyn RowSource>, BatchError> {
    match format {
        Format::Csv => Ok(Box::new(CsvRows::new(file, schema.clone())?)),
        Format::Ndjson => Ok(Box::new(NdjsonRows {
            lines: BufReader::new(file),
            schema: schema.clone(),
            row: 0,
            position: 0,
            columns: None,
        })),
        Format::Parquet => Err(BatchError::Input("parquet is not a text format".into())),
    }
}

/// Picks the feature columns out of a header.
pub fn feature_columns(headers: &[String], schema: &RowSchema) -> Result<Vec<usize>, BatchError> {
    let width = schema.width().map_err(BatchError::Input)?;
    let indices: Vec<usize> = match &schema.columns {
        Some(columns) => columns
            .iter()
            .map(|c| {
                headers.iter().position(|h| h == c).ok_or_else(|| BatchError::Input(format!("no column named '{c}'")))
            })
            .collect::<Result<_, _>>()?,
        None => (0..headers.len()).filter(|&i| Some(&headers[i]) != schema.id_column.as_ref()).collect(),
    };
    if let Some(id) = &schema.id_column
        && !headers.contains(id)
    {
        return Err(BatchError::Input(format!("no id column named '{id}'")));
    }
    if indices.len() != width {
        return Err(BatchError::Input(format!(
            "{} feature columns, but input '{}' takes {width} values per row (pick them with --columns)",
            indices.len(),
            schema.inputs[0].name
        )));
    }
    Ok(indices)
}

struct CsvRows {
    reader: csv::Reader<File>,
    schema: RowSchema,
    headers: Vec<String>,
    features: Vec<usize>,
    id: Option<usize>,
    row: u64,
}

impl CsvRows {
    fn new(file: File, schema: RowSchema) -> Result<CsvRows, BatchError> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(file);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| BatchError::Input(format!("reading the CSV header: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        let features = feature_columns(&headers, &schema)?;
        let id = schema.id_column.as_ref().and_then(|c| headers.iter().position(|h| h == c));
        Ok(CsvRows { reader, schema, headers, features, id, row: 0 })
    }
}

impl Iterator for CsvRows {
    type Item = Result<InputRow, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut record = csv::StringRecord::new();
        match self.reader.read_record(&mut record) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(error) if error.is_io_error() => return Some(Err(BatchError::Input(error.to_string()))),
            Err(error) => {
                let row = self.row;
                self.row += 1;
                return Some(Ok(InputRow { row, id: row.to_string(), inputs: Err(error.to_string()) }));
            }
        }
        let row = self.row;
        self.row += 1;
        let id = self.id.and_then(|i| record.get(i)).map_or_else(|| row.to_string(), str::to_string);
        let inputs = if record.len() != self.headers.len() {
            Err(format!("{} columns, the header has {}", record.len(), self.headers.len()))
        } else {
            let cells = self.features.iter().map(|&i| {
                let text = record.get(i).unwrap_or_default();
                (self.headers[i].clone(), text.parse::<f64>().map_err(|_| text.to_string()))
            });
            features(cells).map(|values| vec![self.schema.tensor(&values)])
        };
        Some(Ok(InputRow { row, id, inputs }))
    }
}

impl RowSource for CsvRows {
    fn position(&self) -> u64 {
        self.reader.position().byte()
    }
}

struct NdjsonRows {
    lines: BufReader<File>,
    schema: RowSchema,
    row: u64,
    position: u64,
    /// Feature keys of flat objects, fixed by `--columns` or the first flat line.
    columns: Option<Vec<String>>,
}

impl NdjsonRows {
    fn parse(&mut self, line: &str, row: u64) -> (String, Result<Vec<Tensor>, String>) {
        let fallback = row.to_string();
        let object: Vec<(String, Value)> = match serde_json::from_str::<OrderedObject>(line) {
            Ok(object) => object.0,
            Err(error) => return (fallback, Err(format!("not a JSON object: {error}"))),
        };
        let get = |key: &str| object.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let id_key = self.schema.id_column.as_deref().unwrap_or("id");
        let id = match get(id_key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => fallback,
        };
        if get("inputs").is_some() {
            let inputs =
                edgeinfer_oip::decode_request(line.as_bytes()).map(|(_, tensors)| tensors).map_err(|e| e.to_string());
            let inputs = inputs.and_then(|tensors| match tensors.iter().find(|t| t.shape.first() != Some(&1)) {
                Some(t) => {
                    Err(format!("input '{}' has batch dimension {:?}; one row per line", t.name, t.shape.first()))
                }
                None => Ok(tensors),
            });
            return (id, inputs);
        }
        let width = match self.schema.width() {
            Ok(width) => width,
            Err(message) => return (id, Err(message)),
        };
        // {"X": [..]}: the input by name; otherwise flat feature keys.
        if let Some(Value::Array(items)) = get(&self.schema.inputs[0].name) {
            let cells =
                items.iter().enumerate().map(|(j, v)| (format!("{}[{j}]", self.schema.inputs[0].name), number(v)));
            let values = features(cells);
            return (id, values.and_then(|v| self.checked(v, width)));
        }
        let columns = self.columns.get_or_insert_with(|| {
            self.schema
                .columns
                .clone()
                .unwrap_or_else(|| object.iter().map(|(k, _)| k.clone()).filter(|k| k != id_key).collect())
        });
        let cells = columns.iter().map(|c| (c.clone(), get(c).map_or(Err("missing".to_string()), number)));
        let values = features(cells);
        (id, values.and_then(|v| self.checked(v, width)))
    }

    fn checked(&self, values: Vec<f64>, width: usize) -> Result<Vec<Tensor>, String> {
        if values.len() != width {
            return Err(format!("{} values, input '{}' takes {width}", values.len(), self.schema.inputs[0].name));
        }
        Ok(vec![self.schema.tensor(&values)])
    }
}

fn number(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| n.to_string()),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        Value::String(s) if s == "NaN" => Ok(f64::NAN),
        other => Err(other.to_string()),
    }
}

impl Iterator for NdjsonRows {
    type Item = Result<InputRow, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => return None,
                Ok(n) => self.position += n as u64,
                Err(error) => return Some(Err(BatchError::Input(format!("reading NDJSON: {error}")))),
            }
            if line.trim().is_empty() {
                continue;
            }
            let row = self.row;
            self.row += 1;
            let (id, inputs) = self.parse(line.trim_end(), row);
            return Some(Ok(InputRow { row, id, inputs }));
        }
    }
}

impl RowSource for NdjsonRows {
    fn position(&self) -> u64 {
        self.position
    }
}

/// A JSON object with its keys in file order.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}
