//! The module graph is a stack: every module of `src/` has a layer, every
//! path it names (`crate::`, `super::`, `self::`, or a `use` relative to
//! the module) points to a lower layer or stays inside its own, `auth`,
//! `session` and `store` never name pingora or the layers above them, and
//! within any directory the modules beside each other (a subdirectory
//! counting as one, and the directory's own `mod.rs` as one more) never
//! import each other in a circle. The source is read as text, so a new
//! import that points up fails here rather than in a reviewer's head; a
//! path the reader cannot resolve to a module and an item declared there
//! fails too, so a spelling the reader does not follow cannot hide an edge.
//!
//! A file's own unit tests are left out (their `super` is the file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use what is listed before it, and its own
/// unit; the longest matching prefix names a path's unit.
const LAYERS: &[&[&str]] = &[
    &["vocabulary", "clock"],
    &["metrics", "config::duration"],
    &["config::raw"],
    &["log_queue"],
    &["log_line"],
    &["telemetry"],
    &["audit"],
    &["auth"],
    &["store"],
    &["session"],
    &["config", "keygen"],
    &["state"],
    &["proxy"],
    &["admin"],
    &["server"],
    &["demo"],
    &["main"],
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
    /// Every name the file declares or brings in with `use` (`*` when it
    /// has a glob import): what a path may name inside this module.
    declared: BTreeSet<String>,
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
            files.push(SourceFile::new(path, module, &text));
        }
    }
}

impl SourceFile {
    fn new(path: PathBuf, module: Vec<String>, text: &str) -> Self {
        let code = code_of(text);
        // The unit tests' imports are left out of the edges, but what the
        // file declares is read from all of it.
        let declared = declared_names(&without_comments(text));
        Self {
            path,
            module,
            code,
            declared,
        }
    }
}

/// `proxy::edge` for `proxy/edge.rs`, `proxy` for `proxy/mod.rs`, the
/// crate root for `lib.rs`; the binary's `main.rs` is the module `main`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut module: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
        module.pop();
    }
    module
}

/// Where a `use` keyword starts a statement in `code`: the text after it.
fn use_statements(code: &str) -> impl Iterator<Item = &str> {
    use_statements_at(code).map(|(_, text)| text)
}

/// `use_statements`, each with the offset of its `use` keyword.
fn use_statements_at(code: &str) -> impl Iterator<Item = (usize, &str)> {
    code.match_indices("use ").filter_map(move |(at, _)| {
        let starts_statement = code[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '{' | '}' | ';' | ')'));
        starts_statement.then(|| (at, &code[at + "use ".len()..]))
    })
}

/// Whether the `use` at `at` is a re-export (`pub use`, `pub(crate) use`).
fn is_re_export(code: &str, at: usize) -> bool {
    let before = code[..at].trim_end();
    let before = match before.strip_suffix(')') {
        Some(rest) => rest.rsplit_once('(').map_or(rest, |(head, _)| head),
        None => before,
    };
    before.trim_end().ends_with("pub")
}

/// Whether `name` is used as a word in `code` outside its `use` statements.
fn used_outside_uses(code: &str, name: &str) -> bool {
    let rest = outside_uses(code);
    rest.match_indices(name).any(|(at, _)| {
        let word_char = |c: char| c.is_alphanumeric() || c == '_';
        let before = rest[..at].chars().next_back().is_some_and(word_char);
        let after = rest[at + name.len()..]
            .chars()
            .next()
            .is_some_and(word_char);
        !before && !after
    })
}

/// `mod name;`, with any visibility.
fn is_mod_declaration(line: &str) -> bool {
    let line = line.trim();
    line.ends_with(';')
        && (line.starts_with("mod ") || line.starts_with("pub") && line.contains(" mod "))
}

