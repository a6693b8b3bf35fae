//! ONNX-ML operators scikit-learn pipelines use and tract 0.23 lacks, registered into tract's
//! ONNX op register before a model is parsed. Each is a tract expansion of core ops, so it
//! optimizes and vectorizes like the rest of the graph; an attribute combination an operator
//! does not support fails the compile naming it.

mod lookup;
mod svm;
mod tree;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core;
use tract_onnx::tract_hir::tract_core::ops::binary::TypedBinOp;

/// Adds this module's operators to `register`.
pub fn register(register: &mut OnnxOpRegister) {
    register.insert("ArrayFeatureExtractor", |_, _| Ok((expand(ArrayFeatureExtractor), vec![])));
    register.insert("Scaler", scaler);
    register.insert("Binarizer", binarizer);
    register.insert("Imputer", imputer);
    register.insert("ZipMap", zip_map);
    register.insert("OneHotEncoder", one_hot_encoder);
    register.insert("LabelEncoder", lookup::label_encoder);
    register.insert("FeatureVectorizer", feature_vectorizer);
    register.insert("SVMRegressor", svm::svm_regressor);
    register.insert("SVMClassifier", svm::svm_classifier);
    register.insert("TreeEnsembleRegressor", tree::tree_regressor);
    register.insert("TreeEnsembleClassifier", tree::tree_classifier);
}

/// A per-feature (or single) float list as a [1, C] (or [1, 1]) constant.
fn row(values: &[f32]) -> TractResult<Arc<Tensor>> {
    Ok(tensor1(values).into_shape(&[1, values.len()])?.into_arc_tensor())
}

/// A classifier's labels: the int64 list `ints` or the string list `strings`, exactly one.
fn class_labels(node: &NodeProto, ints: &str, strings: &str) -> TractResult<Arc<Tensor>> {
    let numbers = node.get_attr_opt_slice::<i64>(ints)?.filter(|v| !v.is_empty());
    let names = node.get_attr_opt_tvec::<&str>(strings)?.filter(|v| !v.is_empty());
    match (numbers, names) {
        (Some(numbers), None) => Ok(rctensor1(numbers)),
        (None, Some(names)) => Ok(rctensor1(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>())),
        (None, None) => bail!("{} needs class labels: {ints} or {strings}", node.op_type),
        (Some(_), Some(_)) => bail!("{} has both {ints} and {strings}; only one can be set", node.op_type),
    }
}

/// A classifier's label per row: the label of the first column with the highest value of
/// `columns` ([N, classes]). (An index past the labels falls back to zero, or "" for string
/// labels: String has no zero.)
fn winning_label(
    model: &mut TypedModel,
    prefix: &str,
    columns: OutletId,
    labels: &Arc<Tensor>,
) -> TractResult<OutletId> {
    use tract_core::ops::nn::{Reduce, Reducer};
    let winner =
        model.wire_node(format!("{prefix}.argmax"), Reduce::new(tvec!(1), Reducer::ArgMax(false)), &[columns])?;
    let winner = model.wire_node(format!("{prefix}.rm_axis"), AxisOp::Rm(1), &winner)?;
    let winner =
        model.wire_node(format!("{prefix}.as_i32"), tract_core::ops::cast::cast(i32::datum_type()), &winner)?;
    let fallback = if labels.datum_type() == DatumType::String {
        rctensor0(String::new())
    } else {
        Tensor::zero_dt(labels.datum_type(), &[])?.into_arc_tensor()
    };
    let lookup = tract_onnx_opl::ml::DirectLookup::new(labels.clone(), fallback)?;
    Ok(model.wire_node(format!("{prefix}.labels"), lookup, &winner)?[0])
}

/// Rules of the classifiers: one input; labels [N] of the labels' type and f32 scores
/// [N, `score_columns`].
fn classifier_rules<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    labels: DatumType,
    score_columns: usize,
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 2)?;
    s.equals(&outputs[0].datum_type, labels)?;
    s.equals(&outputs[0].rank, 1)?;
    s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
    s.equals(&outputs[1].datum_type, DatumType::F32)?;
    s.equals(&outputs[1].rank, 2)?;
    s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
    s.equals(&outputs[1].shape[1], score_columns.to_dim())?;
    Ok(())
}

