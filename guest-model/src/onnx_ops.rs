//! Standard ONNX operators re-registered where tract 0.23.9 fails on real exporters' output
//! (tests/zoo): each replaces tract-onnx's registration before a model is parsed.
//!
//! - `Flatten`: tract refuses any input with more than one symbolic dimension ("Can not
//!   compute a shape with square of symbols"), but Hugging Face encoders flatten their
//!   `attention_mask` ([batch, sequence] -> [batch * sequence, 1]) before a Gather. The
//!   product of symbols is an ordinary `TDim`; the reshape is one `AxisOp::Reshape`.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// Adds this module's operators to `register`, over tract-onnx's own.
pub fn register(register: &mut OnnxOpRegister) {
    register.insert("Flatten", flatten);
}

fn flatten(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let axis = node.get_attr_opt("axis")?.unwrap_or(1i64);
    Ok((expand(Flatten { axis }), vec![]))
}

/// ONNX `Flatten`: [d0 .. d(axis-1), d(axis) .. dn] -> [d0 * .. * d(axis-1), d(axis) * .. * dn].
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Flatten {
    axis: i64,
}

impl Flatten {
    fn output_shape(&self, shape: &[TDim]) -> TractResult<[TDim; 2]> {
        let rank = shape.len() as i64;
        let axis = if self.axis < 0 { self.axis + rank } else { self.axis };
        ensure!((0..=rank).contains(&axis), "Flatten: axis {} is out of range for rank {rank}", self.axis);
        let (outer, inner) = shape.split_at(axis as usize);
        Ok([outer.iter().cloned().product(), inner.iter().cloned().product()])
    }
}

impl Expansion for Flatten {
    fn name(&self) -> StaticName {
        "Flatten".into()
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
        s.given(&inputs[0].shape, move |s, shape| {
            let [outer, inner] = self.output_shape(&shape)?;
            s.equals(&outputs[0].shape, ShapeFactoid::from(vec![outer, inner]))
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let shape: TVec<TDim> = model.outlet_fact(inputs[0])?.shape.to_tvec();
        let [outer, inner] = self.output_shape(&shape)?;
        model.wire_node(prefix, AxisOp::Reshape(0, shape, tvec!(outer, inner)), &[inputs[0]])
    }
}
