//! `edgeinfer._native`: the Rust half of the Python package. It loads, verifies and runs
//! compiled models with `edgeinfer-runtime` (the same code `edgeinfer serve` and
//! `edgeinfer batch` run, so the same bits) and compiles ONNX models. Tensors cross as
//! `(name, datatype, shape, bytes)` tuples in the Open Inference Protocol's binary layout; the
//! pure-Python package (`python/edgeinfer/`) turns them into numpy arrays, pandas and Arrow.
//! The GIL is released while a model loads, compiles or runs. By default a model's calls reuse
//! warm sandboxes (one per thread calling at once; fresh fuel and deadline per call; the
//! server's per-request fresh instance is `reuse_instances=False`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgeinfer_oip::{Datatype, Tensor};
use edgeinfer_runtime::{
    CompileRequest, Error, InferOutcome, LimitOverrides, Limits, LoadedModel, ModelRepository, ModelSession, Runtime,
    RuntimeConfig,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes};

/// mimalloc, as in the `edgeinfer` binary: a call allocates many small, short-lived buffers
/// (the extension's own Rust allocations only; Python keeps its allocator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

create_exception!(_native, EdgeInferError, PyException, "Base class of every edgeinfer error.");
create_exception!(_native, InvalidInput, EdgeInferError, "A request the model cannot take (name, type, shape).");
create_exception!(_native, LimitExceeded, EdgeInferError, "A call ran out of fuel, time or memory.");
create_exception!(_native, IntegrityError, EdgeInferError, "A component or signature does not match its manifest.");
create_exception!(
    _native,
    CompileError,
    EdgeInferError,
    "An ONNX model could not be compiled or its manifest is invalid."
);
create_exception!(_native, ModelNotFound, EdgeInferError, "No such model or version in the repository.");
create_exception!(_native, ModelError, EdgeInferError, "The model failed while running (a trap or its own error).");

/// The process's runtime: one wasmtime engine, code cache and epoch ticker shared by every
/// model, made on first use, with the id of the process that made it.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

fn runtime() -> Result<Arc<Runtime>, Error> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = std::process::id();
    match slot.take() {
        Some((made_by, runtime)) if made_by == pid => {
            *slot = Some((made_by, runtime.clone()));
            return Ok(runtime);
        }
        // Inherited through fork(): its epoch ticker thread did not come along, so deadlines
        // would never fire. Never dropped either (dropping joins a thread this process does
        // not have): the child makes its own.
        Some(inherited) => std::mem::forget(inherited),
        None => {}
    }
    let runtime = Runtime::new(RuntimeConfig::default())?;
    *slot = Some((pid, runtime.clone()));
    Ok(runtime)
}

/// The Python exception for a runtime error, carrying the host's message.
fn to_py(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::InvalidInput { .. } | Error::Protocol(_) => InvalidInput::new_err(message),
        Error::FuelExhausted { .. }
        | Error::DeadlineExceeded { .. }
        | Error::MemoryLimit { .. }
        | Error::OutputLimit(_) => LimitExceeded::new_err(message),
        Error::IntegrityMismatch { .. } | Error::Signature { .. } | Error::UntrustedCache { .. } => {
            IntegrityError::new_err(message)
        }
        Error::Compile(_) | Error::Manifest { .. } | Error::SmokeTest { .. } => CompileError::new_err(message),
        Error::NotFound(_) | Error::Refused { .. } => ModelNotFound::new_err(message),
        Error::GuestTrap(_) | Error::Model(_) => ModelError::new_err(message),
        _ => EdgeInferError::new_err(message),
    }
}

/// A tensor as it crosses into Python: name, datatype, shape, little-endian bytes.
type PyTensor = (String, String, Vec<u64>, Py<PyByteArray>);
/// A tensor signature: name, datatype, shape (-1 where dynamic).
type Signature = (String, String, Vec<i64>);

/// A loaded, verified model (its sha256 checked against the manifest before compiling).
#[pyclass(frozen, module = "edgeinfer._native")]
struct NativeModel {
    model: Arc<LoadedModel>,
    /// Warm sandboxes for reuse (`None`: a fresh sandbox per call, as the server runs): at
    /// most one per thread calling at once, each call with its own fuel and deadline; one that
    /// trapped is dropped.
    idle: Option<Mutex<Vec<ModelSession>>>,
}