/// `comparison(a, b)` as an f32 mask: 1.0 where it holds, else 0.0.
fn mask(model: &mut TypedModel, name: &str, comparison: TypedBinOp, a: OutletId, b: OutletId) -> TractResult<OutletId> {
    let held = model.wire_node(name, comparison, &[a, b])?;
    Ok(model.wire_node(format!("{name}.to_f32"), tract_core::ops::cast::cast(f32::datum_type()), &held)?[0])
}

/// Casts `x` to f32 when it is not already.
fn to_f32(model: &mut TypedModel, prefix: &str, x: OutletId) -> TractResult<OutletId> {
    if model.outlet_fact(x)?.datum_type == f32::datum_type() {
        return Ok(x);
    }
    Ok(model.wire_node(format!("{prefix}.to_f32"), tract_core::ops::cast::cast(f32::datum_type()), &[x])?[0])
}

/// Rules shared by the element-wise operators: one input, one f32 output of the same shape.
fn same_shape_f32<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&outputs[0].datum_type, DatumType::F32)?;
    s.equals(&outputs[0].shape, &inputs[0].shape)?;
    Ok(())
}

/// Rules of the regressors: one input, one f32 [rows of the input, `columns`] output.
fn f32_rows<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    columns: usize,
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&outputs[0].datum_type, DatumType::F32)?;
    s.equals(&outputs[0].rank, 2)?;
    s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
    s.equals(&outputs[0].shape[1], columns.to_dim())?;
    Ok(())
}

/// `Scaler`: y = (x - offset) * scale, per feature or for all.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Scaler {
    offset: Arc<Tensor>,
    scale: Arc<Tensor>,
}

fn scaler(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset: Vec<f32> = node.get_attr_opt_vec("offset")?.unwrap_or_else(|| vec![0.0]);
    let scale: Vec<f32> = node.get_attr_opt_vec("scale")?.unwrap_or_else(|| vec![1.0]);
    node.expect(!offset.is_empty() && !scale.is_empty(), "offset and scale are not empty")?;
    Ok((expand(Scaler { offset: row(&offset)?, scale: row(&scale)? }), vec![]))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_f32(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = to_f32(model, prefix, inputs[0])?;
        let offset = model.add_const(format!("{prefix}.offset"), self.offset.clone())?;
        let scale = model.add_const(format!("{prefix}.scale"), self.scale.clone())?;
        let centered = model.wire_node(format!("{prefix}.sub"), tract_core::ops::math::sub(), &[x, offset])?;
        model.wire_node(format!("{prefix}.mul"), tract_core::ops::math::mul(), &[centered[0], scale])
    }
}

/// `Binarizer`: y = 1 where x > threshold, else 0.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Binarizer {
    threshold: Arc<Tensor>,
}

fn binarizer(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let threshold: f32 = node.get_attr_opt("threshold")?.unwrap_or(0.0);
    Ok((expand(Binarizer { threshold: row(&[threshold])? }), vec![]))
}

impl Expansion for Binarizer {
    fn name(&self) -> StaticName {
        "Binarizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_f32(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = to_f32(model, prefix, inputs[0])?;
        let threshold = model.add_const(format!("{prefix}.threshold"), self.threshold.clone())?;
        Ok(tvec!(mask(
            model,
            &format!("{prefix}.gt"),
            TypedBinOp(tract_core::ops::logic::comp_gt(), None),
            x,
            threshold
        )?))
    }
}

/// `Imputer` (float form): values equal to `replaced_value_float` (NaN: any NaN) become
/// `imputed_value_floats` (per feature or for all).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Imputer {
    replaced: Arc<Tensor>,
    replaced_is_nan: bool,
    imputed: Arc<Tensor>,
}

