//! `--target spin`: the component unchanged as `model.wasm` and a `spin.toml` routing every
//! path to it, with no outbound hosts, files or variables: `spin up` serves it, and so does
//! any wasi:http host (`wasmtime serve model.wasm`).

use std::path::PathBuf;

use edgeinfer_runtime::VerifiedComponent;

use super::{Files, service_name};

pub fn write(component: &VerifiedComponent, mut files: Files) -> anyhow::Result<Vec<PathBuf>> {
    let manifest = component.manifest();
    files.put("model.wasm", component.wasm())?;
    let name = service_name(component);
    let spin_toml = format!(
        "# Serves {model} version {version} (sha256 {digest}): spin up\n\
         spin_manifest_version = 2\n\n\
         [application]\n\
         name = \"{name}\"\n\
         version = \"{version}.0.0\"\n\
         description = \"edgeinfer model {model} version {version} over the Open Inference Protocol v2\"\n\n\
         [[trigger.http]]\n\
         route = \"/...\"\n\
         component = \"model\"\n\n\
         [component.model]\n\
         source = \"model.wasm\"\n\
         allowed_outbound_hosts = []\n",
        model = manifest.name,
        version = manifest.version,
        digest = component.digest(),
    );
    files.put("spin.toml", spin_toml)?;
    Ok(files.done())
}
