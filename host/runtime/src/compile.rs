//! `edgeinfer compile`: joins the embedded runtime component with an ONNX model.
//!
//! The runtime is instantiated, `setup.load` parses and optimizes the model inside the
//! sandbox, and Wizer snapshots the instance: the written component starts with the
//! model ready. No Rust toolchain is involved.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use edgeinfer_oip::Tensor;
use sha2::Digest;
use wasmtime::Store;
use wasmtime::component::{Instance, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use crate::bindings::ModelComponent;
use crate::capabilities::Capability;
use crate::digest::sha256_hex;
use crate::limits::{LimitOverrides, Limits};
use crate::manifest::{ComponentInfo, Example, ExampleTensor, MANIFEST_FORMAT, Manifest, SourceInfo, TensorSignature};
use crate::model::LoadedModel;
use crate::reference::SampleSource;
use crate::runtime::Runtime;
use crate::store::StoreState;
use crate::{Error, Result};

/// The generic model runtime component, built from `guest-model/` by the build script.
pub const RUNTIME_COMPONENT: &[u8] = include_bytes!(env!("EDGEINFER_RUNTIME_WASM"));

/// The sha256 of [`RUNTIME_COMPONENT`] (hex), computed when it was built.
pub const RUNTIME_SHA256: &str = env!("EDGEINFER_RUNTIME_SHA256");

/// The file name of a version's component.
pub const COMPONENT_FILE: &str = "model.wasm";

/// What to compile and where to put it.
#[derive(Debug, Clone)]
pub struct CompileRequest<'a> {
    /// The ONNX model bytes.
    pub onnx: &'a [u8],
    /// The ONNX file name, recorded in the manifest.
    pub source_file: String,
    /// Model name (a directory name in the repository).
    pub name: String,
    /// Model version.
    pub version: u64,
    /// The model repository root.
    pub repo: PathBuf,
    /// Default per-request limits written to the manifest.
    pub limits: Limits,
    /// Example inputs: each is run once and its outputs recorded in the manifest as the
    /// smoke test every later load must pass.
    pub examples: Vec<Vec<Tensor>>,
    /// A sample of typical inputs whose per-feature distributions are stored beside the
    /// manifest as the drift reference (`edgeinfer_monitor::samples::SampleFile` reads CSV or
    /// NDJSON files).
    pub reference: Option<Arc<dyn SampleSource>>,
    /// A tokenizer to put in front of a text model, so clients send strings.
    pub text: Option<TextInput>,
}

/// A Hugging Face tokenizer compiled into the component (`edgeinfer compile --tokenizer`):
/// the served input becomes one BYTES tensor `text`, tokenized inside the sandbox.
#[derive(Debug, Clone)]
pub struct TextInput {
    /// The bytes of the tokenizer's `tokenizer.json`.
    pub tokenizer_json: Vec<u8>,
    /// Class names of the scores output, in column order: adds a BYTES output `label`
    /// naming each row's best class. Empty for none.
    pub labels: Vec<String>,
}

/// The runtime's compile-time export that attaches a tokenizer (`text-setup` in wit/).
const TEXT_SETUP_INTERFACE: &str = "edgeinfer:inference/text-setup@0.1.0";

/// Reports compile steps that take a while (instrumenting, compiling, snapshotting).
pub trait Progress {
    /// A step begins.
    fn step(&self, message: &str);
}

impl<F: Fn(&str)> Progress for F {
    fn step(&self, message: &str) {
        self(message)
    }
}

