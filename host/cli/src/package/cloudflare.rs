//! `--target cloudflare`: a Worker. `worker.js` (the fetch handler) calls the transpiled
//! component's wasi:http handler; `core-modules.js` imports its core modules as compiled
//! WebAssembly modules (Workers compile no code at run time); `config.capnp` serves it with
//! `workerd serve config.capnp --socket-addr http=127.0.0.1:PORT`, `wrangler.toml` deploys it.

use std::fmt::Write as _;
use std::path::PathBuf;

use edgeinfer_runtime::VerifiedComponent;

use super::{Files, js, service_name};

const WORKER_JS: &str = include_str!("assets/worker.js");

/// The Workers compatibility date the package is written and tested for.
pub const COMPATIBILITY_DATE: &str = "2025-11-01";

pub fn write(component: &VerifiedComponent, mut files: Files) -> anyhow::Result<Vec<PathBuf>> {
    let transpiled = js::transpile(component, &mut files)?;
    files.put("worker.js", WORKER_JS)?;
    files.put("core-modules.js", core_modules_js(&transpiled.core_modules))?;
    files.put("config.capnp", workerd_config(&transpiled.core_modules))?;
    files.put("wrangler.toml", wrangler_toml(component))?;
    Ok(files.done())
}

/// `import module0 from "./model.core.wasm"` for each core module, and the name -> module map
/// `getCoreModule` reads.
fn core_modules_js(core_modules: &[String]) -> String {
    let mut js = String::from("// The component's core modules, compiled by the platform when the Worker loads.\n");
    for (index, name) in core_modules.iter().enumerate() {
        let _ = writeln!(js, "import module{index} from \"./{name}\";");
    }
    js.push_str("\nexport const coreModules = {\n");
    for (index, name) in core_modules.iter().enumerate() {
        let _ = writeln!(js, "  \"{name}\": module{index},");
    }
    js.push_str("};\n");
    js
}

/// workerd's configuration: one service running the Worker, one socket named `http`.
fn workerd_config(core_modules: &[String]) -> String {
    let mut modules = String::new();
    for name in ["worker.js", "edgeinfer-host.js", "core-modules.js", "model.js"] {
        let _ = writeln!(modules, "    (name = \"{name}\", esModule = embed \"{name}\"),");
    }
    for name in core_modules {
        let _ = writeln!(modules, "    (name = \"{name}\", wasm = embed \"{name}\"),");
    }
    format!(
        "# Serves the Worker locally: workerd serve config.capnp --socket-addr http=127.0.0.1:8787\n\
         using Workerd = import \"/workerd/workerd.capnp\";\n\n\
         const config :Workerd.Config = (\n  \
           services = [ (name = \"model\", worker = .worker) ],\n  \
           sockets = [ (name = \"http\", address = \"*:8080\", http = (), service = \"model\") ],\n\
         );\n\n\
         const worker :Workerd.Worker = (\n  \
           modules = [\n{modules}  ],\n  \
           compatibilityDate = \"{COMPATIBILITY_DATE}\",\n\
         );\n"
    )
}

/// `wrangler deploy` configuration: the ES module Worker, unbundled, its wasm imported as
/// compiled modules (wrangler's default rule for `.wasm`), and the paid plan's CPU limit
/// raised for large models.
fn wrangler_toml(component: &VerifiedComponent) -> String {
    format!(
        "# Deploys the Worker: wrangler deploy (see docs/src/cloudflare.md for the platform's limits).\n\
         name = \"{}\"\n\
         main = \"worker.js\"\n\
         compatibility_date = \"{COMPATIBILITY_DATE}\"\n\
         no_bundle = true\n\n\
         # The .js files are ES modules; the .wasm files are compiled modules (wrangler's default).\n\
         [[rules]]\n\
         type = \"ESModule\"\n\
         globs = [\"**/*.js\"]\n\n\
         # CPU time per request on the paid plan (the free plan allows 10 ms).\n\
         [limits]\n\
         cpu_ms = 30000\n",
        service_name(component)
    )
}
