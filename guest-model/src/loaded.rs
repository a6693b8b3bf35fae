//! The model this instance serves: parsed, optimized and planned once by `setup.load`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::ops::unimpl::UnimplementedOp;

use crate::convert;
use crate::edgeinfer::inference::types::{Error, InvalidInput, ModelMetadata, Tensor as WitTensor, TensorSpec};
use crate::text::TextFrontend;

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

/// Runs `f` on the loaded model, mutably (setup only), or returns `None` when nothing was loaded.
pub fn with_model_mut<R>(f: impl FnOnce(&mut LoadedModel) -> R) -> Option<R> {
    MODEL.with(|slot| slot.borrow_mut().as_mut().map(f))
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
    /// The network's own signature (the served one differs with a tokenizer in front).
    network: ModelMetadata,
    inputs: Vec<InputSlot>,
    plan: Arc<TypedRunnableModel>,
    text: Option<TextFrontend>,
}

impl LoadedModel {
    /// Parses and optimizes an ONNX model, naming any operator tract does not implement.
    pub fn parse(onnx: &[u8], name: String, version: String) -> Result<Self, String> {
        let mut parser = tract_onnx::onnx();
        crate::ml::register(&mut parser.op_register);
        crate::onnx_ops::register(&mut parser.op_register);
        let mut model =
            parser.model_for_read(&mut &onnx[..]).map_err(|e| format!("cannot parse the ONNX model: {e:#}"))?;
        let mut unsupported: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for node in model.nodes() {
            if let Some(op) = node.op_as::<UnimplementedOp>() {
                let operator = op.name().trim_start_matches("Unimplemented(").trim_end_matches(')').to_string();
                unsupported.entry(operator).or_default().push(node.name.clone());
            }
        }
        if !unsupported.is_empty() {
            return Err(unsupported_operators(&unsupported));
        }
        crate::symbols::name_unset_dimensions(&mut model).map_err(err)?;
        let output_names = outlet_names(&model, model.output_outlets().map_err(err)?);
        let input_names = outlet_names(&model, model.input_outlets().map_err(err)?);
        let typed =
            model.into_typed().map_err(|e| explain_dynamic_dimensions(format!("cannot analyse the model: {e:#}")))?;
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
        let metadata = ModelMetadata {
            name,
            version,
            platform: PLATFORM.to_string(),
            inputs: inputs.iter().map(|slot| slot.spec.clone()).collect(),
            outputs,
        };
        Ok(LoadedModel { network: metadata.clone(), metadata, inputs, plan, text: None })
    }

    /// Puts a tokenizer in front of the network: clients then send strings (see `text`).
    pub fn attach_tokenizer(&mut self, tokenizer_json: &[u8], labels: Vec<String>) -> Result<(), String> {
        let text = TextFrontend::new(tokenizer_json, labels, &self.network)?;
        self.metadata = text.served(&self.network);
        self.text = Some(text);
        Ok(())
    }

    /// Validates the request against the served signature, runs the model (after the
    /// tokenizer, if any), returns the outputs asked for.
    pub fn infer(&self, request: Vec<WitTensor>, wanted: &[String]) -> Result<Vec<WitTensor>, Error> {
        let Some(text) = &self.text else { return self.run_network(request, wanted) };
        if let Some(name) = wanted.iter().find(|name| !self.metadata.outputs.iter().any(|spec| &spec.name == *name)) {
            let known: Vec<&str> = self.metadata.outputs.iter().map(|s| s.name.as_str()).collect();
            return Err(invalid(name, format!("unknown output; the model has {}", known.join(", "))));
        }
        let mut outputs = self.run_network(text.encode(&request)?, &[])?;
        outputs.extend(text.label(&outputs)?);
        outputs.retain(|tensor| wanted.is_empty() || wanted.contains(&tensor.name));
        Ok(outputs)
    }

    /// Validates the request against the network's signature, runs the plan, returns the
    /// outputs asked for.
    fn run_network(&self, request: Vec<WitTensor>, wanted: &[String]) -> Result<Vec<WitTensor>, Error> {
        for tensor in &request {
            if !self.inputs.iter().any(|slot| slot.spec.name == tensor.name) {
                let expected: Vec<&str> = self.inputs.iter().map(|s| s.spec.name.as_str()).collect();
                return Err(invalid(&tensor.name, format!("unknown input; the model takes {}", expected.join(", "))));
            }
        }
        for name in wanted {
            if !self.network.outputs.iter().any(|spec| &spec.name == name) {
                let known: Vec<&str> = self.network.outputs.iter().map(|s| s.name.as_str()).collect();
                return Err(invalid(name, format!("unknown output; the model has {}", known.join(", "))));
            }
        }
        let values = self.input_values(&request)?;
        let results = self.plan.run(values).map_err(model_error)?;
        self.network
            .outputs
            .iter()
            .zip(results.iter())
            .filter(|(spec, _)| wanted.is_empty() || wanted.contains(&spec.name))
            .map(|(spec, value)| convert::from_tract(spec.name.clone(), value).map_err(Error::Model))
            .collect()
    }
}