/// Compiles an ONNX model into `<repo>/<name>/<version>/` and loads it once as a check.
///
/// The version directory appears complete or not at all (it is written beside and renamed).
pub fn compile_model(
    runtime: &Arc<Runtime>,
    request: &CompileRequest<'_>,
    progress: &dyn Progress,
) -> Result<LoadedModel> {
    validate_name(&request.name)?;
    let model_dir = request.repo.join(&request.name);
    let version_dir = version_dir(&request.repo, &request.name, request.version);
    if version_dir.exists() {
        return Err(Error::Compile(format!("{} already exists; pick another --version", version_dir.display())));
    }
    std::fs::create_dir_all(&model_dir).map_err(|e| Error::io(format!("creating {}", model_dir.display()), e))?;

    progress.step("preparing the runtime (compiled once, then cached)");
    let wizer = Wizer::new();
    let (context, instrumented) =
        wizer.instrument_component(RUNTIME_COMPONENT).map_err(|e| Error::runtime(format!("{e:#}")))?;
    let runtime_pre = runtime.prepare(&instrumented, &sha256_hex(&instrumented))?;

    progress.step("parsing and optimizing the model inside the sandbox");
    // Randomness (hash seeds) derives from the model, so the same ONNX gives the same bytes.
    let seed = sha2::Sha256::digest(request.onnx);
    let memory_cap = runtime.config().max_memory_mb as usize * (1 << 20);
    let mut store = Store::new(runtime.engine(), StoreState::deterministic(memory_cap, &seed));
    store.limiter(|state| &mut state.limiter);
    // The snapshot reads each memory through one call returning it whole: allow a memory as
    // large as the cap (wasmtime's default of 128 MiB per call failed on ResNet18's memory).
    store.set_hostcall_fuel(memory_cap.max(store.hostcall_fuel()));
    if runtime.config().consume_fuel {
        store.set_fuel(u64::MAX).map_err(Error::runtime)?;
    }
    store.set_epoch_deadline(1 << 40); // no deadline: epochs only count up from here
    let instance = runtime_pre.instantiate(&mut store).map_err(Error::runtime)?;
    let bindings = ModelComponent::new(&mut store, &instance).map_err(Error::runtime)?;
    crate::cpu::clean_vector_state_for_guest();
    let metadata = bindings
        .edgeinfer_inference_setup()
        .call_load(&mut store, request.onnx, &request.name, &request.version.to_string())
        .map_err(|trap| Error::Compile(format!("the runtime trapped while loading the model: {trap:#}")))?
        .map_err(Error::Compile)?;
    let metadata = match &request.text {
        None => metadata,
        Some(text) => {
            progress.step("compiling the tokenizer in front of the model");
            attach_tokenizer(&mut store, &instance, text)?;
            bindings.edgeinfer_inference_model().call_metadata(&mut store).map_err(Error::runtime)?
        }
    };

    progress.step("snapshotting the initialized instance");
    let mut state = SyncInstanceState { store, instance, failure: None };
    // Wizer goes on after a failed read of the instance (it cannot see our failure) and may
    // then trip an assertion of its own: the first failure is the cause, a panic never escapes.
    let snapshot = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(wizer.snapshot_component(&context, &mut state))
    }));
    if let Some(failure) = state.failure {
        return Err(Error::Compile(format!("snapshotting the initialized model failed: {failure}")));
    }
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot.map_err(Error::runtime)?,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            return Err(Error::Compile(format!("snapshotting the initialized model failed (wizer: {message})")));
        }
    };

    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: request.name.clone(),
        version: request.version,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(Error::runtime)?,
        component: ComponentInfo {
            file: COMPONENT_FILE.into(),
            sha256: sha256_hex(&snapshot),
            runtime_sha256: RUNTIME_SHA256.to_string(),
        },
        source: SourceInfo { file: request.source_file.clone(), sha256: sha256_hex(request.onnx) },
        limits: request.limits,
        grants: Vec::<Capability>::new(),
        inputs: signatures(&metadata.inputs, &Default::default()),
        outputs: signatures(&metadata.outputs, &crate::class_labels::zipmap_labels(request.onnx)),
        examples: Vec::new(),
        reference: None,
    };
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&model_dir)
        .map_err(|e| Error::io(format!("creating a staging directory in {}", model_dir.display()), e))?;
    std::fs::write(staging.path().join(COMPONENT_FILE), &snapshot)
        .map_err(|e| Error::io("writing the component", e))?;

    if let Some(sample) = &request.reference {
        progress.step("recording the reference input distributions");
        crate::reference::attach_reference(staging.path(), &mut manifest, sample.as_ref())?;
    }
    progress.step("compiling the model component (shares the runtime's cached code)");
    let check = |manifest: &Manifest| {
        manifest.save(&staging.path().join("manifest.toml"))?;
        LoadedModel::load(runtime, staging.path())
            .map_err(|e| Error::Compile(format!("the compiled component failed its check: {e}")))
    };
    let mut loaded = check(&manifest)?;
    if !request.examples.is_empty() {
        progress.step("recording the smoke-test examples");
        let mut manifest = manifest;
        manifest.examples = record_examples(&loaded, &request.examples)?;
        loaded = check(&manifest)?;
    }
    std::fs::rename(staging.keep(), &version_dir)
        .map_err(|e| Error::io(format!("moving into {}", version_dir.display()), e))?;
    loaded.relocate(version_dir);
    Ok(loaded)
}

