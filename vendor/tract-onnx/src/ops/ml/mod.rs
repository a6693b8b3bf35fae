mod category_mapper;
mod linear_classifier;
mod linear_regressor;
mod normalizer;
mod tree_ensemble_classifier;

use crate::model::OnnxOpRegister;

pub fn register_all_ops(reg: &mut OnnxOpRegister) {
    category_mapper::register_all_ops(reg);
    linear_classifier::register_all_ops(reg);
    linear_regressor::register_all_ops(reg);
    normalizer::register_all_ops(reg);
    tree_ensemble_classifier::register_all_ops(reg);
}

/// edgeinfer patch: the fallback label of a classifier's label lookup: zero, or "" for
/// string labels (String has no zero, so string-labelled classifiers failed to load).
pub(crate) fn no_label(
    datum_type: tract_hir::internal::DatumType,
) -> tract_hir::internal::TractResult<std::sync::Arc<tract_hir::internal::Tensor>> {
    use tract_hir::internal::*;
    if datum_type == DatumType::String {
        Ok(rctensor0(String::new()))
    } else {
        Ok(Tensor::zero_dt(datum_type, &[])?.into_arc_tensor())
    }
}