impl LoadedModel {
    /// The network's inputs from `request`, checked and converted, in the network's order.
    fn input_values(&self, request: &[WitTensor]) -> Result<TVec<TValue>, Error> {
        let mut values = TVec::new();
        for slot in &self.inputs {
            let tensor = request
                .iter()
                .find(|t| t.name == slot.spec.name)
                .ok_or_else(|| invalid(&slot.spec.name, "missing input".to_string()))?;
            values.push(slot.check_and_convert(tensor)?.into_tvalue());
        }
        Ok(values)
    }
}

/// A tract failure while running the model, with its chain of causes.
fn model_error(e: TractError) -> Error {
    Error::Model(format!("{e:#}"))
}

/// A run of the model set up for profiling: its state, the nodes in evaluation order, the
/// values each step is the last to read (dropped before it runs, as tract's own run does, so
/// operators that work in place on a value nothing else holds do not copy it instead), and
/// how many steps have run.
struct ProfileRun {
    state: TypedSimpleState,
    order: Vec<usize>,
    last_reads: Vec<TVec<usize>>,
    next: usize,
}

thread_local! {
    static PROFILE: RefCell<Option<ProfileRun>> = const { RefCell::new(None) };
}

/// Sets up a node-by-node run of `model` on `request` (after the tokenizer, if any): the
/// (name, operator) of each node [`step_profile`] will evaluate, in order.
pub fn start_profile(model: &LoadedModel, request: Vec<WitTensor>) -> Result<Vec<(String, String)>, Error> {
    let request = match &model.text {
        Some(text) => text.encode(&request)?,
        None => request,
    };
    let values = model.input_values(&request)?;
    let mut state = model.plan.spawn().map_err(model_error)?;
    state.set_inputs(values).map_err(model_error)?;
    let nodes = model.plan.model().nodes();
    let order: Vec<usize> = model
        .plan
        .order_without_consts()
        .iter()
        .copied()
        .filter(|&id| !model.plan.model().input_outlets().is_ok_and(|inputs| inputs.iter().any(|o| o.node == id)))
        .collect();
    let names = order.iter().map(|&id| (nodes[id].name.clone(), nodes[id].op.name().to_string())).collect();
    let outputs = model.plan.model().output_outlets().map_err(model_error)?;
    let last_reads =
        tract_onnx::tract_core::model::order::build_flush_list(model.plan.model(), &order, outputs, |node| {
            !node.op_is::<tract_onnx::tract_core::ops::konst::Const>()
        });
    PROFILE.with(|slot| *slot.borrow_mut() = Some(ProfileRun { state, order, last_reads, next: 0 }));
    Ok(names)
}

/// Evaluates the next node of the profiled run; false once every node has run.
pub fn step_profile() -> Result<bool, Error> {
    PROFILE.with(|slot| {
        let mut slot = slot.borrow_mut();
        let run = slot.as_mut().ok_or_else(|| Error::Model("no profiled run was started".into()))?;
        let Some(&node) = run.order.get(run.next) else { return Ok(false) };
        let inputs = run.state.prepare_inputs(node).map_err(model_error)?;
        for &value in &run.last_reads[run.next] {
            run.state.turn_state.values[value] = None;
        }
        run.state.compute_one_with_inputs(node, inputs).map_err(model_error)?;
        run.next += 1;
        Ok(true)
    })
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

/// "unsupported ONNX operator Foo (node a)", or "unsupported ONNX operators: Foo (nodes a,
/// b), Bar (node c)": each operator with the nodes using it, the first three by name.
fn unsupported_operators(unsupported: &BTreeMap<String, Vec<String>>) -> String {
    let described: Vec<String> = unsupported
        .iter()
        .map(|(operator, nodes)| {
            let mut named: Vec<&str> = nodes.iter().take(3).map(String::as_str).collect();
            let more = nodes.len().saturating_sub(named.len());
            let extra = if more > 0 { format!(" and {more} more") } else { String::new() };
            let noun = if nodes.len() == 1 { "node" } else { "nodes" };
            named.iter_mut().for_each(|n| {
                if n.is_empty() {
                    *n = "(unnamed)"
                }
            });
            format!("{operator} ({noun} {}{extra})", named.join(", "))
        })
        .collect();
    match described.as_slice() {
        [one] => format!("unsupported ONNX operator {one}"),
        many => format!("unsupported ONNX operators: {}", many.join(", ")),
    }
}

/// Adds which dynamic dimensions are at fault to tract's "Impossible to unify Sym(c) with
/// Val(3)": the model declares them dynamic where a node needs a fixed size.
fn explain_dynamic_dimensions(message: String) -> String {
    let Some(at) = message.find("Impossible to unify ") else { return message };
    let clash = &message[at..];
    let symbols: BTreeSet<&str> = clash
        .match_indices("Sym(")
        .filter_map(|(i, _)| clash[i + 4..].split(')').next())
        .filter(|name| !name.is_empty())
        .collect();
    let needed = clash.rsplit_once("Val(").and_then(|(_, rest)| rest.split(')').next());
    match (symbols.is_empty(), needed) {
        (false, Some(size)) => {
            let names: Vec<String> = symbols.iter().map(|s| format!("`{s}`")).collect();
            let (noun, verb) = if names.len() == 1 { ("dimension", "is") } else { ("dimensions", "are") };
            format!(
                "{message} (the model's {noun} {} {verb} dynamic, but this node needs {size}: \
                 export the model with {} fixed)",
                names.join(", "),
                if names.len() == 1 { "it" } else { "them" }
            )
        }
        _ => message,
    }
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
