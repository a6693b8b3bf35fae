//! The OCI artifact a model version travels as, and its way back into a repository.
//!
//! One OCI image manifest (`artifactType` [`ARTIFACT_TYPE`]) whose config is
//! [`CONFIG_MEDIA_TYPE`] (name, version, component digest, inputs and outputs as JSON) and whose
//! layers are the version directory's files, each titled with its file name
//! (`org.opencontainers.image.title`, as ORAS does):
//!
//! | file | layer media type |
//! |---|---|
//! | `manifest.toml` | [`MANIFEST_MEDIA_TYPE`] |
//! | the component (`model.wasm`) | [`COMPONENT_MEDIA_TYPE`] |
//! | `signature.json`, when signed | [`SIGNATURE_MEDIA_TYPE`] |
//!
//! The manifest's annotations repeat the model name, version, inputs, outputs, component
//! and runtime digests, so `oras manifest fetch` or a registry UI shows what a tag holds without pulling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgeinfer_runtime::capabilities::{check_imports, component_imports};
use edgeinfer_runtime::manifest::Manifest;
use edgeinfer_runtime::model::VerifiedComponent;
use edgeinfer_runtime::signature::{SIGNATURE_FILE, SignaturePolicy};
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::OciImageManifest;

use crate::{Error, Result};

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.edgeinfer.model.v1";
/// The config blob: the version's identity as JSON.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.edgeinfer.model.config.v1+json";
/// The `manifest.toml` layer.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.edgeinfer.model.manifest.v1+toml";
/// The component layer (the media type wasm OCI artifacts use).
pub const COMPONENT_MEDIA_TYPE: &str = "application/wasm";
/// The signature layer: the DSSE envelope of `signature.json`.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";

/// Every layer media type an artifact may hold.
pub const LAYER_MEDIA_TYPES: [&str; 3] = [MANIFEST_MEDIA_TYPE, COMPONENT_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE];

/// Annotation: the model name.
pub const ANNOTATION_MODEL: &str = "dev.edgeinfer.model.name";
/// Annotation: the version number.
pub const ANNOTATION_VERSION: &str = "dev.edgeinfer.model.version";
/// Annotation: the inputs (JSON: name, datatype, shape).
pub const ANNOTATION_INPUTS: &str = "dev.edgeinfer.model.inputs";
/// Annotation: the outputs (JSON: name, datatype, shape).
pub const ANNOTATION_OUTPUTS: &str = "dev.edgeinfer.model.outputs";
/// Annotation: the component's sha256 (hex), as the version's manifest pins it.
pub const ANNOTATION_COMPONENT: &str = "dev.edgeinfer.component.sha256";
/// Annotation: the sha256 of the edgeinfer guest runtime the component was built from.
pub const ANNOTATION_RUNTIME: &str = "dev.edgeinfer.runtime.sha256";
const TITLE: &str = "org.opencontainers.image.title";

/// A version directory ready to push.
pub struct Artifact {
    /// The layers, in the order of the table above.
    pub layers: Vec<ImageLayer>,
    /// The config blob.
    pub config: Config,
    /// The OCI manifest (digests of the layers and config filled in).
    pub manifest: OciImageManifest,
    /// The version's own manifest.
    pub model: Manifest,
}

impl Artifact {
    /// Reads the version in `dir`, checking its component's sha256 (and its signature when
    /// present: a publisher never pushes a version that would be refused for it).
    pub fn from_version_dir(dir: &Path) -> Result<Artifact> {
        let verified = VerifiedComponent::read(dir)?;
        let model = verified.manifest().clone();
        SignaturePolicy::new(Vec::new()).check(dir)?;
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| Error::io(dir.join(name), e));
        let layer = |data: Vec<u8>, media_type: &str, name: &str| {
            ImageLayer::new(data, media_type.to_string(), Some(BTreeMap::from([(TITLE.into(), name.into())])))
        };
        let mut layers = vec![
            layer(read("manifest.toml")?, MANIFEST_MEDIA_TYPE, "manifest.toml"),
            layer(verified.wasm().to_vec(), COMPONENT_MEDIA_TYPE, &model.component.file),
        ];
        if dir.join(SIGNATURE_FILE).is_file() {
            layers.push(layer(read(SIGNATURE_FILE)?, SIGNATURE_MEDIA_TYPE, SIGNATURE_FILE));
        }
        let identity = serde_json::json!({
            "name": model.name,
            "version": model.version,
            "created_at": model.created_at,
            "component": { "file": model.component.file, "sha256": model.component.sha256 },
            "inputs": model.inputs,
            "outputs": model.outputs,
        });
        let config = Config::new(identity.to_string(), CONFIG_MEDIA_TYPE.into(), None);
        let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations(&model)));
        manifest.artifact_type = Some(ARTIFACT_TYPE.into());
        Ok(Artifact { layers, config, manifest, model })
    }
}