impl NativeModel {
    fn new(model: LoadedModel, reuse_instances: bool) -> NativeModel {
        NativeModel { model: Arc::new(model), idle: reuse_instances.then(Mutex::default) }
    }

    /// Runs one call: on an idle warm sandbox (or a new one) when reusing them, else fresh.
    fn run(&self, inputs: Vec<Tensor>, outputs: &[String], overrides: LimitOverrides) -> Result<InferOutcome, Error> {
        let Some(idle) = &self.idle else {
            return self.model.infer(inputs, outputs, overrides);
        };
        let lock = || idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let taken = lock().pop();
        let mut session = match taken {
            Some(session) => session,
            None => self.model.session(LimitOverrides::default())?,
        };
        let outcome = session.infer_with(inputs, outputs, overrides);
        if !session.is_poisoned() {
            lock().push(session);
        }
        outcome
    }
}

#[pymethods]
impl NativeModel {
    /// Loads the version directory `dir` (holding `manifest.toml` and the component).
    #[staticmethod]
    #[pyo3(signature = (dir, reuse_instances=true))]
    fn load(py: Python<'_>, dir: PathBuf, reuse_instances: bool) -> PyResult<NativeModel> {
        let model = py.detach(|| runtime().and_then(|runtime| LoadedModel::load(&runtime, &dir))).map_err(to_py)?;
        Ok(NativeModel::new(model, reuse_instances))
    }

    /// Loads `version` (the newest when `None`) of `name` from the repository at `repo`.
    #[staticmethod]
    #[pyo3(signature = (repo, name, version=None, reuse_instances=true))]
    fn from_repository(
        py: Python<'_>,
        repo: PathBuf,
        name: String,
        version: Option<u64>,
        reuse_instances: bool,
    ) -> PyResult<NativeModel> {
        let model = py
            .detach(|| {
                let runtime = runtime()?;
                ModelRepository::open(&repo)?.load(&runtime, &name, version)
            })
            .map_err(to_py)?;
        Ok(NativeModel::new(model, reuse_instances))
    }

    /// Whether calls reuse warm sandboxes.
    #[getter]
    fn reuse_instances(&self) -> bool {
        self.idle.is_some()
    }

    /// The model's name.
    #[getter]
    fn name(&self) -> String {
        self.model.manifest().name.clone()
    }

    /// The model's version.
    #[getter]
    fn version(&self) -> u64 {
        self.model.manifest().version
    }