fn imputer(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let int_form: Option<Vec<i64>> = node.get_attr_opt_vec("imputed_value_int64s")?;
    node.expect_attr(
        "imputed_value_int64s",
        int_form.is_none_or(|v| v.is_empty()),
        "none (the int64 form is not supported; only imputed_value_floats)",
    )?;
    let imputed: Vec<f32> = node.get_attr_opt_vec("imputed_value_floats")?.unwrap_or_default();
    node.expect(!imputed.is_empty(), "imputed_value_floats is not empty")?;
    let replaced: f32 = node.get_attr_opt("replaced_value_float")?.unwrap_or(0.0);
    Ok((
        expand(Imputer { replaced: row(&[replaced])?, replaced_is_nan: replaced.is_nan(), imputed: row(&imputed)? }),
        vec![],
    ))
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_f32(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = to_f32(model, prefix, inputs[0])?;
        let mask = if self.replaced_is_nan {
            model.wire_node(format!("{prefix}.is_nan"), tract_core::ops::math::is_nan(), &[x])?
        } else {
            let replaced = model.add_const(format!("{prefix}.replaced"), self.replaced.clone())?;
            model.wire_node(
                format!("{prefix}.eq"),
                tract_core::ops::binary::TypedBinOp(tract_core::ops::logic::comp_eq(), None),
                &[x, replaced],
            )?
        };
        let shape = model.outlet_fact(x)?.shape.clone();
        let imputed = model.add_const(format!("{prefix}.imputed"), self.imputed.clone())?;
        let imputed = model.wire_node(
            format!("{prefix}.imputed_broadcast"),
            tract_core::ops::array::MultiBroadcastTo::new(shape),
            &[imputed],
        )?;
        model.wire_node(format!("{prefix}.where"), tract_core::ops::logic::Iff, &[mask[0], imputed[0], x])
    }
}

/// `ZipMap`: a sequence of maps, which tensors cannot represent; the model serves ZipMap's
/// input instead, the [N, classes] probability tensor, columns in the order of the class
/// labels (`classlabels_int64s` or `classlabels_strings`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct ZipMap;

fn zip_map(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = class_labels(node, "classlabels_int64s", "classlabels_strings")?;
    let labels: Vec<String> = if labels.datum_type() == i64::datum_type() {
        labels.try_as_plain_ram()?.as_slice::<i64>()?.iter().map(i64::to_string).collect()
    } else {
        labels.try_as_plain_ram()?.as_slice::<String>()?.to_vec()
    };
    if let Some(output) = node.output.first() {
        ZIPMAP_LABELS.lock().unwrap_or_else(|p| p.into_inner()).insert(output.clone(), labels);
    }
    Ok((expand(ZipMap), vec![]))
}

/// Labels of the ZipMaps parsed so far, by output name (one model per component: the
/// snapshot keeps those of its model).
static ZIPMAP_LABELS: std::sync::Mutex<std::collections::BTreeMap<String, Vec<String>>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The class labels of output `name` when it is a ZipMap's (served as its probability tensor).
pub fn zipmap_labels(name: &str) -> Option<Vec<String>> {
    ZIPMAP_LABELS.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
}

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, _prefix: &str, _model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        Ok(tvec!(inputs[0]))
    }
}

/// `OneHotEncoder` with int64 or string categories: output = input shape + [categories], 1.0
/// where the input equals the category (numbers are cast to int64 first). `zeros = 0` (fail
/// on an unknown value) cannot be expressed in a graph and is refused at compile time.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct OneHotEncoder {
    /// Category -> its position, -1 for anything else.
    positions: lookup::Lookup,
    categories: usize,
}

fn one_hot_encoder(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let strings: Vec<String> = node.get_attr_opt_vec("cats_strings")?.unwrap_or_default();
    let numbers: Vec<i64> = node.get_attr_opt_vec("cats_int64s")?.unwrap_or_default();
    node.expect(strings.is_empty() != numbers.is_empty(), "exactly one of cats_int64s and cats_strings")?;
    let zeros: i64 = node.get_attr_opt("zeros")?.unwrap_or(1);
    node.expect_attr("zeros", zeros == 1, "1 (zeros = 0, an error on unknown categories, is not supported)")?;
    let categories = strings.len() + numbers.len();
    let keys = if strings.is_empty() { rctensor1(&numbers) } else { rctensor1(&strings) };
    let positions: Vec<i64> = (0..categories as i64).collect();
    let positions = lookup::Lookup::new(keys, rctensor1(&positions), rctensor0(-1i64))?;
    Ok((expand(OneHotEncoder { positions, categories }), vec![]))
}

