//! The import policy: what a model component may import, and what needs a manifest grant.
//!
//! A model gets streams, randomness and stdio (which the host connects to nothing); anything
//! that reaches outside the sandbox must be granted by the manifest, else the component is
//! refused before it is instantiated.

use serde::{Deserialize, Serialize};

/// A capability a manifest may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `wasi:filesystem/*` (the host still preopens nothing).
    Filesystem,
    /// `wasi:cli/environment` (the host still passes no variables).
    Environment,
    /// `wasi:clocks/*`.
    Clocks,
    /// `wasi:sockets/*` and outgoing `wasi:http`.
    Network,
    /// `wasi:cli/exit` and `wasi:cli/terminal-*`.
    Process,
}

/// Interfaces every model may import.
const ALWAYS_ALLOWED: &[&str] = &[
    "wasi:io/",
    "wasi:random/",
    "wasi:cli/stdin@",
    "wasi:cli/stdout@",
    "wasi:cli/stderr@",
    "wasi:http/types@",
    "edgeinfer:inference/types@",
];

/// Interfaces that need a grant, and the grant.
const GRANTABLE: &[(&str, Capability)] = &[
    ("wasi:filesystem/", Capability::Filesystem),
    ("wasi:cli/environment@", Capability::Environment),
    ("wasi:clocks/", Capability::Clocks),
    ("wasi:sockets/", Capability::Network),
    ("wasi:http/outgoing-handler@", Capability::Network),
    ("wasi:cli/exit@", Capability::Process),
    ("wasi:cli/terminal-", Capability::Process),
];

/// Checks every import name against the policy and the manifest's grants.
///
/// Returns a message naming the first import refused.
pub fn check_imports<'a>(imports: impl IntoIterator<Item = &'a str>, grants: &[Capability]) -> Result<(), String> {
    for import in imports {
        if ALWAYS_ALLOWED.iter().any(|prefix| import.starts_with(prefix)) {
            continue;
        }
        match GRANTABLE.iter().find(|(prefix, _)| import.starts_with(prefix)) {
            Some((_, needed)) if grants.contains(needed) => continue,
            Some((_, needed)) => {
                let needed =
                    serde_json::to_value(needed).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                return Err(format!(
                    "the component imports `{import}`, which needs the `{needed}` grant, and its manifest grants {}",
                    describe(grants)
                ));
            }
            None => {
                return Err(format!("the component imports `{import}`, which edgeinfer never provides to models"));
            }
        }
    }
    Ok(())
}

/// The names a component imports at its top level (not those of nested components).
pub fn component_imports(wasm: &[u8]) -> std::result::Result<Vec<String>, String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("not a valid component: {e}"))? {
            Payload::Version { encoding: Encoding::Module, .. } if depth == 0 => {
                return Err("a core module, not a component".into());
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    names.push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

fn describe(grants: &[Capability]) -> String {
    if grants.is_empty() { "none".to_string() } else { format!("only {grants:?}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_needs_a_grant() {
        let imports = ["wasi:io/streams@0.2.4", "wasi:filesystem/preopens@0.2.4"];
        let refused = check_imports(imports, &[]).expect_err("refused");
        assert!(refused.contains("wasi:filesystem/preopens@0.2.4") && refused.contains("filesystem"), "{refused}");
        assert!(check_imports(imports, &[Capability::Filesystem]).is_ok());
    }

    #[test]
    fn an_http_handler_needs_no_grant_but_outbound_http_does() {
        let handler = ["wasi:http/types@0.2.6", "wasi:io/streams@0.2.6"];
        assert!(check_imports(handler, &[]).is_ok());
        let outbound = ["wasi:http/types@0.2.6", "wasi:http/outgoing-handler@0.2.6"];
        let refused = check_imports(outbound, &[]).expect_err("refused");
        assert!(refused.contains("wasi:http/outgoing-handler@0.2.6") && refused.contains("`network`"), "{refused}");
        assert!(check_imports(outbound, &[Capability::Network]).is_ok());
    }

    #[test]
    fn unknown_interfaces_are_refused() {
        assert!(check_imports(["acme:spy/upload"], &[Capability::Network]).is_err());
        assert!(check_imports(["wasi:random/random@0.2.0", "edgeinfer:inference/types@0.1.0"], &[]).is_ok());
    }
}
