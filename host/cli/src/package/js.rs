//! The component transpiled to JavaScript with jco's transpiler (`js-component-bindgen`, as a
//! library: no Node.js needed to package): `model.js` (the component's glue, exporting
//! `instantiate(getCoreModule, imports)`) and its core modules `model.core*.wasm`, plus
//! `edgeinfer-host.js`, the WASI 0.2 imports a JavaScript host gives it.

use edgeinfer_runtime::VerifiedComponent;

use super::Files;

/// The host side: the wasi imports over one in-memory request, and `createHandler`.
#[cfg(feature = "transpile")]
const HOST_JS: &str = include_str!("assets/edgeinfer-host.js");

/// The interfaces `edgeinfer-host.js` implements: those of the `wasi:http/proxy` world that
/// components `edgeinfer compile` writes import (`edgeinfer:inference/types` holds types only).
#[cfg(feature = "transpile")]
const PROVIDED: &[&str] = &[
    "edgeinfer:inference/types",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:http/types",
];

/// What the transpiled component needs written beside it.
pub struct Transpiled {
    /// The core modules' file names, in the order `model.js` asks for them.
    pub core_modules: Vec<String>,
}

/// Transpiles `component` into `files`: `model.js`, `model.core*.wasm`, `edgeinfer-host.js`.
/// Refuses a component importing anything `edgeinfer-host.js` does not provide, naming it.
#[cfg(feature = "transpile")]
pub fn transpile(component: &VerifiedComponent, files: &mut Files) -> anyhow::Result<Transpiled> {
    use anyhow::{Context, bail};
    use js_component_bindgen::{InstantiationMode, TranspileOpts};

    let options = TranspileOpts {
        name: "model".into(),
        no_typescript: true,
        instantiation_mode: Some(InstantiationMode::Async),
        no_namespaced_exports: true,
        ..TranspileOpts::default()
    };
    let imports = edgeinfer_runtime::capabilities::component_imports(component.wasm())
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("reading the component's imports")?;
    for import in &imports {
        let unversioned = import.split('@').next().unwrap_or(import);
        if !PROVIDED.contains(&unversioned) {
            bail!(
                "the component imports `{import}`, which JavaScript hosts do not provide (they give the \
                 wasi:http/proxy world's {}); compile the model without that capability",
                PROVIDED.join(", ")
            );
        }
    }
    let transpiled = without_panics(|| js_component_bindgen::transpile(component.wasm(), options))
        .and_then(|outcome| outcome.map_err(|error| anyhow::anyhow!("{error:#}")))
        .context("transpiling the component to JavaScript")?;
    let mut core_modules = Vec::new();
    for (name, bytes) in &transpiled.files {
        if name.ends_with(".wasm") {
            core_modules.push(name.clone());
        }
        files.put(name, bytes)?;
    }
    core_modules.sort_by_key(|name| core_index(name));
    files.put("edgeinfer-host.js", HOST_JS)?;
    Ok(Transpiled { core_modules })
}

/// Runs `f`, turning a panic (the transpiler asserts on components it does not expect) into
/// an error naming it, with the panic hook silenced meanwhile.
#[cfg(feature = "transpile")]
fn without_panics<T>(f: impl FnOnce() -> T) -> anyhow::Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        anyhow::anyhow!("the JavaScript transpiler failed on this component: {message}")
    })
}

/// This build leaves the transpiler out: JavaScript targets are refused, naming the feature.
#[cfg(not(feature = "transpile"))]
pub fn transpile(_component: &VerifiedComponent, _files: &mut Files) -> anyhow::Result<Transpiled> {
    anyhow::bail!("this build of edgeinfer leaves out the JavaScript transpiler (cargo feature `transpile`)")
}

/// `model.core.wasm` is module 1, `model.core2.wasm` module 2, and so on.
#[cfg(feature = "transpile")]
fn core_index(name: &str) -> u32 {
    let stem = name.trim_start_matches("model.core").trim_end_matches(".wasm");
    stem.parse().unwrap_or(1)
}
