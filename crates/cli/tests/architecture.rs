//! The layout ARCHITECTURE.md promises, checked on the sources: inside every crate each file
//! imports only files below it (no circle through `crate::` paths, re-exports of the crate root
//! followed to their module), and no library crate prints (binaries and the Python module do).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use patchtcga_testkit::repo_root;

/// The crates whose job is a terminal's: they may print.
const BINARIES: [&str; 2] = ["cli", "nn"];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` tail.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level module a file of `src` belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// The first names of the paths after each `crate::` in `code` (`crate::{a::B, c}` → a, c).
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(group[start..i].trim_start()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(group[start..i].trim_start()));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// Names the crate root re-exports, with the module each comes from (`pub use m::{A, B}`).
fn reexports(root: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for stmt in root.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else { continue };
        let Some((module, names)) = rest.split_once("::") else { continue };
        for name in names.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|n| !n.is_empty()) {
            out.insert(name.to_owned(), module.to_owned());
        }
    }
    out
}

/// Module → the modules of the same crate it imports.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let root: String = files.iter().filter(|f| module_of(src, f).is_none()).map(|f| code(f)).collect();
    let reexported = reexports(&root);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(src, file) else { continue };
        let deps = graph.entry(module.clone()).or_default();
        for name in crate_paths(&code(file)) {
            let target = if modules.contains(&name) { Some(name) } else { reexported.get(&name).cloned() };
            if let Some(t) = target.filter(|t| *t != module) {
                deps.insert(t);
            }
        }
    }
    graph
}

/// A circle of `graph`, if it has one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some([&path[at..], &[node.to_owned()]].concat());
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn crates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        fs::read_dir(repo_root().join("crates")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[test]
fn no_crate_has_a_circle_of_imports_among_its_files() {
    let mut checked = 0;
    for dir in crates() {
        let graph = imports(&dir.join("src"));
        assert!(circle(&graph).is_none(), "{}: files import each other: {:?}", dir.display(), circle(&graph));
        checked += graph.len();
    }
    assert!(checked > 100, "only {checked} modules found");
    // The check sees a circle where there is one.
    let mut looped = BTreeMap::new();
    looped.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    looped.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(circle(&looped), Some(vec!["a".into(), "b".into(), "a".into()]));
    assert_eq!(crate_paths("use crate::{a::B, c, d::{E, F}};\nlet x = crate::g::h();"), ["a", "c", "d", "g"]);
}

#[test]
fn library_crates_print_nothing() {
    let mut offenders = Vec::new();
    for dir in crates().into_iter().filter(|d| !BINARIES.iter().any(|b| d.ends_with(b))) {
        for file in sources(&dir.join("src")) {
            let code = code(&file);
            if ["println!", "eprintln!", "print!(", "eprint!("].iter().any(|m| code.contains(m)) {
                offenders.push(file.display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "library files that print (report through a callback instead): {offenders:?}");
}
