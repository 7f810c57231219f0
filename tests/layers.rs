//! The module graph is a stack: every `crate::` path in `src/` points to a
//! lower layer or stays inside its own, `auth`, `session` and `store` never
//! name pingora, and sibling files in one directory never import each other
//! in a circle. The source is read as text, so a new import that points up
//! fails here rather than in a reviewer's head.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use what is listed before it (and its own
/// layer); the first matching prefix names a path's layer.
const LAYERS: &[&[&str]] = &[
    &["metrics", "config::duration"],
    &["config::raw"],
    &["log_queue"],
    &["auth"],
    &["store"],
    &["session"],
    &["config", "keygen"],
    &["state"],
    &["proxy"],
    &["admin"],
    &["server"],
    &["demo"],
];

/// Layers below `config`: plain types, tested and benchmarked alone.
const ENGINE_FREE: &[&str] = &["auth", "session", "store"];

struct SourceFile {
    path: PathBuf,
    /// `proxy::endpoints::token` for `src/proxy/endpoints/token.rs`.
    module: Vec<String>,
    /// The file without its comments.
    code: String,
}

fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    assert!(files.len() > 40, "only {} files under src/", files.len());
    files
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<SourceFile>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src/");
            let mut module: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            // Unit tests sit at the end; their `super` is the file itself.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            files.push(SourceFile {
                path,
                module,
                code: without_comments(text),
            });
        }
    }
}

/// Drops `//` comments (doc comments included) outside string literals.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut in_string = false;
            let bytes = line.as_bytes();
            for i in 0..bytes.len() {
                match bytes[i] {
                    b'"' if i == 0 || bytes[i - 1] != b'\\' => in_string = !in_string,
                    b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
                    _ => {}
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file names, absolute (`config::runtime::router`),
/// from `crate::…` (groups expanded one level) and `super::…`.
fn named_paths(file: &SourceFile) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent(&file.module))] {
        let mut rest = file.code.as_str();
        while let Some(at) = rest.find(prefix) {
            let preceded_by_ident = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[at + prefix.len()..];
            if preceded_by_ident {
                continue;
            }
            for tail in path_tails(rest) {
                let mut full = base.clone();
                full.extend(tail.split("::").map(str::to_owned));
                paths.insert(full.join("::"));
            }
        }
    }
    paths
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// `a::b::C` → [`a::b::C`]; `{a, b::c}` → [`a`, `b::c`].
fn path_tails(rest: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    if let Some(group) = rest.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        return group[..end]
            .split(',')
            .map(|item| {
                item.trim()
                    .chars()
                    .take_while(|c| is_path_char(*c))
                    .collect()
            })
            .filter(|item: &String| !item.is_empty())
            .collect();
    }
    let path: String = rest.chars().take_while(|c| is_path_char(*c)).collect();
    vec![path.trim_end_matches(':').to_owned()]
}

/// The layer index and the prefix that matched.
fn layer_of(path: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, &'static str)> = None;
    for (index, layer) in LAYERS.iter().enumerate() {
        for prefix in *layer {
            let matches = path == *prefix || path.starts_with(&format!("{prefix}::"));
            if matches && best.is_none_or(|(_, b)| prefix.len() > b.len()) {
                best = Some((index, prefix));
            }
        }
    }
    best
}

#[test]
fn every_import_points_down_the_stack() {
    let mut upward = Vec::new();
    for file in source_files() {
        let own = file.module.join("::");
        let Some((own_layer, own_unit)) = layer_of(&own) else {
            continue; // the crate root and the binary sit on top
        };
        for named in named_paths(&file) {
            let Some((layer, unit)) = layer_of(&named) else {
                continue;
            };
            if layer > own_layer || (layer == own_layer && unit != own_unit) {
                upward.push(format!("{}: {own} uses {named}", file.path.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn auth_session_and_store_know_nothing_of_the_engine_or_the_http_layer() {
    let mut found = Vec::new();
    for file in source_files() {
        let top = file.module.first().map(String::as_str).unwrap_or("");
        if !ENGINE_FREE.contains(&top) {
            continue;
        }
        if file.code.contains("pingora") {
            found.push(format!("{}: names pingora", file.path.display()));
        }
        for named in named_paths(&file) {
            let forbidden = ["proxy", "admin", "server", "state", "demo"];
            if forbidden
                .iter()
                .any(|f| named == *f || named.starts_with(&format!("{f}::")))
            {
                found.push(format!("{}: uses {named}", file.path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn sibling_files_never_import_each_other_in_a_circle() {
    let files = source_files();
    // Edges between files of one directory (a directory's `mod.rs` is its
    // parent, not a sibling).
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.join("::")).collect();
    for file in &files {
        let own = file.module.join("::");
        let directory = parent(&file.module).join("::");
        for named in named_paths(file) {
            let sibling = modules
                .iter()
                .filter(|m| *m != &own && parent_of(m) == directory)
                .find(|m| named == **m || named.starts_with(&format!("{m}::")));
            if let Some(sibling) = sibling {
                edges
                    .entry(own.clone())
                    .or_default()
                    .insert(sibling.clone());
            }
        }
    }
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|start| cycle_through(start, &edges))
        .collect();
    assert!(
        cycles.is_empty(),
        "circular imports:\n{}",
        cycles.join("\n")
    );
}

fn parent_of(module: &str) -> String {
    module.rsplit_once("::").map_or("", |(p, _)| p).to_owned()
}

/// A path from `start` back to itself, if there is one.
fn cycle_through(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(trail) = stack.pop() {
        let last = trail.last().expect("non-empty trail");
        for next in edges.get(last).into_iter().flatten() {
            if next == start {
                return Some(format!("{} → {start}", trail.join(" → ")));
            }
            if seen.insert(next.clone()) {
                let mut longer = trail.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_checks_see_an_upward_import_and_a_circle() {
    let file = |module: &str, code: &str| SourceFile {
        path: PathBuf::from(format!("{module}.rs")),
        module: module.split("::").map(str::to_owned).collect(),
        code: without_comments(code),
    };
    let store = file(
        "store::view",
        "use crate::{auth::AuthError, proxy::respond::Refusal};\n// crate::admin\n",
    );
    let named = named_paths(&store);
    assert!(named.contains("proxy::respond::Refusal"), "{named:?}");
    assert!(!named.contains("admin"), "comments are not code: {named:?}");
    assert_eq!(layer_of("proxy::respond::Refusal").map(|l| l.0), Some(8));
    assert!(layer_of("store::view").map(|l| l.0) < Some(8));
    let raw = file("config::raw", "use super::runtime::Runtime;");
    assert_eq!(
        named_paths(&raw).into_iter().collect::<Vec<_>>(),
        ["config::runtime::Runtime"]
    );
    assert!(layer_of("config::raw").map(|l| l.0) < layer_of("config::runtime").map(|l| l.0));
    let edges = BTreeMap::from([
        (
            "proxy::a".to_owned(),
            BTreeSet::from(["proxy::b".to_owned()]),
        ),
        (
            "proxy::b".to_owned(),
            BTreeSet::from(["proxy::a".to_owned()]),
        ),
    ]);
    assert!(cycle_through("proxy::a", &edges).is_some());
}
