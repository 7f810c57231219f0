//! The module graph is a stack: every `crate::` or `super::` path in `src/`
//! points to a lower layer or stays inside its own, `auth`, `session` and
//! `store` never name pingora or the layers above them, and within any
//! directory the modules beside each other (a subdirectory counting as one)
//! never import each other in a circle. The source is read as text, so a
//! new import that points up fails here rather than in a reviewer's head.
//!
//! A file's own unit tests are left out (their `super` is the file), and so
//! are a child's uses of its parent's `mod.rs` (a module's children using
//! the types it declares is how Rust modules are built).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use what is listed before it, and its own
/// unit; the longest matching prefix names a path's unit.
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

/// What the engine-free layers may not name, besides pingora.
const ABOVE_ENGINE_FREE: &[&str] = &[
    "config::runtime",
    "config::compile",
    "state",
    "proxy",
    "admin",
    "server",
    "demo",
];

struct SourceFile {
    path: PathBuf,
    /// `proxy::endpoints::token` for `src/proxy/endpoints/token.rs`.
    module: Vec<String>,
    /// The file without its comments and its unit-test module.
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
            let module = module_of(relative);
            let text = std::fs::read_to_string(&path).expect("read source");
            files.push(SourceFile {
                path,
                module,
                code: code_of(&text),
            });
        }
    }
}

fn module_of(relative: &Path) -> Vec<String> {
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
    module
}

/// The code a file's imports are read from: comments dropped, and every
/// `#[cfg(test)] mod … { … }` block (unit tests) left out.
fn code_of(text: &str) -> String {
    let code = without_comments(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let opens_tests = lines[i].trim() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|l| l.trim_start().starts_with("mod "));
        if !opens_tests {
            kept.push(lines[i]);
            i += 1;
            continue;
        }
        // Skip to the line that closes the module's brace.
        let mut depth = 0i32;
        i += 1;
        while i < lines.len() {
            depth += lines[i].matches('{').count() as i32 - lines[i].matches('}').count() as i32;
            i += 1;
            if depth <= 0 && lines[i - 1].contains('}') {
                break;
            }
        }
    }
    kept.join("\n")
}