impl Expansion for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, inputs[0].rank.bex() + 1)?;
        s.given(&inputs[0].rank, move |s, rank| {
            let rank = rank as usize;
            for axis in 0..rank {
                s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            }
            s.equals(&outputs[0].shape[rank], self.categories.to_dim())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        let input = model.outlet_fact(x)?.datum_type;
        if input != self.positions.key_type() {
            ensure!(self.positions.key_type() == DatumType::I64, "{input:?} input for string categories");
            x = model.wire_node(format!("{prefix}.to_i64"), tract_core::ops::cast::cast(i64::datum_type()), &[x])?[0];
        }
        let position = model.wire_node(format!("{prefix}.position"), self.positions.clone(), &[x])?[0];
        let rank = model.outlet_fact(position)?.rank();
        let position = model.wire_node(format!("{prefix}.add_axis"), AxisOp::Add(rank), &[position])?[0];
        let mut shape = vec![1usize; rank];
        shape.push(self.categories);
        let all: Vec<i64> = (0..self.categories as i64).collect();
        let all =
            model.add_const(format!("{prefix}.categories"), tensor1(&all).into_shape(&shape)?.into_arc_tensor())?;
        Ok(tvec!(mask(
            model,
            &format!("{prefix}.eq"),
            TypedBinOp(tract_core::ops::logic::comp_eq(), None),
            position,
            all
        )?))
    }
}

/// `ArrayFeatureExtractor` as onnxruntime runs it: the indices (any shape, a scalar included)
/// pick columns of the last axis, which keeps its place: [.., C] -> [.., indices]. (tract's
/// own puts the indices' shape in place of the last axis, so a scalar index dropped it and
/// skl2onnx's one-vs-one SVC graphs failed to concatenate.) A 1-D input gives [indices], as
/// the shapes skl2onnx declares say (onnxruntime gives [1, indices]; skl2onnx reshapes next).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct ArrayFeatureExtractor;

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[1].datum_type, i64::datum_type())?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, input, indices| {
            let mut shape = input.clone();
            shape.pop();
            shape.push(indices.iter().product());
            s.equals(&outputs[0].shape, shape)
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = inputs[0];
        let indices_shape = model.outlet_fact(inputs[1])?.shape.to_tvec();
        let count: TDim = indices_shape.iter().product();
        let indices = model.wire_node(
            format!("{prefix}.flat_indices"),
            AxisOp::Reshape(0, indices_shape, tvec!(count)),
            &[inputs[1]],
        )?[0];
        let last = model.outlet_fact(x)?.rank() - 1;
        model.wire_node(prefix, tract_core::ops::array::Gather { axis: last, output_type: None }, &[x, indices])
    }
}

/// `FeatureVectorizer`: its inputs' columns side by side, each input taking exactly
/// `inputdimensions[i]` columns (cut, or padded with zeros), cast to f32. [N, sum].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct FeatureVectorizer {
    widths: Vec<usize>,
}

fn feature_vectorizer(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let widths: Vec<i64> = node.get_attr_opt_vec("inputdimensions")?.unwrap_or_default();
    node.expect_attr("inputdimensions", widths.len() == node.input.len(), "one width per input")?;
    node.expect_attr("inputdimensions", widths.iter().all(|w| *w > 0), "positive widths")?;
    Ok((expand(FeatureVectorizer { widths: widths.into_iter().map(|w| w as usize).collect() }), vec![]))
}

impl Expansion for FeatureVectorizer {
    fn name(&self) -> StaticName {
        "FeatureVectorizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.widths.len())?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.widths.iter().sum::<usize>().to_dim())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        use tract_onnx::tract_hir::ops::array::{Pad, PadMode, Slice, TypedConcat};
        let mut columns = tvec!();
        for (ix, (input, width)) in inputs.iter().zip(&self.widths).enumerate() {
            let mut x = to_f32(model, &format!("{prefix}.{ix}"), *input)?;
            if model.outlet_fact(x)?.rank() == 1 {
                x = model.wire_node(format!("{prefix}.{ix}.as_column"), AxisOp::Add(1), &[x])?[0];
            }
            let fact = model.outlet_fact(x)?.clone();
            ensure!(fact.rank() == 2, "FeatureVectorizer input {ix} has rank {}, not 1 or 2", fact.rank());
            let have = fact.shape[1].to_usize()?;
            if have > *width {
                x = model.wire_node(format!("{prefix}.{ix}.cut"), Slice::new(1, 0, *width), &[x])?[0];
            } else if have < *width {
                let pad = Pad::new(vec![(0, 0), (0, width - have)], PadMode::Constant(rctensor0(0f32)));
                x = model.wire_node(format!("{prefix}.{ix}.pad"), pad, &[x])?[0];
            }
            columns.push(x);
        }
        model.wire_node(prefix, TypedConcat::new(1), &columns)
    }
}
