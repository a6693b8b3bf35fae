//! `SVMRegressor` and `SVMClassifier` (libsvm's models as scikit-learn's SVR and SVC export
//! them). Both start from the kernel of every row against every support vector, computed from
//! one matrix product (LINEAR, POLY, RBF, SIGMOID); the regressor weighs it into one value, the
//! classifier into one decision value per pair of classes, then one-vs-one votes pick the label
//! and, with `prob_a`/`prob_b`, Platt scaling and libsvm's pairwise coupling give the class
//! probabilities, as onnxruntime computes them.

use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::array::TypedConcat;
use tract_onnx::tract_hir::tract_core;

/// The kernel function of an SVM.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum KernelKind {
    Linear,
    Poly,
    Rbf,
    Sigmoid,
}

/// A kernel and its support vectors: wires K(x, sv) for every row and support vector.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Kernel {
    kind: KernelKind,
    gamma: u32,
    coef0: u32,
    degree: u32,
    /// [supports, features]
    supports: Arc<Tensor>,
}

impl Kernel {
    /// Reads `kernel_type` and `kernel_params` (gamma, coef0, degree) of `node`.
    fn parse(node: &NodeProto, supports: Tensor) -> TractResult<Kernel> {
        let kind = match node.get_attr_opt::<&str>("kernel_type")?.unwrap_or("LINEAR") {
            "LINEAR" => KernelKind::Linear,
            "POLY" => KernelKind::Poly,
            "RBF" => KernelKind::Rbf,
            "SIGMOID" => KernelKind::Sigmoid,
            other => bail!("kernel_type {other} is not supported"),
        };
        let params: Vec<f32> = node.get_attr_opt_vec("kernel_params")?.unwrap_or_default();
        Ok(Kernel {
            kind,
            gamma: params.first().copied().unwrap_or(0.0).to_bits(),
            coef0: params.get(1).copied().unwrap_or(0.0).to_bits(),
            degree: params.get(2).copied().unwrap_or(3.0) as u32,
            supports: supports.into_arc_tensor(),
        })
    }

    /// [N, features] -> [N, supports].
    fn wire(&self, prefix: &str, model: &mut TypedModel, x: OutletId) -> TractResult<OutletId> {
        use tract_core::ops::math;
        let x = super::to_f32(model, prefix, x)?;
        let gamma = f32::from_bits(self.gamma);
        let coef0 = f32::from_bits(self.coef0);
        let supports = model.add_const(format!("{prefix}.supports"), self.supports.clone())?;
        // [N, F] x [S, F]^T -> [N, S]
        let dot = model.wire_node(
            format!("{prefix}.dot"),
            EinSum::new(AxesMapping::for_numpy_matmul(2, false, true, false)?, f32::datum_type()),
            &[x, supports],
        )?[0];
        Ok(match self.kind {
            KernelKind::Linear => dot,
            KernelKind::Poly | KernelKind::Sigmoid => {
                let g = scalar(model, format!("{prefix}.gamma"), gamma)?;
                let c = scalar(model, format!("{prefix}.coef0"), coef0)?;
                let scaled = bin(model, format!("{prefix}.scale"), math::mul(), dot, g)?;
                let shifted = bin(model, format!("{prefix}.shift"), math::add(), scaled, c)?;
                if self.kind == KernelKind::Sigmoid {
                    model.wire_node(format!("{prefix}.tanh"), math::tanh(), &[shifted])?[0]
                } else {
                    let mut power = shifted;
                    for step in 1..self.degree.max(1) {
                        power = bin(model, format!("{prefix}.pow{step}"), math::mul(), power, shifted)?;
                    }
                    power
                }
            }
            KernelKind::Rbf => {
                // ||x - sv||^2 = |x|^2 - 2 x.sv + |sv|^2
                let sv = self.supports.to_plain_array_view::<f32>()?;
                let norms: Vec<f32> = sv.outer_iter().map(|row| row.iter().map(|v| v * v).sum()).collect();
                let sv_norms = model.add_const(format!("{prefix}.sv_norms"), super::row(&norms)?)?;
                let squares = model.wire_node(format!("{prefix}.x_squared"), math::square(), &[x])?[0];
                let x_norms =
                    model.wire_node(format!("{prefix}.x_norms"), Reduce::new(tvec!(1), Reducer::Sum), &[squares])?[0];
                let minus_two = scalar(model, format!("{prefix}.minus_two"), -2.0)?;
                let cross = bin(model, format!("{prefix}.cross"), math::mul(), dot, minus_two)?;
                let partial = bin(model, format!("{prefix}.partial"), math::add(), cross, x_norms)?;
                let distance = bin(model, format!("{prefix}.distance"), math::add(), partial, sv_norms)?;
                let minus_gamma = scalar(model, format!("{prefix}.minus_gamma"), -gamma)?;
                let exponent = bin(model, format!("{prefix}.exponent"), math::mul(), distance, minus_gamma)?;
                model.wire_node(format!("{prefix}.exp"), math::exp(), &[exponent])?[0]
            }
        })
    }
}

