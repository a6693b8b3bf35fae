//! A loaded model version: verified, compiled, pre-instantiated; each request gets a fresh
//! instance and store under its own fuel, deadline and memory limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeinfer_oip::Tensor;
use wasmtime::component::{Component, ComponentExportIndex, Instance};
use wasmtime::{Store, Trap};

use crate::bindings::{
    GuestError, InferFunc, MODEL_INTERFACE, ModelComponentPre, PROFILING_INTERFACE, ProfileStartFunc, ProfileStepFunc,
    TensorView,
};
use crate::capabilities;
use crate::digest::{digests_equal, sha256_hex};
use crate::limits::{LimitOverrides, Limits};
use crate::manifest::Manifest;
use crate::runtime::Runtime;
use crate::store::StoreState;
use crate::{Error, Result};

/// The outputs of one inference and what it cost.
#[derive(Debug, Clone)]
pub struct InferOutcome {
    /// Output tensors, in the model's order.
    pub outputs: Vec<Tensor>,
    /// Fuel the request consumed.
    pub fuel_used: u64,
    /// Time to create the instance.
    pub instantiate_time: Duration,
    /// The request's inputs, handed back after the call (moved, never copied), so callers
    /// that keep them (the prediction log) need no copy of their own.
    pub inputs: Vec<Tensor>,
    /// The linear memory the instance had grown to when the call ended (all its memories):
    /// the high-water mark of what the request could touch.
    pub memory_bytes: u64,
}

/// One model version ready to serve.
pub struct LoadedModel {
    manifest: Manifest,
    dir: PathBuf,
    pre: ModelComponentPre<StoreState>,
    /// Where `infer` sits among the component's exports.
    infer_export: ComponentExportIndex,
    runtime: Arc<Runtime>,
    reference: Option<Arc<crate::reference::Reference>>,
    /// The largest linear memory a request reached at load (the examples, or a request of
    /// zeros without them).
    request_memory: Option<u64>,
    /// Whether its matrix products run on the host's native kernels.
    native_kernels: bool,
}

impl LoadedModel {
    /// Loads `<dir>/manifest.toml` and its component: digest first, then the import policy,
    /// then compilation (or the verified code cache), then a metadata call as a smoke test.
    pub fn load(runtime: &Arc<Runtime>, dir: &Path) -> Result<LoadedModel> {
        let VerifiedComponent { manifest, path, wasm, digest: actual } = VerifiedComponent::read(dir)?;
        let imports = capabilities::component_imports(&wasm)
            .map_err(|e| Error::CapabilityRefused(format!("{}: {e}", path.display())))?;
        capabilities::check_imports(imports.iter().map(String::as_str), &manifest.grants)
            .map_err(|e| Error::CapabilityRefused(format!("{}: {e}", path.display())))?;
        let instance_pre = runtime.prepare(&wasm, &actual)?;
        let infer_export = infer_export(instance_pre.component())?;
        let native_kernels = instance_pre
            .component()
            .component_type()
            .imports(runtime.engine())
            .any(|(name, _)| name == crate::kernels::COMPONENT_IMPORT);
        let pre = ModelComponentPre::new(instance_pre).map_err(|e| Error::Runtime(format!("{e:#}")))?;
        let reference = crate::reference::Reference::load(dir, &manifest)?.map(Arc::new);
        let mut model = LoadedModel {
            manifest,
            dir: dir.to_path_buf(),
            pre,
            infer_export,
            runtime: runtime.clone(),
            reference,
            request_memory: None,
            native_kernels,
        };
        model.check_metadata()?;
        model.request_memory = model.smoke_test()?.or_else(|| model.probe_memory());
        model.check_resident_budget();
        Ok(model)
    }

    /// Compiles the version in `dir` (its digest verified) into `runtime`'s cache without
    /// loading it: for a runtime of another target ([`crate::RuntimeConfig::target`]).
    pub fn precompile(runtime: &Runtime, dir: &Path) -> Result<()> {
        let component = VerifiedComponent::read(dir)?;
        runtime.precompile(&component.wasm, &component.digest)
    }

