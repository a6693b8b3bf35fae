//! The typed errors the host library returns to embedders.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller sent an input the model cannot take; `input` names it (empty: the whole request).
    #[error("{}", edgeinfer_oip::invalid_input_message(input, message))]
    InvalidInput {
        /// The input concerned.
        input: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The request body does not follow the Open Inference Protocol (message as the protocol
    /// codec words it, the same in every transport and in the component's own handler).
    #[error(transparent)]
    Protocol(#[from] edgeinfer_oip::ProtocolError),
    /// The request used up its fuel budget.
    #[error("fuel exhausted: the request used more than its budget of {budget} fuel")]
    FuelExhausted {
        /// The budget that ran out.
        budget: u64,
    },
    /// The request ran past its wall-clock deadline.
    #[error("deadline exceeded: the request ran longer than {timeout_ms} ms")]
    DeadlineExceeded {
        /// The deadline in milliseconds.
        timeout_ms: u64,
    },
    /// The guest asked for more memory than its cap.
    #[error("memory limit: the model needed more than {limit_mb} MiB of memory")]
    MemoryLimit {
        /// The cap in MiB.
        limit_mb: u64,
    },
    /// The guest returned more outputs (count or bytes) than the host accepts.
    #[error("output limit: {0}")]
    OutputLimit(String),
    /// The guest trapped (panic, stack overflow, unreachable...).
    #[error("guest trap: {0}")]
    GuestTrap(String),
    /// The model itself failed on valid input.
    #[error("{}", edgeinfer_oip::model_error_message(.0))]
    Model(String),
    /// A component's bytes do not match the digest its manifest records.
    #[error("integrity mismatch for {path}: manifest says sha256 {expected}, file has sha256 {actual}")]
    IntegrityMismatch {
        /// The file checked.
        path: PathBuf,
        /// The digest recorded in the manifest.
        expected: String,
        /// The digest of the bytes on disk.
        actual: String,
    },
    /// A version's signature is missing, wrong, or no longer matches its files.
    #[error("signature refused for {dir}: {message}")]
    Signature {
        /// The version directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A component imports a capability its manifest does not grant.
    #[error("capability refused: {0}")]
    CapabilityRefused(String),
    /// An ONNX model cannot be compiled (unsupported operators, malformed graph...).
    #[error("cannot compile model: {0}")]
    Compile(String),
    /// A manifest or model directory is malformed.
    #[error("invalid manifest {path}: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A version gave other outputs than its manifest's examples expect.
    #[error("smoke test failed for {dir}: example {example}: {message}")]
    SmokeTest {
        /// The version directory.
        dir: PathBuf,
        /// Which example (1-based).
        example: usize,
        /// What differed.
        message: String,
    },
    /// Every version of a model was refused; each reason names its version.
    #[error("no version of model '{model}' could be loaded: {}", reasons.iter().map(|(v, why)| format!("version {v}: {why}")).collect::<Vec<_>>().join("; "))]
    Refused {
        /// The model.
        model: String,
        /// Version and reason, for each refused version.
        reasons: Vec<(u64, String)>,
    },
    /// No such model or version.
    #[error("{0}")]
    NotFound(String),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The compiled-code cache directory cannot be trusted (wrong owner, writable by others).
    #[error("refusing the code cache {path}: {message}")]
    UntrustedCache {
        /// The directory or file refused.
        path: PathBuf,
        /// Why, and how to fix it.
        message: String,
    },
    /// The server's settings cannot work as given; the message says how to fix them.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The runtime failed in a way that is not the model's or the caller's fault.
    #[error("runtime error: {0}")]
    Runtime(String),
}

impl Error {
    /// True when the caller, not the model or host, is at fault (HTTP 400).
    pub fn is_caller_fault(&self) -> bool {
        matches!(self, Error::InvalidInput { .. } | Error::Protocol(_))
    }

    /// An I/O error, with what was being done (`reading models/digits/1/manifest.toml`).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// A host-side failure (wasmtime, threads), with its whole cause chain.
    pub fn runtime(error: impl std::fmt::Display) -> Self {
        Error::Runtime(format!("{error:#}"))
    }
}

/// The host library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