fn scalar(model: &mut TypedModel, name: String, value: f32) -> TractResult<OutletId> {
    model.add_const(name, tensor2(&[[value]]).into_arc_tensor())
}

fn bin(model: &mut TypedModel, name: String, op: TypedBinOp, a: OutletId, b: OutletId) -> TractResult<OutletId> {
    Ok(model.wire_node(name, op, &[a, b])?[0])
}

/// [N, K] x [K, M] -> [N, M]
fn matmul(model: &mut TypedModel, name: String, a: OutletId, b: Arc<Tensor>) -> TractResult<OutletId> {
    let b = model.add_const(format!("{name}.weights"), b)?;
    Ok(model.wire_node(
        name,
        EinSum::new(AxesMapping::for_numpy_matmul(2, false, false, false)?, f32::datum_type()),
        &[a, b],
    )?[0])
}

/// Parses an `SVMRegressor` node.
pub fn svm_regressor(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let one_class: i64 = node.get_attr_opt("one_class")?.unwrap_or(0);
    node.expect_attr("one_class", one_class == 0, "0 (one-class SVMs are not supported)")?;
    let post_transform: &str = node.get_attr_opt("post_transform")?.unwrap_or("NONE");
    node.expect_attr("post_transform", post_transform == "NONE", || {
        format!("NONE for SVMRegressor ({post_transform} is not supported)")
    })?;
    let coefficients: Vec<f32> = node.get_attr_vec("coefficients")?;
    let rho: Vec<f32> = node.get_attr_opt_vec("rho")?.unwrap_or_else(|| vec![0.0]);
    let supports: Vec<f32> = node.get_attr_opt_vec("support_vectors")?.unwrap_or_default();
    let n_supports = node.get_attr_opt::<i64>("n_supports")?.unwrap_or(0) as usize;
    node.expect(rho.len() == 1, "one rho (a single target)")?;
    let (supports, coefficients) = if n_supports == 0 {
        // A linear regressor: the coefficients are the weights, no support vectors.
        let features = coefficients.len();
        (tensor1(&coefficients).into_shape(&[1, features])?, tensor2(&[[1f32]]))
    } else {
        node.expect(coefficients.len() == n_supports, "one coefficient per support vector")?;
        node.expect(supports.len().is_multiple_of(n_supports), "support_vectors is n_supports x features")?;
        let features = supports.len() / n_supports;
        (tensor1(&supports).into_shape(&[n_supports, features])?, tensor1(&coefficients).into_shape(&[n_supports, 1])?)
    };
    let kernel = Kernel::parse(node, supports)?;
    node.expect(n_supports > 0 || kernel.kind == KernelKind::Linear, "no support vectors outside the LINEAR kernel")?;
    Ok((
        expand(SvmRegressor {
            kernel,
            coefficients: coefficients.into_arc_tensor(),
            rho: tensor2(&[[rho[0]]]).into_arc_tensor(),
        }),
        vec![],
    ))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SvmRegressor {
    kernel: Kernel,
    /// [supports, 1]
    coefficients: Arc<Tensor>,
    rho: Arc<Tensor>,
}

impl Expansion for SvmRegressor {
    fn name(&self) -> StaticName {
        "SVMRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        super::f32_rows(s, inputs, outputs, 1)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let k = self.kernel.wire(prefix, model, inputs[0])?;
        let weighted = matmul(model, format!("{prefix}.weighted"), k, self.coefficients.clone())?;
        let rho = model.add_const(format!("{prefix}.rho"), self.rho.clone())?;
        Ok(tvec!(bin(model, format!("{prefix}.rho_add"), tract_core::ops::math::add(), weighted, rho)?))
    }
}

/// Parses an `SVMClassifier` node (support vector mode, as libsvm and scikit-learn's SVC
/// export it).
pub fn svm_classifier(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = super::class_labels(node, "classlabels_ints", "classlabels_strings")?;
    let classes = labels.len();
    node.expect(classes >= 2, "at least two class labels")?;
    let post_transform: &str = node.get_attr_opt("post_transform")?.unwrap_or("NONE");
    node.expect_attr("post_transform", post_transform == "NONE", || {
        format!("NONE for SVMClassifier ({post_transform} is not supported)")
    })?;
    let per_class: Vec<i64> = node.get_attr_opt_vec("vectors_per_class")?.unwrap_or_default();
    node.expect_attr("vectors_per_class", per_class.len() == classes, || {
        format!("one count per class ({classes}); the linear mode without support vectors is not supported")
    })?;
    let per_class: Vec<usize> = per_class.into_iter().map(|n| n.max(0) as usize).collect();
    let n_supports: usize = per_class.iter().sum();
    node.expect_attr("vectors_per_class", n_supports > 0, "at least one support vector")?;
    let supports: Vec<f32> = node.get_attr_vec("support_vectors")?;
    node.expect_attr(
        "support_vectors",
        supports.len().is_multiple_of(n_supports),
        "support vectors x features values",
    )?;
    let features = supports.len() / n_supports;
    let coefficients: Vec<f32> = node.get_attr_vec("coefficients")?;
    node.expect_attr("coefficients", coefficients.len() == (classes - 1) * n_supports, || {
        format!("(classes - 1) x support vectors = {} values", (classes - 1) * n_supports)
    })?;
    let pairs = classes * (classes - 1) / 2;
    let rho: Vec<f32> = node.get_attr_vec("rho")?;
    node.expect_attr("rho", rho.len() == pairs, || format!("one value per pair of classes ({pairs})"))?;
    let prob_a: Vec<f32> = node.get_attr_opt_vec("prob_a")?.unwrap_or_default();
    let prob_b: Vec<f32> = node.get_attr_opt_vec("prob_b")?.unwrap_or_default();
    node.expect_attr("prob_a", prob_a.is_empty() || (prob_a.len() == pairs && prob_b.len() == pairs), || {
        format!("prob_a and prob_b both empty or one value per pair of classes ({pairs})")
    })?;
    // onnxruntime labels a binary model without probabilities whose coefficients are all
    // non-negative by a rule of its own (always the second class); not reproduced.
    let all_positive = coefficients.iter().all(|c| *c >= 0.0);
    node.expect_attr("coefficients", !(classes == 2 && prob_a.is_empty() && all_positive), || {
        "some negative coefficient in a binary model without probabilities".to_string()
    })?;

    // Pair (i, j), i < j, in libsvm's order: decision = sum over class i's vectors of
    // coefficients[j - 1] x K + sum over class j's vectors of coefficients[i] x K + rho.
    let starts: Vec<usize> = per_class.iter().scan(0, |at, n| Some(std::mem::replace(at, *at + n))).collect();
    let mut pair_weights = vec![0f32; n_supports * pairs];
    let mut votes_for_first = vec![0f32; pairs * classes];
    let mut votes_base = vec![0f32; classes];
    let mut pair = 0;
    for i in 0..classes {
        for j in i + 1..classes {
            for sv in starts[i]..starts[i] + per_class[i] {
                pair_weights[sv * pairs + pair] = coefficients[(j - 1) * n_supports + sv];
            }
            for sv in starts[j]..starts[j] + per_class[j] {
                pair_weights[sv * pairs + pair] = coefficients[i * n_supports + sv];
            }
            // votes = positive x (first - second) + (pairs each class is second in)
            votes_for_first[pair * classes + i] += 1.0;
            votes_for_first[pair * classes + j] -= 1.0;
            votes_base[j] += 1.0;
            pair += 1;
        }
    }
    let kernel = Kernel::parse(node, tensor1(&supports).into_shape(&[n_supports, features])?)?;
    Ok((
        expand(SvmClassifier {
            kernel,
            pair_weights: tensor1(&pair_weights).into_shape(&[n_supports, pairs])?.into_arc_tensor(),
            rho: super::row(&rho)?,
            votes_for_first: tensor1(&votes_for_first).into_shape(&[pairs, classes])?.into_arc_tensor(),
            votes_base: super::row(&votes_base)?,
            labels,
            coupling: (!prob_a.is_empty()).then(|| PairwiseCoupling {
                classes,
                prob_a: rctensor1(&prob_a),
                prob_b: rctensor1(&prob_b),
            }),
        }),
        vec![],
    ))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SvmClassifier {
    kernel: Kernel,
    /// [supports, pairs]
    pair_weights: Arc<Tensor>,
    /// [1, pairs]
    rho: Arc<Tensor>,
    /// [pairs, classes]: +1 for the pair's first class, -1 for its second
    votes_for_first: Arc<Tensor>,
    /// [1, classes]
    votes_base: Arc<Tensor>,
    labels: Arc<Tensor>,
    coupling: Option<PairwiseCoupling>,
}

impl SvmClassifier {
    fn classes(&self) -> usize {
        self.labels.len()
    }

    /// Columns of the scores output: class probabilities, [-d, d] for a binary model's one
    /// decision value, else one decision value per pair.
    fn score_columns(&self) -> usize {
        match (&self.coupling, self.classes()) {
            (Some(_), classes) | (None, classes @ 2) => classes,
            (None, classes) => classes * (classes - 1) / 2,
        }
    }
}

impl Expansion for SvmClassifier {
    fn name(&self) -> StaticName {
        "SVMClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        super::classifier_rules(s, inputs, outputs, self.labels.datum_type(), self.score_columns())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        use tract_core::ops::{logic, math};
        let k = self.kernel.wire(prefix, model, inputs[0])?;
        let weighted = matmul(model, format!("{prefix}.pairs"), k, self.pair_weights.clone())?;
        let rho = model.add_const(format!("{prefix}.rho"), self.rho.clone())?;
        let decisions = bin(model, format!("{prefix}.decisions"), math::add(), weighted, rho)?;
        // One-vs-one votes; the label is the first class with the most.
        let zero = scalar(model, format!("{prefix}.zero"), 0.0)?;
        let positive =
            super::mask(model, &format!("{prefix}.positive"), TypedBinOp(logic::comp_gt(), None), decisions, zero)?;
        let counted = matmul(model, format!("{prefix}.votes_for_first"), positive, self.votes_for_first.clone())?;
        let base = model.add_const(format!("{prefix}.votes_base"), self.votes_base.clone())?;
        let votes = bin(model, format!("{prefix}.votes"), math::add(), counted, base)?;
        let label = super::winning_label(model, prefix, votes, &self.labels)?;
        let scores = match (&self.coupling, self.classes()) {
            (Some(coupling), _) => {
                model.wire_node(format!("{prefix}.probabilities"), coupling.clone(), &[decisions])?[0]
            }
            (None, 2) => {
                let negated = model.wire_node(format!("{prefix}.negated"), math::neg(), &[decisions])?[0];
                model.wire_node(format!("{prefix}.binary_scores"), TypedConcat::new(1), &[negated, decisions])?[0]
            }
            (None, _) => decisions,
        };
        Ok(tvec!(label, scores))
    }
}

/// Class probabilities from one-vs-one decision values: Platt scaling of each pair
/// (`prob_a`, `prob_b`), then libsvm's pairwise coupling (`multiclass_probability`, the
/// iteration onnxruntime runs, in f32). [N, pairs] -> [N, classes].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct PairwiseCoupling {
    classes: usize,
    prob_a: Arc<Tensor>,
    prob_b: Arc<Tensor>,
}

impl PairwiseCoupling {
    fn row(&self, decisions: &[f32], a: &[f32], b: &[f32], out: &mut [f32]) {
        let k = self.classes;
        let mut r = vec![0f32; k * k];
        let mut pair = 0;
        for i in 0..k {
            for j in i + 1..k {
                let value = decisions[pair] * a[pair] + b[pair];
                // 1 - logistic(value), written as onnxruntime does to stay finite
                let p = if value >= 0.0 { (-value).exp() / (1.0 + (-value).exp()) } else { 1.0 / (1.0 + value.exp()) };
                let p = p.clamp(1e-7, 1.0 - 1e-7);
                r[i * k + j] = p;
                r[j * k + i] = 1.0 - p;
                pair += 1;
            }
        }
        multiclass_probability(k, &r, out);
    }
}

/// libsvm's `multiclass_probability` (Wu, Lin and Weng 2004, method 2).
fn multiclass_probability(k: usize, r: &[f32], p: &mut [f32]) {
    let max_iter = k.max(100);
    let eps = 0.005 / k as f32;
    let mut q = vec![0f32; k * k];
    let mut qp = vec![0f32; k];
    for t in 0..k {
        p[t] = 1.0 / k as f32;
        q[t * k + t] = 0.0;
        for j in 0..t {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = q[j * k + t];
        }
        for j in t + 1..k {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = -r[j * k + t] * r[t * k + j];
        }
    }
    for _ in 0..max_iter {
        let mut pqp = 0.0;
        for t in 0..k {
            qp[t] = (0..k).map(|j| q[t * k + j] * p[j]).sum();
            pqp += p[t] * qp[t];
        }
        let max_error = qp.iter().map(|v| (v - pqp).abs()).fold(0.0f32, f32::max);
        if max_error < eps {
            break;
        }
        for t in 0..k {
            let diff = (-qp[t] + pqp) / q[t * k + t];
            p[t] += diff;
            pqp = (pqp + diff * (diff * q[t * k + t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
}

impl Op for PairwiseCoupling {
    fn name(&self) -> StaticName {
        "SVMPairwiseCoupling".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PairwiseCoupling {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let decisions = args_1!(inputs);
        let decisions = decisions.to_plain_array_view::<f32>()?;
        let a = self.prob_a.try_as_plain_ram()?.as_slice::<f32>()?;
        let b = self.prob_b.try_as_plain_ram()?.as_slice::<f32>()?;
        let rows = decisions.shape()[0];
        let mut out = vec![0f32; rows * self.classes];
        for (row, probabilities) in decisions.outer_iter().zip(out.chunks_mut(self.classes)) {
            let row: Vec<f32> = row.iter().copied().collect();
            self.row(&row, a, b, probabilities);
        }
        Ok(tvec!(tensor1(&out).into_shape(&[rows, self.classes])?.into_tvalue()))
    }
}

impl TypedOp for PairwiseCoupling {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact([inputs[0].shape[0].clone(), self.classes.to_dim()])))
    }

    as_op!();
}
