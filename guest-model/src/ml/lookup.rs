//! Value lookups: `LabelEncoder` (ONNX-ML opsets 1-4: string, int64 and float keys and values,
//! defaults) and the category index behind `OneHotEncoder`. One op, [`Lookup`], maps each
//! element of its input through a key -> value table, with a default for unknown keys.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core;

/// A lookup key: strings, integers, or floats by their bits (every NaN is one key, as ONNX's
/// LabelEncoder-4 says NaN keys match NaN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Text(String),
    Integer(i64),
    Float(u32),
}

impl Key {
    fn float(value: f32) -> Key {
        Key::Float(if value.is_nan() { f32::NAN.to_bits() } else { value.to_bits() })
    }

    /// Every element of `keys` (String, I64 or F32) as a key.
    fn all(keys: &Tensor) -> TractResult<Vec<Key>> {
        let plain = keys.try_as_plain_ram()?;
        Ok(match keys.datum_type() {
            DatumType::String => plain.as_slice::<String>()?.iter().cloned().map(Key::Text).collect(),
            DatumType::I64 => plain.as_slice::<i64>()?.iter().copied().map(Key::Integer).collect(),
            DatumType::F32 => plain.as_slice::<f32>()?.iter().copied().map(Key::float).collect(),
            other => bail!("keys of type {other:?} are not supported (string, int64 or float)"),
        })
    }
}

/// Maps each input element through `keys` -> `values`; unknown keys get `default`.
/// Input: String, I64 or F32 (the keys' type); output: the values' type, same shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    index: HashMap<Key, usize>,
    keys: Arc<Tensor>,
    values: Arc<Tensor>,
    default: Arc<Tensor>,
}

impl Hash for Lookup {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.keys.hash(state);
        self.values.hash(state);
        self.default.hash(state);
    }
}

impl Lookup {
    /// A table from `keys` to `values` (1-D, same length) with a scalar `default`.
    pub fn new(keys: Arc<Tensor>, values: Arc<Tensor>, default: Arc<Tensor>) -> TractResult<Lookup> {
        ensure!(keys.len() == values.len(), "{} keys for {} values", keys.len(), values.len());
        ensure!(values.datum_type() == default.datum_type(), "the default is not of the values' type");
        let mut index = HashMap::new();
        for (at, key) in Key::all(&keys)?.into_iter().enumerate() {
            index.entry(key).or_insert(at); // the first of duplicate keys wins
        }
        Ok(Lookup { index, keys, values, default })
    }

    /// The datum type inputs must have.
    pub fn key_type(&self) -> DatumType {
        self.keys.datum_type()
    }

    fn pick<T: Datum>(&self, positions: &[Option<usize>], shape: &[usize]) -> TractResult<Tensor> {
        let values = self.values.try_as_plain_ram()?.as_slice::<T>()?;
        let default = self.default.try_as_plain_ram()?.to_scalar::<T>()?;
        let picked: Vec<T> = positions.iter().map(|p| p.map_or(default, |p| &values[p]).clone()).collect();
        Ok(tract_ndarray::ArrayD::from_shape_vec(shape, picked)?.into_tensor())
    }
}

