//! `--target browser`: `edgeinfer.js` (exporting `infer(request)`, `metadata()`, `handle`),
//! the transpiled component beside it, `edgeinfer-model.js` naming the version, and
//! `index.html`, a demo page. Any static file server serves the directory.

use std::path::PathBuf;

use edgeinfer_runtime::VerifiedComponent;

use super::{Files, js, zeros_request};

const EDGEINFER_JS: &str = include_str!("assets/edgeinfer.js");
const INDEX_HTML: &str = include_str!("assets/index.html");

pub fn write(component: &VerifiedComponent, mut files: Files) -> anyhow::Result<Vec<PathBuf>> {
    js::transpile(component, &mut files)?;
    let manifest = component.manifest();
    let model = serde_json::json!({
        "name": manifest.name,
        "version": manifest.version.to_string(),
        "sha256": component.digest(),
    });
    files.put("edgeinfer.js", EDGEINFER_JS)?;
    files.put(
        "edgeinfer-model.js",
        format!("// The model version this package holds.\nexport const MODEL = {model};\n"),
    )?;
    let request = serde_json::to_string_pretty(&zeros_request(component))?;
    let page = INDEX_HTML
        .replace("{{NAME}}", &html_escape(&manifest.name))
        .replace("{{VERSION}}", &manifest.version.to_string())
        .replace("{{REQUEST}}", &html_escape(&request));
    files.put("index.html", page)?;
    Ok(files.done())
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