fn annotations(model: &Manifest) -> BTreeMap<String, String> {
    let json = |value: &[edgeinfer_runtime::manifest::TensorSignature]| {
        serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
    };
    BTreeMap::from([
        ("org.opencontainers.image.title".into(), model.name.clone()),
        ("org.opencontainers.image.version".into(), model.version.to_string()),
        ("org.opencontainers.image.created".into(), model.created_at.clone()),
        (ANNOTATION_MODEL.into(), model.name.clone()),
        (ANNOTATION_VERSION.into(), model.version.to_string()),
        (ANNOTATION_INPUTS.into(), json(&model.inputs)),
        (ANNOTATION_OUTPUTS.into(), json(&model.outputs)),
        (ANNOTATION_COMPONENT.into(), model.component.sha256.clone()),
        (ANNOTATION_RUNTIME.into(), model.component.runtime_sha256.clone()),
    ])
}

/// What an artifact's manifest says it holds, read before any layer is pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The model name.
    pub model: String,
    /// The version number.
    pub version: u64,
    /// The component's sha256.
    pub component_sha256: String,
}

/// Reads an OCI manifest's edgeinfer identity; anything else is [`Error::NotAModel`].
pub fn describe(reference: &str, manifest: &OciImageManifest) -> Result<Described> {
    let not_a_model = |message: String| Error::NotAModel { reference: reference.to_string(), message };
    let is_ours =
        manifest.artifact_type.as_deref() == Some(ARTIFACT_TYPE) || manifest.config.media_type == CONFIG_MEDIA_TYPE;
    if !is_ours {
        return Err(not_a_model(format!(
            "its artifactType is {:?} and its config is {}, expected {ARTIFACT_TYPE}",
            manifest.artifact_type, manifest.config.media_type
        )));
    }
    let annotations = manifest.annotations.clone().unwrap_or_default();
    let get = |key: &str| annotations.get(key).cloned().ok_or_else(|| not_a_model(format!("no {key} annotation")));
    let version = get(ANNOTATION_VERSION)?;
    let version = version.parse::<u64>().map_err(|_| not_a_model(format!("version '{version}' is not a number")))?;
    Ok(Described { model: get(ANNOTATION_MODEL)?, version, component_sha256: get(ANNOTATION_COMPONENT)? })
}

/// A version written into a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The model name.
    pub model: String,
    /// The version number.
    pub version: u64,
    /// The version directory.
    pub dir: PathBuf,
    /// The component's sha256.
    pub component_sha256: String,
    /// False when this very version was here already (nothing written).
    pub new: bool,
}

