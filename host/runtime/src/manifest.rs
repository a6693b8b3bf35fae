//! `manifest.toml`: what a compiled model version is, its digest, signature, limits and grants.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::capabilities::Capability;
use crate::limits::Limits;
use crate::{Error, Result};
use edgeinfer_oip::{Datatype, Tensor};

/// The manifest format this build reads and writes.
pub const MANIFEST_FORMAT: u32 = 1;

/// One model version's manifest (`<repo>/<model>/<version>/manifest.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version; read first, must be 1.
    pub format: u32,
    /// Model name, e.g. `digits`.
    pub name: String,
    /// Model version, e.g. `1`.
    pub version: u64,
    /// RFC 3339 creation time, e.g. `2026-11-25T16:00:00Z`.
    pub created_at: String,
    /// The component file and its digest.
    pub component: ComponentInfo,
    /// The ONNX file the component was compiled from.
    pub source: SourceInfo,
    /// Default per-request limits; request or CLI overrides take precedence.
    pub limits: Limits,
    /// Capabilities granted beyond the sandbox's minimum (none by default).
    #[serde(default)]
    pub grants: Vec<Capability>,
    /// The model's inputs.
    pub inputs: Vec<TensorSignature>,
    /// The model's outputs.
    pub outputs: Vec<TensorSignature>,
    /// Example requests with their expected outputs: the smoke test a version must pass
    /// before it takes traffic (recorded by `edgeinfer compile --example`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
    /// Reference input distributions for drift (`edgeinfer compile --reference`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceInfo>,
}

/// The reference distributions file of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceInfo {
    /// File name next to the manifest, e.g. `reference.json`.
    pub file: String,
    /// Lowercase hex SHA-256 of that file.
    pub sha256: String,
    /// Rows of the sample it was computed from.
    pub rows: u64,
}

/// One smoke-test case: inputs and the outputs they must give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// The request's inputs.
    pub inputs: Vec<ExampleTensor>,
    /// The expected outputs (floats compared with a small tolerance).
    pub outputs: Vec<ExampleTensor>,
}

/// A tensor written into a manifest: raw little-endian data as hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleTensor {
    /// Tensor name, e.g. `X`.
    pub name: String,
    /// Datatype, e.g. `FP32`.
    pub datatype: Datatype,
    /// Dimensions, e.g. `[1, 64]`.
    pub shape: Vec<u64>,
    /// Lowercase hex of the raw little-endian element data.
    pub data: String,
}

impl From<&Tensor> for ExampleTensor {
    fn from(tensor: &Tensor) -> Self {
        ExampleTensor {
            name: tensor.name.clone(),
            datatype: tensor.datatype,
            shape: tensor.shape.clone(),
            data: hex::encode(&tensor.data),
        }
    }
}

impl ExampleTensor {
    /// The tensor, or why its data is not valid hex.
    pub fn to_tensor(&self) -> std::result::Result<Tensor, String> {
        let data =
            hex::decode(&self.data).map_err(|e| format!("example tensor '{}': data is not hex: {e}", self.name))?;
        Ok(Tensor { name: self.name.clone(), datatype: self.datatype, shape: self.shape.clone(), data: data.into() })
    }
}

/// The component file of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentInfo {
    /// File name next to the manifest, e.g. `model.wasm`.
    pub file: String,
    /// Lowercase hex SHA-256 of that file.
    pub sha256: String,
    /// SHA-256 of the generic runtime the component was built from.
    pub runtime_sha256: String,
}

/// The model file a version was compiled from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// Original file name, e.g. `digits.onnx`.
    pub file: String,
    /// Lowercase hex SHA-256 of the ONNX bytes.
    pub sha256: String,
}

/// One input or output: name, datatype, and shape with -1 for dynamic dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSignature {
    /// Tensor name, e.g. `X`.
    pub name: String,
    /// Open Inference Protocol datatype, e.g. `FP32`.
    pub datatype: Datatype,
    /// Dimensions, -1 where dynamic, e.g. `[-1, 64]`.
    pub shape: Vec<i64>,
    /// A classifier's class labels in the order of this output's last axis, e.g. `["0", "1",
    /// "2"]`: set for the probability tensor a scikit-learn `ZipMap` output is served as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text).map_err(|message| Error::Manifest { path: path.to_path_buf(), message })
    }

    /// Parses manifest text: the format field first, then the matching schema.
    pub fn parse(text: &str) -> std::result::Result<Manifest, String> {
        #[derive(Deserialize)]
        struct FormatOnly {
            format: Option<toml::Value>,
        }
        let format: FormatOnly = toml::from_str(text).map_err(|e| e.to_string())?;
        match format.format {
            Some(toml::Value::Integer(n)) if n == i64::from(MANIFEST_FORMAT) => {}
            Some(other) => {
                return Err(format!(
                    "unsupported manifest format {other}; this edgeinfer reads format {MANIFEST_FORMAT}"
                ));
            }
            None => return Err("missing `format` (expected `format = 1`)".into()),
        }
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        if manifest.component.sha256.len() != 64 || !manifest.component.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("`component.sha256` must be 64 hex digits".into());
        }
        if manifest.component.file.contains(['/', '\\']) || manifest.component.file.starts_with('.') {
            return Err(format!("`component.file` must be a plain file name, got {:?}", manifest.component.file));
        }
        Ok(manifest)
    }

    /// Writes the manifest as TOML.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(Error::runtime)?;
        std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }
}