/// Drops `//` comments (doc comments included) outside string and char
/// literals; a string may run over several lines.
fn without_comments(text: &str) -> String {
    let mut in_string = false;
    text.lines()
        .map(|line| {
            let bytes = line.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                match (bytes[i], in_string) {
                    (b'\\', true) => i += 1, // the escaped byte is skipped too
                    (b'"', _) => in_string = !in_string,
                    (b'\'', false) if bytes.get(i + 2) == Some(&b'\'') => i += 2,
                    (b'\'', false) if bytes.get(i + 1) == Some(&b'\\') => i += 3,
                    (b'/', false) if bytes.get(i + 1) == Some(&b'/') => return &line[..i],
                    _ => {}
                }
                i += 1;
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file names, absolute (`config::runtime::router`),
/// from `crate::…` and `super::…` (repeated `super`s too), with `use`
/// groups expanded at any depth.
fn named_paths(file: &SourceFile) -> BTreeSet<String> {
    let code = file.code.as_str();
    let mut paths = Vec::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let preceded_by_path = code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        if preceded_by_path {
            continue; // the tail of a longer path, read from its start
        }
        let mut rest = &code[at..];
        let mut base = Vec::new();
        if let Some(tail) = rest.strip_prefix("crate::") {
            rest = tail;
        } else {
            base = file.module.clone();
            while let Some(tail) = rest.strip_prefix("super::") {
                base.pop();
                rest = tail;
            }
        }
        use_tree(rest, &base.join("::"), &mut paths);
    }
    paths.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Reads one use tree (`a::b::C`, `a::{b, c::{d, e}}`, `{a, b}`) at the
/// start of `text`, below `base`, into `out`; returns the bytes read.
fn use_tree(text: &str, base: &str, out: &mut Vec<String>) -> usize {
    let join = |segment: &str| match base {
        "" => segment.to_owned(),
        _ => format!("{base}::{segment}"),
    };
    let skipped = text.len() - text.trim_start().len();
    let rest = &text[skipped..];
    if rest.starts_with('{') {
        return skipped + use_group(rest, base, out);
    }
    let ident: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        out.push(base.to_owned());
        return skipped;
    }
    let path = join(&ident);
    let after = &rest[ident.len()..];
    match after.strip_prefix("::") {
        Some(tail) => skipped + ident.len() + 2 + use_tree(tail, &path, out),
        None => {
            out.push(path);
            skipped + ident.len()
        }
    }
}

/// `{a, b::c, d::{e}}` at the start of `text`; returns the bytes read.
fn use_group(text: &str, base: &str, out: &mut Vec<String>) -> usize {
    let mut at = 1;
    while at < text.len() {
        let rest = &text[at..];
        let skipped = rest.len() - rest.trim_start().len();
        at += skipped;
        match text[at..].chars().next() {
            Some('}') => return at + 1,
            Some(',') => at += 1,
            Some(other) => {
                let read = use_tree(&text[at..], base, out);
                at += read.max(other.len_utf8());
                at += alias_len(&text[at..]);
            }
            None => break,
        }
    }
    at
}

/// The length of an ` as name` rename at the start of `text`, or 0.
fn alias_len(text: &str) -> usize {
    let trimmed = text.trim_start();
    let Some(rest) = trimmed.strip_prefix("as ") else {
        return 0;
    };
    let name = rest.trim_start();
    let ident = name
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .count();
    text.len() - name.len() + ident
}

/// What each module re-exports from its children (`pub use child::Name`
/// in a `mod.rs`): `auth::Keyring` → `auth::keys::Keyring`, so an import
/// through a parent is an edge to the child that defines it.
fn re_exports(files: &[SourceFile]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for file in files {
        let module = file.module.join("::");
        for (at, _) in file.code.match_indices("pub use ") {
            let mut paths = Vec::new();
            use_tree(&file.code[at + "pub use ".len()..], &module, &mut paths);
            for path in paths {
                let Some((_, name)) = path.rsplit_once("::") else {
                    continue;
                };
                let short = match module.as_str() {
                    "" => name.to_owned(),
                    _ => format!("{module}::{name}"),
                };
                if short != path {
                    map.insert(short, path);
                }
            }
        }
    }
    map
}

/// `path` with a re-exported prefix replaced by where it is defined.
fn defined_at(path: &str, exports: &BTreeMap<String, String>) -> String {
    exports
        .iter()
        .filter(|(short, _)| within(path, short))
        .max_by_key(|(short, _)| short.len())
        .map_or_else(
            || path.to_owned(),
            |(short, full)| format!("{full}{}", &path[short.len()..]),
        )
}

/// The layer index and the unit (prefix) that matched.
fn layer_of(path: &str) -> Option<(usize, &'static str)> {
    let mut best: Option<(usize, &'static str)> = None;
    for (index, layer) in LAYERS.iter().enumerate() {
        for prefix in *layer {
            if within(path, prefix) && best.is_none_or(|(_, b)| prefix.len() > b.len()) {
                best = Some((index, prefix));
            }
        }
    }
    best
}

/// Whether `path` is `module` or inside it.
fn within(path: &str, module: &str) -> bool {
    path == module
        || path
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with("::"))
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
fn auth_session_and_store_know_nothing_of_the_engine_or_the_layers_above() {
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
            if ABOVE_ENGINE_FREE.iter().any(|above| within(&named, above)) {
                found.push(format!("{}: uses {named}", file.path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn modules_side_by_side_never_import_each_other_in_a_circle() {
    let files = source_files();
    let modules: BTreeSet<String> = files.iter().map(|f| f.module.join("::")).collect();
    let mut cycles = BTreeSet::new();
    // The crate root's children are ordered by `LAYERS`, checked above
    // (where `config::raw` sits below `auth` though `config` is above it).
    for directory in modules.iter().filter(|m| !m.is_empty()) {
        let edges = edges_within(directory, &files, &modules);
        for start in edges.keys() {
            if let Some(cycle) = cycle_through(start, &edges) {
                cycles.insert(format!("in {directory}: {cycle}"));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "circular imports:\n{}",
        cycles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// Imports between the children of `directory`, each child standing for
/// everything under it; the directory's own file is not a child.
fn edges_within(
    directory: &str,
    files: &[SourceFile],
    modules: &BTreeSet<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let child_of = |path: &str| -> Option<String> {
        let rest = match directory {
            "" => path,
            _ => path.strip_prefix(directory)?.strip_prefix("::")?,
        };
        let first = rest.split("::").next()?;
        let child = match directory {
            "" => first.to_owned(),
            _ => format!("{directory}::{first}"),
        };
        modules.contains(&child).then_some(child)
    };
    let exports = re_exports(files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = child_of(&file.module.join("::")) else {
            continue;
        };
        for named in named_paths(file) {
            let named = defined_at(&named, &exports);
            if let Some(to) = child_of(&named).filter(|to| *to != from) {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A path from `start` back to itself, if there is one.
fn cycle_through(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(trail) = stack.pop() {
        let last = trail.last().expect("non-empty trail");
        for next in edges.get(last).into_iter().flatten() {
            if next == start {
                let mut members = trail.clone();
                // One report per circle, whichever member it is found from.
                let smallest = members.iter().min().cloned().unwrap_or_default();
                while members[0] != smallest {
                    members.rotate_left(1);
                }
                members.push(members[0].clone());
                return Some(members.join(" → "));
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

fn file(module: &str, code: &str) -> SourceFile {
    SourceFile {
        path: PathBuf::from(format!("{module}.rs")),
        module: module.split("::").map(str::to_owned).collect(),
        code: code_of(code),
    }
}

fn names(module: &str, code: &str) -> Vec<String> {
    named_paths(&file(module, code)).into_iter().collect()
}

#[test]
fn the_reader_sees_paths_in_every_spelling() {
    assert_eq!(
        names(
            "store::view",
            "use crate::{config::{raw::X, Y}, proxy::respond::Refusal};"
        ),
        ["config::Y", "config::raw::X", "proxy::respond::Refusal"]
    );
    assert_eq!(
        names("store::view", "let r = super::super::proxy::x(1);"),
        ["proxy::x"]
    );
    assert_eq!(
        names("config::raw", "use super::runtime::Runtime;"),
        ["config::runtime::Runtime"]
    );
    assert_eq!(
        names(
            "store::view",
            "use crate::store::{self, follower};\n// crate::admin\nlet s = \"// x\"; crate::proxy::y();"
        ),
        ["proxy::y", "store::follower", "store::self"]
    );
    assert_eq!(
        names(
            "proxy::cors",
            "let q = '\"'; use crate::{a::B as C, d};  // crate::e"
        ),
        ["a::B", "d"]
    );
    let hidden = "// #[cfg(test)]\nuse crate::proxy::a;\n#[cfg(test)]\nfn helper() {}\nuse crate::proxy::b;\n#[cfg(test)]\nmod tests {\n    use crate::proxy::c;\n    fn f() { g({1}); }\n}\nuse crate::proxy::d;";
    assert_eq!(
        names("store::view", hidden),
        ["proxy::a", "proxy::b", "proxy::d"]
    );
}

#[test]
fn the_checks_see_an_upward_import_and_a_circle() {
    assert_eq!(
        layer_of("proxy::respond::Refusal").map(|l| l.1),
        Some("proxy")
    );
    assert!(layer_of("store::view") < layer_of("proxy::respond"));
    assert!(layer_of("config::raw") < layer_of("auth"));
    assert!(layer_of("auth") < layer_of("config::runtime"));
    let files = [
        file("proxy::cors", "use super::endpoints::endpoint_for;"),
        file("proxy::endpoints", "pub mod login;"),
        file("proxy::endpoints::login", "use crate::proxy::cors::strip;"),
    ];
    let modules = files.iter().map(|f| f.module.join("::")).collect();
    let edges = edges_within("proxy", &files, &modules);
    assert_eq!(
        cycle_through("proxy::cors", &edges).as_deref(),
        Some("proxy::cors → proxy::endpoints → proxy::cors")
    );
    // Through a parent's re-export: `super::Keyring` is `auth::keys`.
    let files = [
        file("auth", "mod keys; mod verify; pub use keys::Keyring;"),
        file("auth::keys", "use super::verify::check;"),
        file("auth::verify", "use super::Keyring;"),
    ];
    let modules = files.iter().map(|f| f.module.join("::")).collect();
    let edges = edges_within("auth", &files, &modules);
    assert_eq!(
        cycle_through("auth::keys", &edges).as_deref(),
        Some("auth::keys → auth::verify → auth::keys")
    );
}