/// Writes pulled `layers` as `<repo>/<model>/<version>/` after the checks a server makes
/// when loading: every file named by its layer's title, the component's sha256 against the
/// manifest, the model and version against what the OCI manifest `described`, the
/// signature against `signatures`, the imports against the manifest's grants. The directory
/// is staged beside its place and renamed into it, so it appears complete or not at all; an
/// existing version is never replaced.
pub fn install(
    reference: &str,
    described: &Described,
    layers: &[ImageLayer],
    repo: &Path,
    signatures: &SignaturePolicy,
) -> Result<Installed> {
    let refuse = |message: String| Error::Refused { reference: reference.to_string(), message };
    let model_dir = repo.join(&described.model);
    std::fs::create_dir_all(&model_dir).map_err(|e| Error::io(model_dir.clone(), e))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.pull-", described.version))
        .tempdir_in(&model_dir)
        .map_err(|e| Error::io(model_dir.clone(), e))?;
    for layer in layers {
        let name = layer.annotations.as_ref().and_then(|a| a.get(TITLE)).map(String::as_str).unwrap_or_default();
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(refuse(format!("unexpected layer of media type {}", layer.media_type)));
        }
        if !is_plain_file_name(name) {
            return Err(refuse(format!("a {} layer is titled {name:?}, not a plain file name", layer.media_type)));
        }
        let path = staging.path().join(name);
        std::fs::write(&path, &layer.data).map_err(|e| Error::io(path, e))?;
    }
    let verified = VerifiedComponent::read(staging.path()).map_err(|e| refuse(e.to_string()))?;
    let manifest = verified.manifest();
    if manifest.name != described.model || manifest.version != described.version {
        return Err(refuse(format!(
            "its annotations say {} version {} but its manifest.toml says {} version {}",
            described.model, described.version, manifest.name, manifest.version
        )));
    }
    if !edgeinfer_runtime::digest::digests_equal(verified.digest(), &described.component_sha256) {
        return Err(refuse(format!(
            "its annotations pin component sha256 {} but the component is {}",
            described.component_sha256,
            verified.digest()
        )));
    }
    signatures.check(staging.path()).map_err(|e| refuse(e.to_string()))?;
    let imports = component_imports(verified.wasm()).map_err(refuse)?;
    check_imports(imports.iter().map(String::as_str), &manifest.grants).map_err(refuse)?;
    let dir = model_dir.join(described.version.to_string());
    if dir.exists() {
        return Err(refuse(format!("{} already exists; a version is never replaced", dir.display())));
    }
    let component_sha256 = verified.digest().to_string();
    std::fs::rename(staging.keep(), &dir).map_err(|e| Error::io(dir.clone(), e))?;
    Ok(Installed { model: described.model.clone(), version: described.version, dir, component_sha256, new: true })
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// The version `described` when `<repo>` holds it already with the same component
/// (`new: false`); `None` when it is not there; [`Error::Refused`] when it is there with
/// another component, since a published version is never replaced.
pub fn already_here(reference: &str, described: &Described, repo: &Path) -> Result<Option<Installed>> {
    let dir = repo.join(&described.model).join(described.version.to_string());
    if !dir.exists() {
        return Ok(None);
    }
    let local = Manifest::load(&dir.join("manifest.toml"))?.component.sha256;
    if !edgeinfer_runtime::digest::digests_equal(&local, &described.component_sha256) {
        return Err(Error::Refused {
            reference: reference.to_string(),
            message: format!(
                "it is {} version {} with component sha256 {}, but that version in {} has {local}; a published \
                 version is never replaced (publish a new version number)",
                described.model,
                described.version,
                described.component_sha256,
                repo.display()
            ),
        });
    }
    Ok(Some(Installed {
        model: described.model.clone(),
        version: described.version,
        dir,
        component_sha256: local,
        new: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(artifact_type: Option<&str>, annotations: &[(&str, &str)]) -> OciImageManifest {
        let mut manifest = OciImageManifest {
            artifact_type: artifact_type.map(str::to_string),
            annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..OciImageManifest::default()
        };
        manifest.config.media_type = "application/vnd.oci.image.config.v1+json".into();
        manifest
    }

    #[test]
    fn only_edgeinfer_artifacts_are_described() {
        let image = describe("r/busybox:1", &manifest(None, &[]));
        assert!(matches!(image, Err(Error::NotAModel { .. })), "{image:?}");
        let complete = [(ANNOTATION_MODEL, "digits"), (ANNOTATION_VERSION, "2"), (ANNOTATION_COMPONENT, "ab")];
        let described = describe("r/digits:2", &manifest(Some(ARTIFACT_TYPE), &complete)).expect("a model");
        assert_eq!(described, Described { model: "digits".into(), version: 2, component_sha256: "ab".into() });
        let bad_version = [(ANNOTATION_MODEL, "digits"), (ANNOTATION_VERSION, "two"), (ANNOTATION_COMPONENT, "ab")];
        let error = describe("r/digits:2", &manifest(Some(ARTIFACT_TYPE), &bad_version)).expect_err("refused");
        assert!(error.to_string().contains("'two' is not a number"), "{error}");
        let error = describe("r/digits:2", &manifest(Some(ARTIFACT_TYPE), &complete[..2])).expect_err("refused");
        assert!(error.to_string().contains(ANNOTATION_COMPONENT), "{error}");
    }

    #[test]
    fn layer_titles_must_be_plain_file_names() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
        assert!(is_plain_file_name("model.wasm"));
    }

    #[test]
    fn a_layer_titled_outside_the_version_is_refused_and_nothing_is_written() {
        let repo = tempfile::tempdir().expect("tempdir");
        let described = Described { model: "digits".into(), version: 1, component_sha256: "ab".into() };
        let layer = ImageLayer::new(
            b"x".to_vec(),
            MANIFEST_MEDIA_TYPE.into(),
            Some(BTreeMap::from([(TITLE.to_string(), "../escape".to_string())])),
        );
        let error =
            install("r/digits:1", &described, &[layer], repo.path(), &SignaturePolicy::default()).expect_err("refused");
        assert!(error.to_string().contains("not a plain file name"), "{error}");
        let left: Vec<_> = std::fs::read_dir(repo.path().join("digits")).expect("model dir").collect();
        assert!(left.is_empty(), "staging removed: {left:?}");
        assert!(!repo.path().join("escape").exists());
    }
}