    /// Whether the model's matrix products run on the host's native kernels (see
    /// [`crate::kernels`]); otherwise on the wasm kernels its component carries.
    pub fn native_kernels(&self) -> bool {
        self.native_kernels
    }

    /// The linear memory a request reached at load: the largest over the manifest's examples
    /// (the smoke test) or, without examples, one request of zeros (`None` when the model
    /// takes non-numeric inputs or refuses zeros). Pool slots keep up to
    /// [`crate::RuntimeConfig::keep_resident_bytes`] of it resident between instances.
    pub fn request_memory_bytes(&self) -> Option<u64> {
        self.request_memory
    }

    /// Without examples: the linear memory one request of zeros reaches, when every input is
    /// numeric (dynamic dimensions taken as 1) and the request is not unreasonably large; a
    /// model that refuses zeros is simply not measured.
    fn probe_memory(&self) -> Option<u64> {
        const MAX_PROBE_BYTES: u64 = 64 << 20;
        let inputs = self
            .manifest
            .inputs
            .iter()
            .map(|input| {
                let shape: Vec<u64> = input.shape.iter().map(|&d| u64::try_from(d).unwrap_or(1)).collect();
                let bytes = edgeinfer_oip::element_count(&shape)?.checked_mul(input.datatype.element_size()? as u64)?;
                (bytes <= MAX_PROBE_BYTES).then(|| Tensor {
                    name: input.name.clone(),
                    datatype: input.datatype,
                    shape,
                    data: vec![0; bytes as usize].into(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        self.infer(inputs, &[], LimitOverrides::default()).ok().map(|outcome| outcome.memory_bytes)
    }

    /// Says so when a request reaches past the memory pool slots keep resident: each such
    /// request faults the rest of its pages in afresh.
    fn check_resident_budget(&self) {
        let config = self.runtime.config();
        let Some(memory) = self.request_memory else { return };
        if config.keeps_pages_resident() && memory > config.keep_resident_bytes as u64 {
            tracing::info!(
                model = %self.manifest.name,
                version = self.manifest.version,
                "a request reaches {} MiB of linear memory; pool slots keep the first {} MiB resident, so each \
                 request faults the rest in (raise --keep-resident-mb to keep it)",
                memory.div_ceil(1 << 20),
                config.keep_resident_bytes >> 20,
            );
        }
    }

    /// The drift reference recorded beside the manifest (digest checked at load), if any.
    pub fn reference(&self) -> Option<&Arc<crate::reference::Reference>> {
        self.reference.as_ref()
    }

    /// The manifest this version was loaded from.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub(crate) fn relocate(&mut self, dir: PathBuf) {
        self.dir = dir;
    }

    /// The runtime the model was loaded into.
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The version directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs one inference in a fresh instance under the manifest's limits with `overrides`.
    pub fn infer(&self, inputs: Vec<Tensor>, outputs: &[String], overrides: LimitOverrides) -> Result<InferOutcome> {
        let limits = self.manifest.limits.with(overrides);
        let (mut store, started) = self.new_store(limits)?;
        let instance = self.pre.instance_pre().instantiate(&mut store).map_err(|e| classify(e, &store, limits))?;
        let instantiate_time = started.elapsed();
        let (result, _) = call_infer(&mut store, &instance, &self.infer_export, inputs, outputs, limits);
        result.map(|outcome| InferOutcome { instantiate_time, ..outcome })
    }

    /// Runs the model `runs` times on `inputs` in one fresh instance, one node at a time, and
    /// times each node with the host's clock (the sandbox has none): the per-operator profile.
    /// The manifest's limits apply to the whole call, with `overrides`.
    pub fn profile(&self, inputs: &[Tensor], runs: u32, overrides: LimitOverrides) -> Result<Vec<NodeTime>> {
        let limits = self.manifest.limits.with(overrides);
        let (mut store, _) = self.new_store(limits)?;
        let instance = self.pre.instance_pre().instantiate(&mut store).map_err(|e| classify(e, &store, limits))?;
        let missing = || Error::Runtime(format!("this component does not export {PROFILING_INTERFACE}"));
        let interface = instance.get_export_index(&mut store, None, PROFILING_INTERFACE).ok_or_else(missing)?;
        let mut export = |name: &str| instance.get_export_index(&mut store, Some(&interface), name).ok_or_else(missing);
        let (start, step) = (export("start")?, export("step")?);
        let start: ProfileStartFunc = instance.get_typed_func(&mut store, start).map_err(Error::runtime)?;
        let step: ProfileStepFunc = instance.get_typed_func(&mut store, step).map_err(Error::runtime)?;
        let views: Vec<TensorView> = inputs.iter().map(TensorView::from).collect();
        let mut times: Vec<NodeTime> = Vec::new();
        for _ in 0..runs.max(1) {
            crate::cpu::clean_vector_state_for_guest();
            let (nodes,) = start.call(&mut store, (&views,)).map_err(|e| classify(e, &store, limits))?;
            let nodes = nodes.map_err(guest_error)?;
            if times.is_empty() {
                times = nodes.into_iter().map(|n| NodeTime { node: n.name, op: n.op, time: Duration::ZERO }).collect();
            }
            for node in &mut times {
                let started = Instant::now();
                let (stepped,) = step.call(&mut store, ()).map_err(|e| classify(e, &store, limits))?;
                node.time += started.elapsed();
                if !stepped.map_err(guest_error)? {
                    break;
                }
            }
        }
        Ok(times)
    }

    /// A warm instance for callers that trade per-request isolation for speed: one store and
    /// instance reused across calls, each call with a fresh fuel budget and deadline.
    pub fn session(&self, overrides: LimitOverrides) -> Result<ModelSession> {
        let limits = self.manifest.limits.with(overrides);
        let (mut store, _) = self.new_store(limits)?;
        let instance = self.pre.instance_pre().instantiate(&mut store).map_err(|e| classify(e, &store, limits))?;
        Ok(ModelSession {
            store,
            instance,
            infer_export: self.infer_export,
            base: self.manifest.limits,
            limits,
            poisoned: false,
        })
    }

    /// Instantiates the model and reads its metadata, checking it against the manifest.
    fn check_metadata(&self) -> Result<()> {
        let limits = self.manifest.limits;
        let (mut store, _) = self.new_store(limits)?;
        let instance = self.pre.instantiate(&mut store).map_err(|e| classify(e, &store, limits))?;
        crate::cpu::clean_vector_state_for_guest();
        let metadata =
            instance.edgeinfer_inference_model().call_metadata(&mut store).map_err(|e| classify(e, &store, limits))?;
        let names = |specs: &[crate::bindings::TensorSpec]| specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let declared =
            |sigs: &[crate::manifest::TensorSignature]| sigs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        if names(&metadata.inputs) != declared(&self.manifest.inputs)
            || names(&metadata.outputs) != declared(&self.manifest.outputs)
        {
            return Err(Error::Manifest {
                path: self.dir.join("manifest.toml"),
                message: "the component's signature differs from the manifest's".into(),
            });
        }
        Ok(())
    }

    /// Runs the manifest's examples and compares the outputs with the recorded ones; returns
    /// the largest linear memory one of them reached.
    fn smoke_test(&self) -> Result<Option<u64>> {
        let mut memory = None;
        for (index, example) in self.manifest.examples.iter().enumerate() {
            let failed = |why: String| Error::SmokeTest { dir: self.dir.clone(), example: index + 1, message: why };
            let to_tensors = |tensors: &[crate::manifest::ExampleTensor]| {
                tensors.iter().map(|t| t.to_tensor()).collect::<std::result::Result<Vec<_>, _>>()
            };
            let inputs = to_tensors(&example.inputs).map_err(failed)?;
            let expected = to_tensors(&example.outputs).map_err(failed)?;
            let outcome = self.infer(inputs, &[], LimitOverrides::default()).map_err(|e| failed(e.to_string()))?;
            crate::compare::outputs_agree(&outcome.outputs, &expected).map_err(failed)?;
            memory = memory.max(Some(outcome.memory_bytes));
        }
        Ok(memory)
    }

    fn new_store(&self, limits: Limits) -> Result<(Store<StoreState>, Instant)> {
        let started = Instant::now();
        let mut store = Store::new(self.runtime.engine(), StoreState::new(limits.memory_bytes()));
        store.limiter(|state| &mut state.limiter);
        if self.runtime.config().consume_fuel {
            store.set_fuel(limits.fuel).map_err(Error::runtime)?;
        }
        store.set_epoch_deadline(Runtime::deadline_ticks(limits.timeout_ms));
        store.data_mut().deadline = started.checked_add(std::time::Duration::from_millis(limits.timeout_ms));
        store.epoch_deadline_trap();
        // What the host copies out of one call (outputs, error messages) is bounded like the
        // guest's memory: a well-behaved model's outputs all live in its memory at once, so
        // more means aliased lists asking the host to allocate count x size.
        store.set_hostcall_fuel(limits.memory_bytes());
        Ok((store, started))
    }
}

/// The time one node of a model's plan took (see [`LoadedModel::profile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTime {
    /// The node's name in the optimized plan.
    pub node: String,
    /// Its operator, as tract names it (`Conv`, `OptMatMul`, `Add`...).
    pub op: String,
    /// Its time, summed over the runs (each a call into the sandbox, so it includes about a
    /// microsecond of call overhead).
    pub time: Duration,
}

/// A reusable instance of one model (see [`LoadedModel::session`]).
pub struct ModelSession {
    store: Store<StoreState>,
    instance: Instance,
    infer_export: ComponentExportIndex,
    /// The manifest's limits, which per-call overrides replace.
    base: Limits,
    limits: Limits,
    poisoned: bool,
}

impl ModelSession {
    /// Runs one inference on the warm instance. After a trap the session refuses further
    /// calls (a trapped instance cannot be entered again): open a new one.
    pub fn infer(&mut self, inputs: Vec<Tensor>, outputs: &[String]) -> Result<InferOutcome> {
        let limits = self.limits;
        self.infer_limited(inputs, outputs, limits)
    }

    /// The same with this call's fuel and deadline from the manifest's limits with
    /// `overrides` (the memory cap stays the session's).
    pub fn infer_with(
        &mut self,
        inputs: Vec<Tensor>,
        outputs: &[String],
        overrides: LimitOverrides,
    ) -> Result<InferOutcome> {
        let limits = Limits { memory_mb: self.limits.memory_mb, ..self.base.with(overrides) };
        self.infer_limited(inputs, outputs, limits)
    }

    /// Whether an earlier call trapped, so the session refuses further calls.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn infer_limited(&mut self, inputs: Vec<Tensor>, outputs: &[String], limits: Limits) -> Result<InferOutcome> {
        if self.poisoned {
            return Err(Error::Runtime("this session's instance trapped earlier; open a new session".into()));
        }
        if self.store.get_fuel().is_ok() {
            self.store.set_fuel(limits.fuel).map_err(Error::runtime)?;
        }
        self.store.set_epoch_deadline(Runtime::deadline_ticks(limits.timeout_ms));
        self.store.data_mut().deadline =
            Instant::now().checked_add(std::time::Duration::from_millis(limits.timeout_ms));
        let (result, trapped) =
            call_infer(&mut self.store, &self.instance, &self.infer_export, inputs, outputs, limits);
        self.poisoned = trapped;
        result
    }
}

/// Calls `infer` on an instance: the outputs and fuel used, or the typed error, and whether
/// the instance trapped.
fn call_infer(
    store: &mut Store<StoreState>,
    instance: &Instance,
    infer_export: &ComponentExportIndex,
    inputs: Vec<Tensor>,
    outputs: &[String],
    limits: Limits,
) -> (Result<InferOutcome>, bool) {
    let views: Vec<TensorView> = inputs.iter().map(TensorView::from).collect();
    let infer: InferFunc = match instance.get_typed_func(&mut *store, infer_export) {
        Ok(infer) => infer,
        Err(error) => return (Err(Error::Runtime(format!("{error:#}"))), false),
    };
    crate::cpu::clean_vector_state_for_guest();
    let result = infer.call(&mut *store, (&views, outputs)).map(|(result,)| result);
    drop(views);
    let fuel_used = store.get_fuel().map(|left| limits.fuel.saturating_sub(left)).unwrap_or(0);
    match result {
        Err(trap) => (Err(classify(trap, store, limits)), true),
        Ok(Err(error)) => (Err(guest_error(error)), false),
        Ok(Ok(tensors)) => {
            let outputs = tensors.into_iter().map(Into::into).collect();
            let memory_bytes = store.data().limiter.total as u64;
            (Ok(InferOutcome { outputs, fuel_used, instantiate_time: Duration::ZERO, inputs, memory_bytes }), false)
        }
    }
}

/// The typed error for an error the guest returned.
fn guest_error(error: GuestError) -> Error {
    match error {
        GuestError::InvalidInput(invalid) => Error::InvalidInput { input: invalid.input, message: invalid.message },
        GuestError::Model(message) => Error::Model(message),
    }
}

/// Where `infer` of the model interface sits among `component`'s exports.
fn infer_export(component: &Component) -> Result<ComponentExportIndex> {
    let missing = || Error::Runtime(format!("the component does not export {MODEL_INTERFACE}#infer"));
    let interface = component.get_export_index(None, MODEL_INTERFACE).ok_or_else(missing)?;
    component.get_export_index(Some(&interface), "infer").ok_or_else(missing)
}

/// How wasmtime reports lifted data beyond the store's hostcall fuel (its error type is
/// private, so the message is what identifies it).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// Turns a wasmtime error into the typed error that explains it.
fn classify(error: wasmtime::Error, store: &Store<StoreState>, limits: Limits) -> Error {
    if store.data().limiter.denied {
        return Error::MemoryLimit { limit_mb: limits.memory_mb };
    }
    if format!("{error:#}").contains(HOSTCALL_FUEL_EXHAUSTED) {
        return Error::OutputLimit(format!(
            "the model's outputs exceed {} bytes, its memory cap: the host copies no more than that",
            limits.memory_bytes()
        ));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Error::FuelExhausted { budget: limits.fuel },
        Some(Trap::Interrupt) => Error::DeadlineExceeded { timeout_ms: limits.timeout_ms },
        Some(trap) => {
            let stderr = store.data().stderr_text();
            if stderr.is_empty() {
                Error::GuestTrap(trap.to_string())
            } else {
                Error::GuestTrap(format!("{trap} ({stderr})"))
            }
        }
        None => Error::GuestTrap(format!("{error:#}")),
    }
}

/// A version's component read from disk, its sha256 checked against its manifest: what
/// loading starts from, and what `edgeinfer package` repackages for other hosts.
pub struct VerifiedComponent {
    manifest: Manifest,
    path: PathBuf,
    wasm: Vec<u8>,
    digest: String,
}

impl VerifiedComponent {
    /// Reads `<dir>/manifest.toml` and its component file; fails with
    /// [`Error::IntegrityMismatch`] when the file's sha256 is not the manifest's.
    pub fn read(dir: &Path) -> Result<VerifiedComponent> {
        let manifest = Manifest::load(&dir.join("manifest.toml"))?;
        let path = dir.join(&manifest.component.file);
        let wasm = std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let digest = sha256_hex(&wasm);
        if !digests_equal(&digest, &manifest.component.sha256) {
            return Err(Error::IntegrityMismatch { path, expected: manifest.component.sha256.clone(), actual: digest });
        }
        Ok(VerifiedComponent { manifest, path, wasm, digest })
    }

    /// The version's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The component's bytes (their digest checked).
    pub fn wasm(&self) -> &[u8] {
        &self.wasm
    }

    /// The component's lowercase hex sha256.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}
