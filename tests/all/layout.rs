//! The workspace's shape holds: the runtime crate pulls in no server, TLS, metrics, file
//! format or CLI crates; monitor, batch and oci do not know each other or the server; no module of any host crate
//! imports a sibling that (directly or not) imports it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The package names in `cargo tree -p package` (normal dependencies, this platform).
fn dependency_tree(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p", package])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_runtime_crate_depends_on_no_server_tls_metrics_format_or_cli_crate() {
    let tree = dependency_tree("edgeinfer-runtime");
    let forbidden = [
        "hyper",
        "tonic",
        "rustls",
        "prometheus-client",
        "arrow-array",
        "parquet",
        "csv",
        "clap",
        "edgeinfer-monitor",
        "edgeinfer-batch",
        "edgeinfer-server",
    ];
    let found: Vec<&str> = forbidden.iter().copied().filter(|name| tree.contains(*name)).collect();
    assert!(found.is_empty(), "edgeinfer-runtime depends on {found:?}");
    assert!(tree.contains("wasmtime") && tree.contains("edgeinfer-oip"), "the tree was read: {tree:?}");
}

#[test]
fn monitor_and_batch_do_not_know_each_other_and_only_the_cli_knows_clap() {
    for (package, other) in [("edgeinfer-monitor", "edgeinfer-batch"), ("edgeinfer-batch", "edgeinfer-monitor")] {
        let tree = dependency_tree(package);
        assert!(tree.contains("edgeinfer-runtime"), "{package} builds on the runtime");
        assert!(!tree.contains(other), "{package} depends on {other}");
        assert!(!tree.contains("clap") && !tree.contains("hyper"), "{package} depends on clap or hyper");
    }
    let server = dependency_tree("edgeinfer-server");
    assert!(!server.contains("clap"), "edgeinfer-server depends on clap");
    let oci = dependency_tree("edgeinfer-oci");
    assert!(oci.contains("oci-client") && oci.contains("edgeinfer-runtime"), "the tree was read: {oci:?}");
    for other in ["edgeinfer-server", "edgeinfer-monitor", "edgeinfer-batch", "clap", "tonic", "prometheus-client"] {
        assert!(!oci.contains(other), "edgeinfer-oci depends on {other}");
    }
}

#[test]
fn the_embedding_example_uses_the_runtime_alone() {
    let example = std::fs::read_to_string(workspace().join("examples/embed.rs")).expect("examples/embed.rs");
    let crates: BTreeSet<&str> = example
        .lines()
        .filter_map(|line| line.trim().strip_prefix("use "))
        .filter_map(|path| path.split("::").next())
        .collect();
    let allowed = ["std", "edgeinfer_runtime", "edgeinfer_oip"];
    assert!(crates.iter().all(|c| allowed.contains(c)), "examples/embed.rs uses {crates:?}");
    let manifest = std::fs::read_to_string(workspace().join("host/runtime/Cargo.toml")).expect("runtime manifest");
    assert!(manifest.contains("../../examples/embed.rs"), "embed is an example of edgeinfer-runtime");
}

