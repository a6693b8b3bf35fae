//! Parquet in and out: input rows read column-wise (only the feature and id columns), and
//! the finished output written from the staged NDJSON with a schema from the model's outputs.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use edgeinfer_oip::Datatype;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::Value;

use super::BatchError;
use super::input::{InputRow, RowSchema, RowSource, feature_columns};
use super::output::Layout;

/// Rows per Arrow batch, reading and writing.
const BATCH_ROWS: usize = 8192;

fn input_error(error: impl std::fmt::Display) -> BatchError {
    BatchError::Input(format!("Parquet: {error}"))
}

/// Opens a Parquet file as rows for `schema`.
pub fn open(file: File, schema: &RowSchema) -> Result<Box<dyn RowSource>, BatchError> {
    let size = file.metadata().map_or(0, |m| m.len());
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(input_error)?;
    let headers: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let features = feature_columns(&headers, schema)?;
    let id = schema.id_column.as_ref().and_then(|c| headers.iter().position(|h| h == c));
    let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let reader = builder.with_batch_size(BATCH_ROWS).build().map_err(input_error)?;
    Ok(Box::new(ParquetRows {
        reader,
        headers,
        features,
        id,
        schema: schema.clone(),
        batch: None,
        row: 0,
        total_rows,
        size,
    }))
}

/// One Arrow batch, its feature columns as f64 and ids as text.
struct Columns {
    features: Vec<Float64Array>,
    ids: Option<StringArray>,
    next: usize,
    rows: usize,
}

struct ParquetRows {
    reader: ParquetRecordBatchReader,
    headers: Vec<String>,
    features: Vec<usize>,
    id: Option<usize>,
    schema: RowSchema,
    batch: Option<Columns>,
    row: u64,
    total_rows: u64,
    size: u64,
}

impl ParquetRows {
    fn load(&mut self, batch: RecordBatch) -> Result<Columns, BatchError> {
        let cast = |index: usize, to: &DataType| -> Result<ArrayRef, BatchError> {
            arrow_cast::cast(batch.column(index), to)
                .map_err(|e| BatchError::Input(format!("column '{}': {e}", self.headers[index])))
        };
        let features = self
            .features
            .iter()
            .map(|&i| {
                let array = cast(i, &DataType::Float64)?;
                array
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or_else(|| BatchError::Input(format!("column '{}' is not numeric", self.headers[i])))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids =
            match self.id {
                Some(i) => Some(cast(i, &DataType::Utf8)?.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(
                    || BatchError::Input(format!("column '{}' cannot be read as text", self.headers[i])),
                )?),
                None => None,
            };
        Ok(Columns { features, ids, next: 0, rows: batch.num_rows() })
    }
}

impl Iterator for ParquetRows {
    type Item = Result<InputRow, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.batch.as_ref().is_none_or(|b| b.next >= b.rows) {
            let batch = match self.reader.next()? {
                Ok(batch) => batch,
                Err(error) => return Some(Err(input_error(error))),
            };
            match self.load(batch) {
                Ok(columns) => self.batch = Some(columns),
                Err(error) => return Some(Err(error)),
            }
        }
        let columns = self.batch.as_mut()?;
        let r = columns.next;
        columns.next += 1;
        let row = self.row;
        self.row += 1;
        let id = columns
            .ids
            .as_ref()
            .filter(|ids| !ids.is_null(r))
            .map_or_else(|| row.to_string(), |ids| ids.value(r).to_string());
        let mut values = Vec::with_capacity(columns.features.len());
        let mut problem = None;
        for (array, &index) in columns.features.iter().zip(&self.features) {
            let name = &self.headers[index];
            if array.is_null(r) {
                problem = Some(format!("column '{name}' is null"));
                break;
            }
            let value = array.value(r);
            if value.is_nan() {
                problem = Some(format!("column '{name}' is NaN"));
                break;
            }
            values.push(value);
        }
        let inputs = match problem {
            Some(message) => Err(message),
            None => Ok(vec![self.schema.tensor(&values)]),
        };
        Some(Ok(InputRow { row, id, inputs }))
    }
}

impl RowSource for ParquetRows {
    fn position(&self) -> u64 {
        self.size.saturating_mul(self.row).checked_div(self.total_rows).unwrap_or(0)
    }
}

/// One output column being built.
enum Builder {
    Int(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Text(StringBuilder),
    IntList(ListBuilder<Int64Builder>),
    F32List(ListBuilder<Float32Builder>),
    F64List(ListBuilder<Float64Builder>),
    BoolList(ListBuilder<BooleanBuilder>),
    TextList(ListBuilder<StringBuilder>),
}

impl Builder {
    fn new(datatype: Datatype, list: bool) -> Builder {
        match (datatype, list) {
            (Datatype::Fp32 | Datatype::Fp16, false) => Builder::F32(Float32Builder::new()),
            (Datatype::Fp64, false) => Builder::F64(Float64Builder::new()),
            (Datatype::Bool, false) => Builder::Bool(BooleanBuilder::new()),
            (Datatype::Bytes, false) => Builder::Text(StringBuilder::new()),
            (_, false) => Builder::Int(Int64Builder::new()),
            (Datatype::Fp32 | Datatype::Fp16, true) => Builder::F32List(ListBuilder::new(Float32Builder::new())),
            (Datatype::Fp64, true) => Builder::F64List(ListBuilder::new(Float64Builder::new())),
            (Datatype::Bool, true) => Builder::BoolList(ListBuilder::new(BooleanBuilder::new())),
            (Datatype::Bytes, true) => Builder::TextList(ListBuilder::new(StringBuilder::new())),
            (_, true) => Builder::IntList(ListBuilder::new(Int64Builder::new())),
        }
    }

