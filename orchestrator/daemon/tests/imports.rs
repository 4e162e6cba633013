//! The daemon's import graph, read from its source: the modules stand in
//! floors (the owner on top, `event` at the bottom), so no module but the
//! crate root imports the owner and no two modules import each other,
//! directly or around a longer circle (ARCHITECTURE.md).
//!
//! A module is a top-level module of the crate (`owner/exec.rs` belongs to
//! `owner`); it imports another when its code (test modules left out)
//! names `crate::OTHER`, in a `use` or in a path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None`: the crate root).
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// The code of a file without its comments and its test modules:
/// everything from a `#[cfg(test)]` line on is a test module (clippy keeps
/// them last).
fn code(text: &str) -> String {
    let text = match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::`: in a
/// path (`crate::probe::run`), or in a grouped `use crate::{a, b::c}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Each item at the top of the group names a module (or an item
            // of the root, which is no module and found in no file).
            let mut depth = 0usize;
            let mut item_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        out.insert(ident(&group[k..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(after));
        }
        rest = after;
    }
    out.retain(|m| !m.is_empty());
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        if let Some(m) = module_of(&root, file) {
            modules.entry(m).or_default();
        }
    }
    for file in &files {
        let Some(m) = module_of(&root, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        let named: BTreeSet<String> = imports(&code(&text))
            .into_iter()
            .filter(|other| *other != m && modules.contains_key(other))
            .collect();
        modules.entry(m).or_default().extend(named);
    }
    modules
}

/// Every circle of the graph: its strongly connected parts of more than
/// one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut part = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    part.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if part.len() > 1 {
                    part.sort();
                    self.out.push(part);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out
}

#[test]
fn imports_are_read_from_paths_and_grouped_uses() {
    let text = "use crate::event::{self, HealthNews};\n\
                use crate::{probe, views::{gpu, status}, metrics::Counters};\n\
                fn f() { crate::store::write(); }\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["event", "metrics", "probe", "store", "views"]);
    assert_eq!(
        code("fn a() {} // crate::owner\n#[cfg(test)]\nmod tests { use crate::owner; }"),
        "fn a() {} "
    );
}

#[test]
fn circles_are_found_when_there_are_some() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
}

#[test]
fn the_daemon_s_modules_import_one_another_in_no_circle() {
    let g = graph();
    assert!(g.len() > 20, "too few modules found: {:?}", g.keys());
    assert!(g["owner"].contains("event"), "the owner imports event");
    let found = circles(&g);
    assert!(found.is_empty(), "modules importing one another: {found:?}");
}

#[test]
fn only_the_crate_root_imports_the_owner() {
    let g = graph();
    let importers: Vec<&String> = g
        .iter()
        .filter(|(m, named)| *m != "owner" && named.contains("owner"))
        .map(|(m, _)| m)
        .collect();
    assert!(
        importers.is_empty(),
        "modules importing the owner: {importers:?}"
    );
}