/// Runs each example input and pairs it with the outputs it gave.
fn record_examples(model: &LoadedModel, examples: &[Vec<Tensor>]) -> Result<Vec<Example>> {
    examples
        .iter()
        .enumerate()
        .map(|(index, inputs)| {
            let outcome = model
                .infer(inputs.clone(), &[], LimitOverrides::default())
                .map_err(|e| Error::Compile(format!("example {}: {e}", index + 1)))?;
            Ok(Example {
                inputs: inputs.iter().map(ExampleTensor::from).collect(),
                outputs: outcome.outputs.iter().map(ExampleTensor::from).collect(),
            })
        })
        .collect()
}

/// Model names become directory names and URL segments: keep them plain.
pub fn validate_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        Err(Error::Compile(format!(
            "model name {name:?} must be 1-128 characters of letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        )))
    }
}

fn signatures(
    specs: &[crate::bindings::TensorSpec],
    labels: &std::collections::HashMap<String, Vec<String>>,
) -> Vec<TensorSignature> {
    specs
        .iter()
        .map(|spec| TensorSignature {
            name: spec.name.clone(),
            datatype: spec.datatype.into(),
            shape: spec.shape.clone(),
            labels: labels.get(&spec.name).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Exposes a synchronous instance to Wizer's snapshot, which reads globals and memories
/// through exports its instrumentation added.
struct SyncInstanceState {
    store: Store<StoreState>,
    instance: Instance,
    failure: Option<String>,
}

impl SyncInstanceState {
    fn call<R: wasmtime::component::Lift + wasmtime::component::ComponentType + 'static>(
        &mut self,
        interface: &str,
        func: &str,
    ) -> Option<R> {
        let result = (|| -> wasmtime::Result<R> {
            let (_, interface_index) = self
                .instance
                .get_export(&mut self.store, None, interface)
                .ok_or_else(|| wasmtime::format_err!("no export {interface}"))?;
            let (_, func_index) = self
                .instance
                .get_export(&mut self.store, Some(&interface_index), func)
                .ok_or_else(|| wasmtime::format_err!("no export {interface}#{func}"))?;
            let typed = self.instance.get_typed_func::<(), (R,)>(&mut self.store, func_index)?;
            let (value,) = typed.call(&mut self.store, ())?;
            Ok(value)
        })();
        result.map_err(|e| self.failure.get_or_insert(format!("{interface}#{func}: {e:#}"))).ok()
    }
}

impl ComponentInstanceState for SyncInstanceState {
    fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) -> impl Future<Output = ()> + Send {
        if let Some(list) = self.call::<WasmList<u8>>(instance, func) {
            contents(list.as_le_slice(&self.store));
        }
        std::future::ready(())
    }

    fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> impl Future<Output = i32> + Send {
        std::future::ready(self.call::<i32>(instance, func).unwrap_or_default())
    }

    fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> impl Future<Output = i64> + Send {
        std::future::ready(self.call::<i64>(instance, func).unwrap_or_default())
    }

    fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> impl Future<Output = u32> + Send {
        std::future::ready(self.call::<f32>(instance, func).map(f32::to_bits).unwrap_or_default())
    }

    fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> impl Future<Output = u64> + Send {
        std::future::ready(self.call::<f64>(instance, func).map(f64::to_bits).unwrap_or_default())
    }
}

/// Drives a future whose every await is already ready (the snapshot over a sync store).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::yield_now();
    }
}

/// The version directory for a model in a repository.
pub fn version_dir(repo: &Path, name: &str, version: u64) -> PathBuf {
    repo.join(name).join(version.to_string())
}

/// Calls the runtime's `text-setup.attach-tokenizer` (not part of the serving world, so it
/// is looked up by name rather than through the serving bindings).
fn attach_tokenizer(store: &mut Store<StoreState>, instance: &Instance, text: &TextInput) -> Result<()> {
    let interface = instance
        .get_export_index(&mut *store, None, TEXT_SETUP_INTERFACE)
        .ok_or_else(|| Error::runtime(format!("the runtime does not export {TEXT_SETUP_INTERFACE}")))?;
    let function = instance
        .get_export_index(&mut *store, Some(&interface), "attach-tokenizer")
        .ok_or_else(|| Error::runtime(format!("{TEXT_SETUP_INTERFACE} has no attach-tokenizer")))?;
    let attach = instance
        .get_typed_func::<(&[u8], &[String]), (std::result::Result<(), String>,)>(&mut *store, &function)
        .map_err(Error::runtime)?;
    let (result,) = attach
        .call(&mut *store, (&text.tokenizer_json, &text.labels))
        .map_err(|trap| Error::Compile(format!("the runtime trapped while reading the tokenizer: {trap:#}")))?;
    result.map_err(Error::Compile)
}