#[test]
fn no_module_imports_a_sibling_that_imports_it_back() {
    let mut cycles = Vec::new();
    for krate in ["runtime", "monitor", "batch", "oci", "server", "cli"] {
        let src = workspace().join("host").join(krate).join("src");
        assert!(rust_files(&src).len() > 1, "{krate}: no modules found in {}", src.display());
        let graph = module_graph(&src);
        for cycle in strongly_connected(&graph) {
            cycles.push(format!("{krate}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// A module path inside its crate, e.g. `["registry", "lifecycle"]`.
type ModulePath = Vec<String>;

/// Edges between sibling modules: `a -> b` when a file in `a` names `b` (or something inside
/// `b`) by a `crate::`/`super::`/`self::` path. References to a module's own ancestors or
/// descendants are not edges.
fn module_graph(src: &Path) -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let mut graph: BTreeMap<ModulePath, BTreeSet<ModulePath>> = BTreeMap::new();
    for file in rust_files(src) {
        let module = module_of(src, &file);
        let text = strip_comments(&std::fs::read_to_string(&file).expect("read source"));
        for path in referenced_paths(&text) {
            let Some(target) = resolve(&module, &path) else { continue };
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= module.len() || common >= target.len() {
                continue;
            }
            let name = &target[common];
            if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                continue; // an item (a type, a constant), not a module
            }
            let from = module[..=common].to_vec();
            let to = [&module[..common], std::slice::from_ref(name)].concat();
            graph.entry(from).or_default().insert(to);
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn module_of(src: &Path, file: &Path) -> ModulePath {
    let relative = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: ModulePath = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

fn strip_comments(text: &str) -> String {
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every `crate::`, `super::` and `self::` path in `text`, with `use` groups expanded.
fn referenced_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("use ") {
        let before = &rest[..start];
        let at_statement = before.rsplit('\n').next().is_some_and(|l| {
            let l = l.trim();
            l.is_empty() || l == "pub" || l.starts_with("pub(")
        });
        rest = &rest[start + 4..];
        if !at_statement {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        // `as` renames become `@` so that whitespace can go.
        let tree: String = rest[..end].replace(" as ", "@").chars().filter(|c| !c.is_whitespace()).collect();
        paths.extend(expand_use(&tree));
        rest = &rest[end..];
    }
    let bytes = text.as_bytes();
    for anchor in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = text[from..].find(anchor) {
            let at = from + found;
            from = at + anchor.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let path: String =
                text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            paths.push(path);
        }
    }
    paths
}

/// `a::{b, c::{d@e}}` -> `a::b`, `a::c::d` (a rename, written `@`, dropped).
fn expand_use(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split('@').next().unwrap_or(tree).to_string()];
    };
    let Some(close) = tree.rfind('}') else { return vec![tree.to_string()] };
    let prefix = &tree[..open];
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0, String::new());
    for c in tree[open + 1..close].chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts.into_iter().filter(|p| !p.is_empty()).flat_map(|p| expand_use(&p)).map(|p| format!("{prefix}{p}")).collect()
}

/// The absolute module path `path` names from inside `module`, if it is crate-relative.
fn resolve(module: &[String], path: &str) -> Option<ModulePath> {
    let mut segments = path.split("::").filter(|s| !s.is_empty()).peekable();
    let mut base: ModulePath = match segments.next()? {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => module[..module.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    while segments.peek() == Some(&"super") {
        segments.next();
        base.pop();
    }
    base.extend(segments.map(str::to_string));
    Some(base)
}

/// Tarjan's strongly connected components of more than one module.
fn strongly_connected(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'a ModulePath, (usize, usize)>,
        stack: Vec<&'a ModulePath>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a ModulePath) {
        state.index.insert(node, (state.next, state.next));
        state.next += 1;
        state.stack.push(node);
        if let Some(targets) = state.graph.get(node) {
            for target in targets {
                if !state.index.contains_key(target) {
                    visit(state, target);
                    let low = state.index[target].1;
                    let entry = state.index.get_mut(node).expect("visited");
                    entry.1 = entry.1.min(low);
                } else if state.stack.contains(&target) {
                    let target_index = state.index[target].0;
                    let entry = state.index.get_mut(node).expect("visited");
                    entry.1 = entry.1.min(target_index);
                }
            }
        }
        let (index, low) = state.index[node];
        if index == low {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                component.push(member.join("::"));
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State { graph, index: BTreeMap::new(), stack: Vec::new(), next: 0, found: Vec::new() };
    let nodes: BTreeSet<&ModulePath> = graph.keys().chain(graph.values().flatten()).collect();
    for node in nodes {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn the_cycle_finder_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lib.rs"), "mod a;\nmod b;\nmod c;\n").expect("lib");
    std::fs::write(dir.path().join("a.rs"), "use crate::b::Thing;\n").expect("a");
    std::fs::write(dir.path().join("b.rs"), "use super::{c::Other, a};\n").expect("b");
    std::fs::write(dir.path().join("c.rs"), "// use crate::a;\nfn f() { let _ = crate::Error; }\n").expect("c");
    let graph = module_graph(dir.path());
    assert_eq!(strongly_connected(&graph), vec![vec!["a".to_string(), "b".to_string()]]);
    std::fs::write(dir.path().join("c.rs"), "fn f() { crate::a::go() }\n").expect("c");
    assert_eq!(strongly_connected(&module_graph(dir.path())), vec![vec!["a", "b", "c"]]);
}
