//! The model this instance serves: parsed, optimized and planned once by `setup.load`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::ops::unimpl::UnimplementedOp;

use crate::convert;
use crate::edgeinfer::inference::types::{Error, InvalidInput, ModelMetadata, Tensor as WitTensor, TensorSpec};

/// The platform reported in model metadata, the same as `edgeinfer serve`'s.
pub use edgeinfer_oip::PLATFORM;

/// The answer when `setup.load` was never called (a raw runtime, not a compiled model).
pub const NO_MODEL: &str = "no model is loaded in this component";

thread_local! {
    // A component instance is single-threaded; the snapshot keeps this initialized.
    static MODEL: RefCell<Option<LoadedModel>> = const { RefCell::new(None) };
}

/// Makes `model` the one this instance serves.
pub fn install(model: LoadedModel) {
    MODEL.with(|slot| *slot.borrow_mut() = Some(model));
}

/// Runs `f` on the loaded model, or returns `None` when nothing was loaded.
pub fn with_model<R>(f: impl FnOnce(&LoadedModel) -> R) -> Option<R> {
    MODEL.with(|slot| slot.borrow().as_ref().map(f))
}

/// One input as the model declares it, with the facts needed to validate requests.
struct InputSlot {
    spec: TensorSpec,
    datum_type: DatumType,
}

/// A runnable model and its signature.
pub struct LoadedModel {
    /// Name, version and signature, as served by `metadata()`.
    pub metadata: ModelMetadata,
    inputs: Vec<InputSlot>,
    plan: Arc<TypedRunnableModel>,
}

