//! The layering check: no import circle of more than [`MAX_CIRCLE`] files inside `worker/src`.
//!
//! The files form layers (see ARCHITECTURE.md): state held by the runtime, the runtime, the
//! message path and the loops beside it, the launcher and the builder on top. A reference back
//! down-to-up (`crate::…`, `super::…`) closes a circle; this test fails when a strongly
//! connected component of the file graph grows past [`MAX_CIRCLE`] files, naming its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The largest import circle allowed: 3 files (a file and its one or two close helpers). Today's
/// largest are pairs (`task_api::{handler, params}`, `config::{declare, settings}`). Only ever
/// lower this.
const MAX_CIRCLE: usize = 3;

/// Module path (`message::fetch`, `` for lib.rs) → source, for every `.rs` file under `dir`.
fn modules(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read worker/src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(dir).expect("under worker/src");
            let mut parts: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            let source = std::fs::read_to_string(&path).expect("read a source file");
            out.insert(parts.join("::"), source);
        }
    }
    out
}

/// `source` without `//` comments (doc comments included: their links are no imports).
fn without_comments(source: &str) -> String {
    source
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths named after `prefix` (`crate::`, `super::`): `a::b` and each path of a group
/// `{a, b::{c, d}}`.
fn paths_after(source: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find(prefix) {
        let preceded = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if preceded.is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        collect(rest, String::new(), &mut out);
    }
    out
}

/// The paths at the start of `text` under `base`, into `out`.
fn collect(text: &str, base: String, out: &mut Vec<String>) {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    collect(&group[start..i], base.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    collect(&group[start..i], base.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let end = text.find(|c: char| !is_ident(c)).unwrap_or(text.len());
    if end == 0 {
        if !base.is_empty() {
            out.push(base);
        }
        return;
    }
    let path = if base.is_empty() {
        text[..end].to_string()
    } else {
        format!("{base}::{}", &text[..end])
    };
    match text[end..].strip_prefix("::") {
        Some(more) => collect(more, path, out),
        None => out.push(path),
    }
}

/// The file a path is in: its longest prefix that is a module.
fn resolve<'a>(path: &str, modules: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .find_map(|n| modules.get_key_value(&segments[..n].join("::")))
        .map(|(m, _)| m.as_str())
}

/// Module → the modules it refers to (not itself, not its ancestors).
fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges = BTreeMap::new();
    for (m, source) in modules {
        let source = without_comments(source);
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        let mut to = BTreeSet::new();
        let named = paths_after(&source, "crate::").into_iter().chain(
            paths_after(&source, "super::").into_iter().map(|p| {
                if parent.is_empty() {
                    p
                } else {
                    format!("{parent}::{p}")
                }
            }),
        );
        for path in named {
            if let Some(t) = resolve(&path, modules) {
                if t != m && !t.is_empty() && !m.starts_with(&format!("{t}::")) {
                    to.insert(t);
                }
            }
        }
        edges.insert(m.as_str(), to);
    }
    edges
}

/// The strongly connected components of `edges` (Tarjan's algorithm).
fn components<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct Walk<'a, 'e> {
        edges: &'e BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    impl<'a> Walk<'a, '_> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for &w in &self.edges[v] {
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
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                self.out.push(component);
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.out
}

#[test]
fn no_import_circle_larger_than_max_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    assert!(modules.contains_key("runtime"), "read {}", src.display());
    let edges = edges(&modules);
    let too_big: Vec<_> = components(&edges)
        .into_iter()
        .filter(|c| c.len() > MAX_CIRCLE)
        .collect();
    assert!(
        too_big.is_empty(),
        "import circles of more than {MAX_CIRCLE} files (break them by moving what the lower file needs down a layer): {too_big:?}"
    );
}

#[test]
fn finds_paths_and_circles() {
    let mut paths = paths_after(
        "use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(); my_crate::h; super::i",
        "crate::",
    );
    paths.sort();
    assert_eq!(paths, ["a::b", "a::c::D", "e", "f::g"]);
    let modules: BTreeMap<String, String> = [
        ("a", "use crate::b::X;"),
        ("b", "use crate::c::{Y};"),
        ("c", "crate::a::z(); // crate::d"),
        ("d", "use super::a;"),
        ("e::f", "use super::g;"),
        ("e::g", ""),
        ("e", ""),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_string(), s.to_string()))
    .collect();
    let edges = edges(&modules);
    assert_eq!(edges["d"], BTreeSet::from(["a"]));
    assert_eq!(edges["e::f"], BTreeSet::from(["e::g"]));
    let mut sizes: Vec<_> = components(&edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    sizes.sort();
    assert_eq!(sizes, [vec!["a", "b", "c"]]);
}