impl Op for Lookup {
    fn name(&self) -> StaticName {
        "Lookup".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Lookup {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let keys = Key::all(&input)?;
        let positions: Vec<Option<usize>> = keys.iter().map(|k| self.index.get(k).copied()).collect();
        let output = dispatch_datum!(Self::pick(self.values.datum_type())(self, &positions, input.shape()))?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Lookup {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == self.key_type(),
            "input of type {:?} for keys of type {:?}",
            inputs[0].datum_type,
            self.key_type()
        );
        Ok(tvec!(self.values.datum_type().fact(inputs[0].shape.iter())))
    }

    as_op!();
}

/// Parses a `LabelEncoder` node: opset 2-4 keys/values (lists or tensors) with defaults, or
/// opset 1's `classes_strings` (strings to their index, or indices to their string).
pub fn label_encoder(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if let Some(classes) = node.get_attr_opt_vec::<String>("classes_strings")? {
        let default_int64: i64 = node.get_attr_opt("default_int64")?.unwrap_or(-1);
        let default_string: String = node.get_attr_opt("default_string")?.unwrap_or_else(|| "_Unused".into());
        let indices: Vec<i64> = (0..classes.len() as i64).collect();
        let classes = rctensor1(&classes);
        return Ok((
            expand(LabelEncoder::ByInputType {
                from_strings: Lookup::new(classes.clone(), rctensor1(&indices), rctensor0(default_int64))?,
                from_indices: Lookup::new(rctensor1(&indices), classes, rctensor0(default_string))?,
            }),
            vec![],
        ));
    }
    let keys = list_or_tensor(ctx, node, "keys")?;
    let values = list_or_tensor(ctx, node, "values")?;
    let default = match node.get_attr_opt("default_tensor")? {
        Some(tensor) => ctx.load_tensor(tensor)?,
        None => match values.datum_type() {
            DatumType::String => {
                tensor0(node.get_attr_opt::<String>("default_string")?.unwrap_or_else(|| "_Unused".into()))
            }
            DatumType::I64 => tensor0(node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1)),
            DatumType::F32 => tensor0(node.get_attr_opt::<f32>("default_float")?.unwrap_or(-0.0)),
            other => bail!("LabelEncoder values of type {other:?} are not supported"),
        },
    };
    node.expect_attr("default_tensor", default.len() == 1, "a single default value")?;
    let default = default.into_shape(&[])?;
    Ok((
        expand(LabelEncoder::Table(Lookup::new(
            keys.into_arc_tensor(),
            values.into_arc_tensor(),
            default.into_arc_tensor(),
        )?)),
        vec![],
    ))
}

/// `<what>_strings`, `<what>_int64s`, `<what>_floats` or `<what>_tensor`: exactly one.
fn list_or_tensor(ctx: &ParsingContext, node: &NodeProto, what: &str) -> TractResult<Tensor> {
    let mut found = vec![];
    if let Some(v) = node.get_attr_opt_vec::<String>(&format!("{what}_strings"))? {
        found.push(tensor1(&v));
    }
    if let Some(v) = node.get_attr_opt_vec::<i64>(&format!("{what}_int64s"))? {
        found.push(tensor1(&v));
    }
    if let Some(v) = node.get_attr_opt_vec::<f32>(&format!("{what}_floats"))? {
        found.push(tensor1(&v));
    }
    if let Some(t) = node.get_attr_opt(&format!("{what}_tensor"))? {
        let tensor = ctx.load_tensor(t)?;
        let len = tensor.len();
        found.push(tensor.into_shape(&[len])?);
    }
    node.expect(found.len() == 1, || {
        format!("exactly one of {what}_strings, {what}_int64s, {what}_floats, {what}_tensor")
    })?;
    found.pop().context("one list or tensor")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum LabelEncoder {
    /// Opset 2-4: one table.
    Table(Lookup),
    /// Opset 1: the direction follows the input's type.
    ByInputType { from_strings: Lookup, from_indices: Lookup },
}

impl LabelEncoder {
    fn table(&self, input: DatumType) -> &Lookup {
        match self {
            LabelEncoder::Table(table) => table,
            LabelEncoder::ByInputType { from_strings, from_indices } => {
                if input == DatumType::String {
                    from_strings
                } else {
                    from_indices
                }
            }
        }
    }
}

impl Expansion for LabelEncoder {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        s.given(&inputs[0].datum_type, move |s, input| {
            s.equals(&outputs[0].datum_type, self.table(input).values.datum_type())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let input = model.outlet_fact(inputs[0])?.datum_type;
        let table = self.table(input);
        let mut x = inputs[0];
        if input != table.key_type() && input.is_number() && table.key_type().is_number() {
            x = model.wire_node(format!("{prefix}.cast_keys"), tract_core::ops::cast::cast(table.key_type()), &[x])?[0];
        }
        model.wire_node(prefix, table.clone(), &[x])
    }
}