impl LoadedModel {
    /// Parses and optimizes an ONNX model, naming any operator tract does not implement.
    pub fn parse(onnx: &[u8], name: String, version: String) -> Result<Self, String> {
        let mut parser = tract_onnx::onnx();
        crate::ml::register(&mut parser.op_register);
        crate::onnx_ops::register(&mut parser.op_register);
        let mut model =
            parser.model_for_read(&mut &onnx[..]).map_err(|e| format!("cannot parse the ONNX model: {e:#}"))?;
        let unsupported: BTreeSet<String> = model
            .nodes()
            .iter()
            .filter_map(|node| node.op_as::<UnimplementedOp>())
            .map(|op| op.name().trim_start_matches("Unimplemented(").trim_end_matches(')').to_string())
            .collect();
        if !unsupported.is_empty() {
            let ops: Vec<String> = unsupported.into_iter().collect();
            return Err(format!("unsupported ONNX operators: {}", ops.join(", ")));
        }
        crate::symbols::name_unset_dimensions(&mut model).map_err(err)?;
        let output_names = outlet_names(&model, model.output_outlets().map_err(err)?);
        let input_names = outlet_names(&model, model.input_outlets().map_err(err)?);
        let typed = model.into_typed().map_err(|e| format!("cannot analyse the model: {e:#}"))?;
        let inputs = input_names
            .iter()
            .enumerate()
            .map(|(ix, name)| {
                let fact = typed.input_fact(ix).map_err(err)?;
                let spec = tensor_spec(name, fact)?;
                Ok(InputSlot { spec, datum_type: fact.datum_type })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let outputs = output_names
            .iter()
            .enumerate()
            .map(|(ix, name)| tensor_spec(name, typed.output_fact(ix).map_err(err)?))
            .collect::<Result<Vec<_>, String>>()?;
        let plan = typed
            .into_optimized()
            .and_then(|optimized| optimized.into_runnable())
            .map_err(|e| format!("cannot optimize the model: {e:#}"))?;
        Ok(LoadedModel {
            metadata: ModelMetadata {
                name,
                version,
                platform: PLATFORM.to_string(),
                inputs: inputs.iter().map(|slot| slot.spec.clone()).collect(),
                outputs,
            },
            inputs,
            plan,
        })
    }

    /// Validates the request against the signature, runs the plan, returns the outputs asked for.
    pub fn infer(&self, request: Vec<WitTensor>, wanted: &[String]) -> Result<Vec<WitTensor>, Error> {
        for tensor in &request {
            if !self.inputs.iter().any(|slot| slot.spec.name == tensor.name) {
                let expected: Vec<&str> = self.inputs.iter().map(|s| s.spec.name.as_str()).collect();
                return Err(invalid(&tensor.name, format!("unknown input; the model takes {}", expected.join(", "))));
            }
        }
        for name in wanted {
            if !self.metadata.outputs.iter().any(|spec| &spec.name == name) {
                let known: Vec<&str> = self.metadata.outputs.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(name, format!("unknown output; the model has {}", known.join(", "))));
            }
        }
        let mut values = TVec::new();
        for slot in &self.inputs {
            let tensor = request
                .iter()
                .find(|t| t.name == slot.spec.name)
                .ok_or_else(|| invalid(&slot.spec.name, "missing input".to_string()))?;
            values.push(slot.check_and_convert(tensor)?.into_tvalue());
        }
        let results = self.plan.run(values).map_err(|e| Error::Model(format!("{e:#}")))?;
        self.metadata
            .outputs
            .iter()
            .zip(results.iter())
            .filter(|(spec, _)| wanted.is_empty() || wanted.contains(&spec.name))
            .map(|(spec, value)| convert::from_tract(spec.name.clone(), value).map_err(Error::Model))
            .collect()
    }
}

impl InputSlot {
    fn check_and_convert(&self, tensor: &WitTensor) -> Result<Tensor, Error> {
        let name = &self.spec.name;
        if convert::datum_type(tensor.datatype) != Some(self.datum_type) {
            return Err(invalid(
                name,
                format!(
                    "datatype {} does not match the model's {}",
                    convert::datatype_name(tensor.datatype),
                    convert::datatype_name(self.spec.datatype)
                ),
            ));
        }
        let shape_matches = tensor.shape.len() == self.spec.shape.len()
            && tensor.shape.iter().zip(&self.spec.shape).all(|(&got, &want)| want < 0 || got == want as u64);
        if !shape_matches {
            return Err(invalid(
                name,
                format!("shape {:?} does not match the model's {:?} (-1 is any size)", tensor.shape, self.spec.shape),
            ));
        }
        let shape: Vec<usize> = tensor
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| invalid(name, format!("dimension {d} is too large"))))
            .collect::<Result<_, _>>()?;
        if self.datum_type == DatumType::String {
            return convert::to_tract(self.datum_type, &shape, &tensor.data).map_err(|e| invalid(name, e));
        }
        let expected_len = shape
            .iter()
            .try_fold(self.datum_type.size_of(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| invalid(name, format!("shape {:?} is too large", tensor.shape)))?;
        if tensor.data.len() != expected_len {
            return Err(invalid(
                name,
                format!(
                    "data holds {} bytes but shape {:?} of {} needs {expected_len}",
                    tensor.data.len(),
                    tensor.shape,
                    convert::datatype_name(tensor.datatype)
                ),
            ));
        }
        convert::to_tract(self.datum_type, &shape, &tensor.data).map_err(|e| invalid(name, e))
    }
}

fn invalid(input: &str, message: String) -> Error {
    Error::InvalidInput(InvalidInput { input: input.to_string(), message })
}

fn err(e: TractError) -> String {
    format!("{e:#}")
}

/// The names the ONNX graph gives to these outlets.
fn outlet_names(model: &InferenceModel, outlets: &[OutletId]) -> Vec<String> {
    outlets
        .iter()
        .map(|&outlet| {
            model.outlet_label(outlet).map(str::to_string).unwrap_or_else(|| model.node(outlet.node).name.clone())
        })
        .collect()
}

/// The WIT signature of one tract fact: symbolic dimensions become -1.
fn tensor_spec(name: &str, fact: &TypedFact) -> Result<TensorSpec, String> {
    let datatype = convert::wit_datatype(fact.datum_type)
        .ok_or_else(|| format!("tensor {name} has type {:?}, which edgeinfer cannot serve", fact.datum_type))?;
    Ok(TensorSpec {
        name: name.to_string(),
        datatype,
        shape: fact.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect(),
    })
}
