//! `SVMRegressor`: y = sum over support vectors of coefficient x K(x, sv) + rho, the kernel
//! computed from one matrix product with the support vectors (LINEAR, POLY, RBF, SIGMOID).

use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core;

/// The kernel function of an SVM.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Kernel {
    Linear,
    Poly,
    Rbf,
    Sigmoid,
}

/// Parses an `SVMRegressor` node.
pub fn svm_regressor(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let kernel = match node.get_attr_opt::<&str>("kernel_type")?.unwrap_or("LINEAR") {
        "LINEAR" => Kernel::Linear,
        "POLY" => Kernel::Poly,
        "RBF" => Kernel::Rbf,
        "SIGMOID" => Kernel::Sigmoid,
        other => bail!("kernel_type {other} is not supported"),
    };
    let params: Vec<f32> = node.get_attr_opt_vec("kernel_params")?.unwrap_or_default();
    let (gamma, coef0, degree) = (
        params.first().copied().unwrap_or(0.0),
        params.get(1).copied().unwrap_or(0.0),
        params.get(2).copied().unwrap_or(3.0),
    );
    let one_class: i64 = node.get_attr_opt("one_class")?.unwrap_or(0);
    node.expect(one_class == 0, "one_class = 1 is not supported")?;
    let post_transform: &str = node.get_attr_opt("post_transform")?.unwrap_or("NONE");
    node.expect(post_transform == "NONE", "post_transform other than NONE is not supported")?;
    let coefficients: Vec<f32> = node.get_attr_vec("coefficients")?;
    let rho: Vec<f32> = node.get_attr_opt_vec("rho")?.unwrap_or_else(|| vec![0.0]);
    let supports: Vec<f32> = node.get_attr_opt_vec("support_vectors")?.unwrap_or_default();
    let n_supports = node.get_attr_opt::<i64>("n_supports")?.unwrap_or(0) as usize;
    node.expect(rho.len() == 1, "one rho (a single target)")?;
    let (supports, coefficients) = if n_supports == 0 {
        // A linear regressor: the coefficients are the weights, no support vectors.
        node.expect(kernel == Kernel::Linear, "no support vectors outside the LINEAR kernel")?;
        let features = coefficients.len();
        (tensor1(&coefficients).into_shape(&[1, features])?, tensor2(&[[1f32]]))
    } else {
        node.expect(coefficients.len() == n_supports, "one coefficient per support vector")?;
        node.expect(supports.len() % n_supports == 0, "support_vectors is n_supports x features")?;
        let features = supports.len() / n_supports;
        (tensor1(&supports).into_shape(&[n_supports, features])?, tensor1(&coefficients).into_shape(&[n_supports, 1])?)
    };
    Ok((
        expand(SvmRegressor {
            kernel,
            gamma: gamma.to_bits(),
            coef0: coef0.to_bits(),
            degree: degree as u32,
            supports: supports.into_arc_tensor(),
            coefficients: coefficients.into_arc_tensor(),
            rho: tensor2(&[[rho[0]]]).into_arc_tensor(),
        }),
        vec![],
    ))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SvmRegressor {
    kernel: Kernel,
    gamma: u32,
    coef0: u32,
    degree: u32,
    /// [supports, features]
    supports: Arc<Tensor>,
    /// [supports, 1]
    coefficients: Arc<Tensor>,
    rho: Arc<Tensor>,
}

fn scalar(model: &mut TypedModel, name: String, value: f32) -> TractResult<OutletId> {
    model.add_const(name, tensor2(&[[value]]).into_arc_tensor())
}

fn bin(model: &mut TypedModel, name: String, op: TypedBinOp, a: OutletId, b: OutletId) -> TractResult<OutletId> {
    Ok(model.wire_node(name, op, &[a, b])?[0])
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
        use tract_core::ops::math;
        let mut x = inputs[0];
        if model.outlet_fact(x)?.datum_type != f32::datum_type() {
            x = model.wire_node(format!("{prefix}.to_f32"), tract_core::ops::cast::cast(f32::datum_type()), &[x])?[0];
        }
        let gamma = f32::from_bits(self.gamma);
        let coef0 = f32::from_bits(self.coef0);
        let supports = model.add_const(format!("{prefix}.supports"), self.supports.clone())?;
        // [N, F] x [S, F]^T -> [N, S]
        let dot = model.wire_node(
            format!("{prefix}.dot"),
            EinSum::new(AxesMapping::for_numpy_matmul(2, false, true, false)?, f32::datum_type()),
            &[x, supports],
        )?[0];
        let k = match self.kernel {
            Kernel::Linear => dot,
            Kernel::Poly | Kernel::Sigmoid => {
                let g = scalar(model, format!("{prefix}.gamma"), gamma)?;
                let c = scalar(model, format!("{prefix}.coef0"), coef0)?;
                let scaled = bin(model, format!("{prefix}.scale"), math::mul(), dot, g)?;
                let shifted = bin(model, format!("{prefix}.shift"), math::add(), scaled, c)?;
                if self.kernel == Kernel::Sigmoid {
                    model.wire_node(format!("{prefix}.tanh"), math::tanh(), &[shifted])?[0]
                } else {
                    let mut power = shifted;
                    for step in 1..self.degree.max(1) {
                        power = bin(model, format!("{prefix}.pow{step}"), math::mul(), power, shifted)?;
                    }
                    power
                }
            }
            Kernel::Rbf => {
                // ||x - sv||^2 = |x|^2 - 2 x.sv + |sv|^2
                let sv = self.supports.to_plain_array_view::<f32>()?;
                let norms: Vec<f32> = sv.outer_iter().map(|row| row.iter().map(|v| v * v).sum()).collect();
                let sv_norms = model.add_const(
                    format!("{prefix}.sv_norms"),
                    tensor1(&norms).into_shape(&[1, norms.len()])?.into_arc_tensor(),
                )?;
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
        };
        let coefficients = model.add_const(format!("{prefix}.coefficients"), self.coefficients.clone())?;
        let weighted = model.wire_node(
            format!("{prefix}.weighted"),
            EinSum::new(AxesMapping::for_numpy_matmul(2, false, false, false)?, f32::datum_type()),
            &[k, coefficients],
        )?[0];
        let rho = model.add_const(format!("{prefix}.rho"), self.rho.clone())?;
        Ok(tvec!(bin(model, format!("{prefix}.rho_add"), math::add(), weighted, rho)?))
    }
}
