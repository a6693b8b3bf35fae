//! How the runtime plans a model whose inputs leave dimensions unset (scikit-learn exports
//! do): every unset dimension becomes a symbol, the first one `N` (the batch). Shared with
//! `benches/inference.rs` (by `#[path]`) so native tract runs the very same symbolic plan.

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::{GenericFactoid, InferenceFact};

/// Gives every unset input dimension a symbol, as tract refuses sources without a
/// determined shape.
pub fn name_unset_dimensions(model: &mut InferenceModel) -> TractResult<()> {
    for ix in 0..model.input_outlets()?.len() {
        let fact: InferenceFact = model.input_fact(ix)?.clone();
        if fact.shape.is_open() {
            continue;
        }
        let mut shape = fact.shape.clone();
        for (dim_ix, dim) in fact.shape.dims().enumerate() {
            if matches!(dim, GenericFactoid::Any) {
                let symbol = if dim_ix == 0 { "N".to_string() } else { format!("D{ix}_{dim_ix}") };
                shape.set_dim(dim_ix, model.symbols.sym(&symbol).into());
            }
        }
        model.set_input_fact(ix, fact.with_shape(shape))?;
    }
    Ok(())
}