/// `code` without its `use` statements and module declarations.
fn outside_uses(code: &str) -> String {
    let mut rest = String::with_capacity(code.len());
    let mut from = 0;
    for (at, text) in use_statements_at(code) {
        if at < from {
            continue;
        }
        rest.push_str(&code[from..at]);
        from = at + "use ".len() + text.find(';').map_or(text.len(), |end| end + 1);
    }
    rest.push_str(&code[from.min(code.len())..]);
    // A module's declaration names it without using it.
    rest.lines()
        .filter(|line| !is_mod_declaration(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifier at the start of `text` (after white space).
fn leading_ident(text: &str) -> &str {
    let text = text.trim_start();
    let len = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .map(char::len_utf8)
        .sum();
    &text[..len]
}

/// Item names a file declares and the names its `use` statements bring in
/// (the last segment of each path, or its alias).
fn declared_names(code: &str) -> BTreeSet<String> {
    const ITEMS: [&str; 10] = [
        "fn ",
        "struct ",
        "enum ",
        "const ",
        "static ",
        "type ",
        "trait ",
        "mod ",
        "union ",
        "macro_rules! ",
    ];
    let mut names = BTreeSet::new();
    for keyword in ITEMS {
        for (at, _) in code.match_indices(keyword) {
            let after_ident = code[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !after_ident {
                names.insert(leading_ident(&code[at + keyword.len()..]).to_owned());
            }
        }
    }
    for statement in use_statements(code) {
        let statement = statement.split(';').next().unwrap_or("");
        if statement.contains('*') {
            names.insert("*".to_owned());
        }
        let mut paths = Vec::new();
        use_tree(statement, "", &mut paths);
        names.extend(
            paths
                .iter()
                .filter_map(|p| p.rsplit("::").next().map(str::to_owned)),
        );
        for (at, _) in statement.match_indices(" as ") {
            names.insert(leading_ident(&statement[at + " as ".len()..]).to_owned());
        }
    }
    names.remove("");
    names
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
/// from `crate::…`, `self::…` and `super::…` (repeated `super`s too), with
/// `use` groups expanded at any depth.
fn named_paths(file: &SourceFile) -> BTreeSet<String> {
    let code = file.code.as_str();
    let mut paths = Vec::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
        .chain(code.match_indices("self::"))
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
        } else if let Some(tail) = rest.strip_prefix("self::") {
            base = file.module.clone();
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

/// The paths of `use` statements relative to the file's own module
/// (`use respond::Refusal;` in `proxy/mod.rs`), each with its first
/// segment: that may also be an external crate or a name the file declares.
fn relative_uses(file: &SourceFile) -> Vec<(String, String)> {
    let own = file.module.join("::");
    let mut found = Vec::new();
    for (at, statement) in use_statements_at(&file.code) {
        let statement = statement.trim_start();
        let re_export = is_re_export(&file.code, at);
        let first = leading_ident(statement);
        if first.is_empty() || matches!(first, "crate" | "super" | "self") {
            continue; // read by `named_paths`, or a `use ::x` of an extern
        }
        let mut paths = Vec::new();
        use_tree(statement, &own, &mut paths);
        // A re-export the module's own code never uses is its public face,
        // not a dependency of its code: `pub use keys::Keyring;` in
        // `auth/mod.rs` while `keys` uses `super::unix_now`. One it uses
        // is an import like any other.
        let leaf = |p: &String| p.rsplit("::").next().unwrap_or("").to_owned();
        paths.retain(|p| !re_export || used_outside_uses(&file.code, &leaf(p)));
        found.extend(paths.into_iter().map(|p| (first.to_owned(), p)));
    }
    found
}

/// What the reader knows of the crate: each module with the names it
/// declares, and the external crates a `use` may start with.
struct Crate {
    declared: BTreeMap<String, BTreeSet<String>>,
    externs: BTreeSet<String>,
}

impl Crate {
    fn of(files: &[SourceFile]) -> Self {
        let mut declared: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            declared
                .entry(file.module.join("::"))
                .or_default()
                .extend(file.declared.iter().cloned());
        }
        Self {
            declared,
            externs: extern_crates(),
        }
    }

    /// The paths `file` names that lead into the crate, and the ones that
    /// lead nowhere the reader knows (neither a module with an item it
    /// declares, nor an external crate).
    fn imports(&self, file: &SourceFile) -> (BTreeSet<String>, Vec<String>) {
        let mut paths = BTreeSet::new();
        let mut unresolved = Vec::new();
        for path in named_paths(file) {
            match self.resolves(&path) {
                true => paths.insert(path),
                false => {
                    unresolved.push(path);
                    true
                }
            };
        }
        let own = file.module.join("::");
        for path in self.child_paths(file) {
            paths.insert(path);
        }
        for (first, path) in relative_uses(file) {
            let child = join(&own, &first);
            if self.declared.contains_key(&child) && self.resolves(&path) {
                paths.insert(path);
            } else if !self.externs.contains(&first) && !file.declared.contains(&first) {
                unresolved.push(path);
            }
        }
        (paths, unresolved)
    }

    /// Paths through a child module named without `use`
    /// (`client_addr::ClientAddress` in a field's type in `proxy/mod.rs`).
    fn child_paths(&self, file: &SourceFile) -> Vec<String> {
        let own = file.module.join("::");
        let code = outside_uses(&file.code);
        let code = code.as_str();
        let mut paths = Vec::new();
        for child in self.declared.keys().filter_map(|m| child_name(&own, m)) {
            for (at, _) in code.match_indices(&format!("{child}::")) {
                let preceded_by_path = code[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                if !preceded_by_path {
                    use_tree(&code[at..], &own, &mut paths);
                }
            }
        }
        paths.retain(|p| self.resolves(p));
        paths
    }

    /// Whether `path` is a module, or a module and a name it declares.
    fn resolves(&self, path: &str) -> bool {
        let module = self
            .declared
            .keys()
            .filter(|m| m.is_empty() || within(path, m))
            .max_by_key(|m| m.len())
            .map_or("", String::as_str);
        let rest = match module {
            "" => path,
            _ => path[module.len()..].trim_start_matches(':'),
        };
        let item = rest.split("::").next().unwrap_or("");
        let names = self.declared.get(module);
        let declares = |name: &str| names.is_some_and(|n| n.contains(name));
        item.is_empty() || item == "self" || declares(item) || declares("*")
    }
}

/// The name of `module` within `parent` when it is a direct child.
fn child_name<'m>(parent: &str, module: &'m str) -> Option<&'m str> {
    let rest = match parent {
        "" => module,
        _ => module.strip_prefix(parent)?.strip_prefix("::")?,
    };
    (!rest.is_empty() && !rest.contains("::")).then_some(rest)
}

fn join(base: &str, segment: &str) -> String {
    match base {
        "" => segment.to_owned(),
        _ => format!("{base}::{segment}"),
    }
}

/// The crates a path may start with: the standard library's, this
/// package's own (for `main.rs`) and every dependency in `Cargo.toml`.
fn extern_crates() -> BTreeSet<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = std::fs::read_to_string(manifest).expect("read Cargo.toml");
    let manifest: toml::Table = text.parse().expect("Cargo.toml parses");
    let mut crates: BTreeSet<String> = ["std", "core", "alloc", "portcullis"]
        .map(str::to_owned)
        .into();
    for table in ["dependencies", "dev-dependencies"] {
        if let Some(deps) = manifest.get(table).and_then(toml::Value::as_table) {
            crates.extend(deps.keys().map(|name| name.replace('-', "_")));
        }
    }
    crates
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
        for (at, text) in use_statements_at(&file.code) {
            if !is_re_export(&file.code, at) {
                continue;
            }
            let mut paths = Vec::new();
            match text.trim_start().strip_prefix("crate::") {
                Some(absolute) => use_tree(absolute, "", &mut paths),
                None => use_tree(text, &module, &mut paths),
            };
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

/// Modules of `files` that no layer lists (the crate root, `lib.rs`, sits
/// above them all and needs none).
fn unlayered(files: &[SourceFile]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.module.join("::"))
        .filter(|module| !module.is_empty() && layer_of(module).is_none())
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let missing = unlayered(&source_files());
    assert!(missing.is_empty(), "modules with no layer: {missing:?}");
}

#[test]
fn every_named_path_resolves() {
    let files = source_files();
    let krate = Crate::of(&files);
    let mut unresolved = Vec::new();
    for file in &files {
        for path in krate.imports(file).1 {
            unresolved.push(format!("{}: {path}", file.path.display()));
        }
    }
    assert!(
        unresolved.is_empty(),
        "paths that lead to no module and item:\n{}",
        unresolved.join("\n")
    );
}

#[test]
fn every_import_points_down_the_stack() {
    let files = source_files();
    let krate = Crate::of(&files);
    let mut upward = Vec::new();
    for file in &files {
        let own = file.module.join("::");
        let Some((own_layer, own_unit)) = layer_of(&own) else {
            continue; // the crate root sits on top
        };
        for named in krate.imports(file).0 {
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
    let files = source_files();
    let krate = Crate::of(&files);
    let mut found = Vec::new();
    for file in &files {
        let top = file.module.first().map(String::as_str).unwrap_or("");
        if !ENGINE_FREE.contains(&top) {
            continue;
        }
        if file.code.contains("pingora") {
            found.push(format!("{}: names pingora", file.path.display()));
        }
        for named in krate.imports(file).0 {
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
/// everything under it, and the directory's own file (its `mod.rs`) one
/// node more: a child using what `mod.rs` declares while `mod.rs` uses the
/// child is a circle like any other.
fn edges_within(
    directory: &str,
    files: &[SourceFile],
    modules: &BTreeSet<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let node_of = |path: &str| -> Option<String> {
        let rest = match directory {
            "" => path,
            _ if path == directory => return Some(directory.to_owned()),
            _ => path.strip_prefix(directory)?.strip_prefix("::")?,
        };
        let child = join(directory, rest.split("::").next()?);
        match modules.contains(&child) {
            true => Some(child),
            // An item of the directory's own file.
            false => (!directory.is_empty()).then(|| directory.to_owned()),
        }
    };
    let krate = Crate::of(files);
    let exports = re_exports(files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = node_of(&file.module.join("::")) else {
            continue;
        };
        for named in krate.imports(file).0 {
            let named = defined_at(&named, &exports);
            if let Some(to) = node_of(&named).filter(|to| *to != from) {
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
    SourceFile::new(
        PathBuf::from(format!("{module}.rs")),
        module.split("::").map(str::to_owned).collect(),
        code,
    )
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
        file(
            "proxy::cors",
            "use super::endpoints::endpoint_for; pub fn strip() {}",
        ),
        file(
            "proxy::endpoints",
            "pub mod login; pub fn endpoint_for() {}",
        ),
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
        file(
            "auth::keys",
            "use super::verify::check; pub struct Keyring;",
        ),
        file("auth::verify", "use super::Keyring; pub fn check() {}"),
    ];
    let modules = files.iter().map(|f| f.module.join("::")).collect();
    let edges = edges_within("auth", &files, &modules);
    assert_eq!(
        cycle_through("auth::keys", &edges).as_deref(),
        Some("auth::keys → auth::verify → auth::keys")
    );
}

/// The holes a reader of text can fall into, each shown to be closed.
#[test]
fn a_module_no_layer_lists_fails() {
    let files = [
        file("log_queue", "pub fn push() {}"),
        file("newcomer", "use crate::log_queue::push;"),
    ];
    assert_eq!(unlayered(&files), ["newcomer"]);
}

#[test]
fn a_circle_through_a_directorys_own_mod_rs_is_seen() {
    let files = [
        file(
            "proxy",
            "pub mod client_addr;\npub struct Context { client: client_addr::Address }",
        ),
        file(
            "proxy::client_addr",
            "use super::Context;\npub struct Address;",
        ),
    ];
    let modules = files.iter().map(|f| f.module.join("::")).collect();
    let edges = edges_within("proxy", &files, &modules);
    assert_eq!(
        cycle_through("proxy", &edges).as_deref(),
        Some("proxy → proxy::client_addr → proxy")
    );
}

#[test]
fn relative_and_self_paths_are_read() {
    let files = [
        file(
            "proxy",
            "pub mod respond;\nuse respond::Refusal;\nuse self::respond::ERROR;\nuse std::sync::Arc;",
        ),
        file("proxy::respond", "pub struct Refusal; pub const ERROR: &str = \"\";"),
    ];
    let krate = Crate::of(&files);
    let (paths, unresolved) = krate.imports(&files[0]);
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        ["proxy::respond::ERROR", "proxy::respond::Refusal"]
    );
    assert!(unresolved.is_empty(), "{unresolved:?}");
}

#[test]
fn a_path_the_reader_cannot_resolve_fails() {
    let files = [
        file("proxy", "pub mod respond; pub struct Gateway;"),
        file("proxy::respond", "pub struct Refusal;"),
        file(
            "store",
            "use crate::nowhere::Thing;\nuse crate::proxy::Missing;\nuse me::proxy::Gateway;\nuse crate::proxy::respond::Refusal;",
        ),
    ];
    let krate = Crate::of(&files);
    let (paths, unresolved) = krate.imports(&files[2]);
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        ["proxy::respond::Refusal"]
    );
    assert_eq!(
        unresolved,
        [
            "nowhere::Thing",
            "proxy::Missing",
            "store::me::proxy::Gateway"
        ]
    );
}

#[test]
fn names_a_file_declares_or_imports_are_known() {
    let declared = declared_names(
        "pub(crate) fn a() {}\nstruct B;\nuse x::{C, D as E};\nenum F { G }\nuse y::*;\nconst fn h() {}",
    );
    for name in ["a", "B", "C", "D", "E", "F", "*", "h"] {
        assert!(declared.contains(name), "{name} in {declared:?}");
    }
}