    /// The version directory it was loaded from.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.model.dir().to_path_buf()
    }

    /// The component's sha256 (hex), as its manifest records and loading verified.
    #[getter]
    fn sha256(&self) -> String {
        self.model.manifest().component.sha256.clone()
    }

    /// Input signatures in the model's order.
    #[getter]
    fn inputs(&self) -> Vec<Signature> {
        signatures(&self.model.manifest().inputs)
    }

    /// Output signatures in the model's order.
    #[getter]
    fn outputs(&self) -> Vec<Signature> {
        signatures(&self.model.manifest().outputs)
    }

    /// The manifest's limits: `(fuel, timeout_ms, memory_mb)`.
    #[getter]
    fn limits(&self) -> (u64, u64, u64) {
        let limits = self.model.manifest().limits;
        (limits.fuel, limits.timeout_ms, limits.memory_mb)
    }

    /// Runs one call in a fresh sandbox. `inputs` are `(name, datatype, shape, bytes)`;
    /// `outputs` names the outputs wanted (all when empty); `fuel` and `timeout_ms` replace
    /// the manifest's limits for this call.
    #[pyo3(signature = (inputs, outputs=Vec::new(), fuel=None, timeout_ms=None))]
    fn infer(
        &self,
        py: Python<'_>,
        inputs: Vec<(String, String, Vec<u64>, Bound<'_, PyBytes>)>,
        outputs: Vec<String>,
        fuel: Option<u64>,
        timeout_ms: Option<u64>,
    ) -> PyResult<Vec<PyTensor>> {
        let tensors = to_tensors(inputs)?;
        let overrides = LimitOverrides { fuel, timeout_ms, memory_mb: None };
        let outcome = py.detach(|| self.run(tensors, &outputs, overrides)).map_err(to_py)?;
        Ok(outcome
            .outputs
            .into_iter()
            .map(|t| (t.name, t.datatype.as_str().to_owned(), t.shape, PyByteArray::new(py, &t.data).unbind()))
            .collect())
    }

    /// Runs the model `runs` times on `inputs` in one fresh sandbox, one node at a time, and
    /// returns each node's `(name, operator, seconds)` summed over the runs.
    #[pyo3(signature = (inputs, runs=10))]
    fn profile(
        &self,
        py: Python<'_>,
        inputs: Vec<(String, String, Vec<u64>, Bound<'_, PyBytes>)>,
        runs: u32,
    ) -> PyResult<Vec<(String, String, f64)>> {
        let tensors = to_tensors(inputs)?;
        let times = py.detach(|| self.model.profile(&tensors, runs, LimitOverrides::default())).map_err(to_py)?;
        Ok(times.into_iter().map(|t| (t.node, t.op, t.time.as_secs_f64())).collect())
    }
}

/// Request tensors from `(name, datatype, shape, bytes)` tuples.
fn to_tensors(inputs: Vec<(String, String, Vec<u64>, Bound<'_, PyBytes>)>) -> PyResult<Vec<Tensor>> {
    let mut tensors = Vec::with_capacity(inputs.len());
    for (name, datatype, shape, data) in inputs {
        let datatype: Datatype =
            datatype.parse().map_err(|e: String| InvalidInput::new_err(format!("input '{name}': {e}")))?;
        tensors.push(Tensor { name, datatype, shape, data: data.as_bytes().to_vec().into() });
    }
    Ok(tensors)
}

fn signatures(signatures: &[edgeinfer_runtime::manifest::TensorSignature]) -> Vec<Signature> {
    signatures.iter().map(|s| (s.name.clone(), s.datatype.as_str().to_owned(), s.shape.clone())).collect()
}

/// Compiles `onnx` into `<repo>/<name>/<version>/` (the next free version when `None`), as
/// `edgeinfer compile` does, and returns the version directory.
#[pyfunction]
#[pyo3(signature = (onnx, repo, name, version=None, fuel=None, timeout_ms=None, memory_mb=None))]
#[allow(clippy::too_many_arguments)]
fn compile(
    py: Python<'_>,
    onnx: PathBuf,
    repo: PathBuf,
    name: String,
    version: Option<u64>,
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
) -> PyResult<PathBuf> {
    py.detach(|| {
        let bytes = std::fs::read(&onnx).map_err(|e| Error::io(format!("reading {}", onnx.display()), e))?;
        let version = match version {
            Some(version) => version,
            None => next_version(&repo, &name)?,
        };
        let defaults = Limits::default();
        let request = CompileRequest {
            onnx: &bytes,
            source_file: onnx.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            name,
            version,
            repo,
            limits: Limits {
                fuel: fuel.unwrap_or(defaults.fuel),
                timeout_ms: timeout_ms.unwrap_or(defaults.timeout_ms),
                memory_mb: memory_mb.unwrap_or(defaults.memory_mb),
            },
            examples: Vec::new(),
            reference: None,
            text: None,
        };
        let runtime = runtime()?;
        let model = edgeinfer_runtime::compile_model(&runtime, &request, &|_: &str| {})?;
        Ok(model.dir().to_path_buf())
    })
    .map_err(to_py)
}

/// One past the highest version of `name` in `repo` (1 for a new model or repository).
fn next_version(repo: &std::path::Path, name: &str) -> Result<u64, Error> {
    if !repo.exists() {
        return Ok(1);
    }
    let versions = ModelRepository::open(repo)?.model_versions(name)?;
    Ok(versions.last().map_or(1, |v| v.version + 1))
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeModel>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add("EdgeInferError", py.get_type::<EdgeInferError>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("LimitExceeded", py.get_type::<LimitExceeded>())?;
    m.add("IntegrityError", py.get_type::<IntegrityError>())?;
    m.add("CompileError", py.get_type::<CompileError>())?;
    m.add("ModelNotFound", py.get_type::<ModelNotFound>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