    fn push(&mut self, value: &Value) {
        let items = || value.as_array().cloned().unwrap_or_default();
        match self {
            Builder::Int(b) => b.append_option(value.as_i64()),
            Builder::F32(b) => b.append_option(value.as_f64().map(|v| v as f32)),
            Builder::F64(b) => b.append_option(value.as_f64()),
            Builder::Bool(b) => b.append_option(value.as_bool()),
            Builder::Text(b) => b.append_option(value.as_str()),
            Builder::IntList(b) => b.append_value(items().iter().map(Value::as_i64)),
            Builder::F32List(b) => b.append_value(items().iter().map(|v| v.as_f64().map(|f| f as f32))),
            Builder::F64List(b) => b.append_value(items().iter().map(Value::as_f64)),
            Builder::BoolList(b) => b.append_value(items().iter().map(Value::as_bool)),
            Builder::TextList(b) => b.append_value(items().iter().map(|v| v.as_str().map(str::to_string))),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::IntList(b) => Arc::new(b.finish()),
            Builder::F32List(b) => Arc::new(b.finish()),
            Builder::F64List(b) => Arc::new(b.finish()),
            Builder::BoolList(b) => Arc::new(b.finish()),
            Builder::TextList(b) => Arc::new(b.finish()),
        }
    }
}

/// Writes the staged NDJSON output at `staged` as Parquet at `target`.
pub fn write_from_ndjson(staged: &Path, target: &Path, layout: &Layout) -> Result<(), BatchError> {
    let fail = |e: &dyn std::fmt::Display| BatchError::Output(format!("writing {}: {e}", target.display()));
    let lines = BufReader::new(File::open(staged).map_err(|e| fail(&e))?);
    let mut names = vec!["id".to_string()];
    names.extend(layout.columns.iter().map(|c| c.name.clone()));
    let mut builders: Vec<Builder> = std::iter::once(Builder::new(Datatype::Bytes, false))
        .chain(layout.columns.iter().map(|c| Builder::new(c.datatype, c.width.is_some())))
        .collect();
    let mut writer: Option<ArrowWriter<File>> = None;
    let mut pending = 0;
    let flush = |builders: &mut Vec<Builder>, writer: &mut Option<ArrowWriter<File>>| -> Result<(), BatchError> {
        let columns: Vec<(String, ArrayRef)> =
            names.iter().cloned().zip(builders.iter_mut().map(Builder::finish)).collect();
        let batch = RecordBatch::try_from_iter(columns).map_err(|e| fail(&e))?;
        if writer.is_none() {
            let file = File::create(target).map_err(|e| fail(&e))?;
            *writer = Some(ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| fail(&e))?);
        }
        if let Some(writer) = writer.as_mut() {
            writer.write(&batch).map_err(|e| fail(&e))?;
        }
        Ok(())
    };
    for line in lines.lines() {
        let line = line.map_err(|e| fail(&e))?;
        let object: serde_json::Map<String, Value> = serde_json::from_str(&line).map_err(|e| fail(&e))?;
        builders[0].push(object.get("id").unwrap_or(&Value::Null));
        for (builder, column) in builders[1..].iter_mut().zip(&layout.columns) {
            builder.push(object.get(&column.name).unwrap_or(&Value::Null));
        }
        pending += 1;
        if pending == BATCH_ROWS {
            flush(&mut builders, &mut writer)?;
            pending = 0;
        }
    }
    if pending > 0 || writer.is_none() {
        flush(&mut builders, &mut writer)?;
    }
    if let Some(writer) = writer {
        let file = writer.into_inner().map_err(|e| fail(&e))?;
        file.sync_all().map_err(|e| fail(&e))?;
    }
    Ok(())
}
