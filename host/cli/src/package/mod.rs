//! `edgeinfer package`: a compiled model version turned into what another platform deploys.
//!
//! Every target starts from the same [`VerifiedComponent`] (its sha256 checked against its
//! manifest, its signature when trusted keys are given) and ships the component unchanged or
//! transpiled: the component's own `wasi:http/incoming-handler` answers every request, so the
//! outputs, statuses and error messages are those of `edgeinfer serve`.
//!
//! - [`cloudflare`]: a Worker (ES modules + core wasm), `config.capnp` for `workerd`, and
//!   `wrangler.toml` for `wrangler deploy`;
//! - [`browser`]: an ES module exporting `infer(request)` and `metadata()`, and a demo page;
//! - [`spin`]: `spin.toml` beside the component, for `spin up` and `spin deploy`;
//! - [`fastly`]: refused, saying why: Fastly Compute links its own world, not wasi:http.

mod browser;
mod cloudflare;
mod fastly;
mod js;
mod spin;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use edgeinfer_runtime::VerifiedComponent;

/// The platforms `edgeinfer package` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Cloudflare Workers (`workerd serve`, `wrangler deploy`).
    Cloudflare,
    /// Fastly Compute: refused, saying why (it links only Fastly's own world, not wasi:http).
    Fastly,
    /// Any web page: an ES module and a static demo page.
    Browser,
    /// Fermyon Spin and other wasi:http hosts (`spin up`, `wasmtime serve`).
    Spin,
}

/// Writes `component`'s package for `target` into `out` (created; it must not exist unless
/// `replace`), staged beside it and renamed into place, so a failed run leaves nothing half
/// written. Returns the files written, relative to `out`.
pub fn write(component: &VerifiedComponent, target: Target, out: &Path, replace: bool) -> anyhow::Result<Vec<PathBuf>> {
    if out.exists() && !replace {
        bail!("{} already exists (pass --replace to overwrite it)", out.display());
    }
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".edgeinfer-package-")
        .tempdir_in(parent)
        .with_context(|| format!("a staging directory in {}", parent.display()))?;
    let files = Files::new(staging.path());
    let written = match target {
        Target::Cloudflare => cloudflare::write(component, files)?,
        Target::Fastly => fastly::write(component, files)?,
        Target::Browser => browser::write(component, files)?,
        Target::Spin => spin::write(component, files)?,
    };
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing the old {}", out.display()))?;
    }
    std::fs::rename(staging.keep(), out).with_context(|| format!("moving the package to {}", out.display()))?;
    Ok(written)
}

/// The package directory being written, and the list of what went into it.
struct Files {
    root: PathBuf,
    written: Vec<PathBuf>,
}

impl Files {
    fn new(root: &Path) -> Files {
        Files { root: root.to_path_buf(), written: Vec::new() }
    }

    /// Writes one file (creating its directories), `name` relative to the package.
    fn put(&mut self, name: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> anyhow::Result<()> {
        let name = name.as_ref();
        let path = self.root.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        self.written.push(name.to_path_buf());
        Ok(())
    }

    fn done(self) -> Vec<PathBuf> {
        self.written
    }
}

/// A v2 request of zeros shaped by the model's inputs (dynamic dimensions as 1): the demo
/// page's starting request, valid for any model.
fn zeros_request(component: &VerifiedComponent) -> serde_json::Value {
    use edgeinfer_oip::Datatype;
    let inputs: Vec<serde_json::Value> = component
        .manifest()
        .inputs
        .iter()
        .map(|input| {
            let shape: Vec<u64> = input.shape.iter().map(|&d| if d < 0 { 1 } else { d as u64 }).collect();
            let count = shape.iter().product::<u64>() as usize;
            let zero = match input.datatype {
                Datatype::Bool => serde_json::json!(false),
                Datatype::Bytes => serde_json::json!(""),
                _ => serde_json::json!(0),
            };
            serde_json::json!({
                "name": input.name,
                "shape": shape,
                "datatype": input.datatype.as_str(),
                "data": vec![zero; count],
            })
        })
        .collect();
    serde_json::json!({ "inputs": inputs })
}

/// A name platforms accept for a service or script: the model's name and version in lowercase
/// letters, digits and dashes, e.g. `edgeinfer-digits-1`.
fn service_name(component: &VerifiedComponent) -> String {
    let manifest = component.manifest();
    let raw = format!("edgeinfer-{}-{}", manifest.name, manifest.version);
    let cleaned: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    cleaned.trim_matches('-').to_string()
}
