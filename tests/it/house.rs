//! The house's structure, checked over the source files: no import circle between `src/`
//! modules, no import from a lower floor to a higher one (the floors written once, in
//! [`FLOORS`]), and the places that exist once: the accept loop, the exchange's end, the
//! walk over a plan's names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors of `src/`, top first: a module may import only from its own floor or below.
/// Cross-cutting modules stand on the floor of what they import. A new module goes here.
const FLOORS: &[&[&str]] = &[
    &["main"],
    &["lib", "lambda", "reload"],
    &["explain", "admin", "env"],
    &["server"],
    &["transparent"],
    &["proxy"],
    &["outcome", "runtime", "ready", "probe", "iptables"],
    &["upstream", "auth"],
    &["routes", "error", "policy"],
    &["config", "conn", "metrics"],
    &["target", "glob", "logging", "test_util"],
];

/// `src/` files (unit tests left out) by module path: `upstream::walk`, `lib`, `main`.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, root, out);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .expect("below src")
                .to_string_lossy()
                .into_owned();
            if !rel.ends_with(".rs") || rel.ends_with("tests.rs") || rel.contains("/tests/") {
                continue;
            }
            out.insert(rel.trim_end_matches(".rs").replace('/', "::"), path);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    assert!(out.len() > 30, "found the sources: {:?}", out.keys());
    out
}

/// The code of a file: comments out, and the unit tests at its end.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path written after `prefix` (`crate::`, `super::`), braces of a `use` expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect::<String>()
            .trim_end_matches(':')
            .to_owned()
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            let mut level = 0;
            let mut start = 0;
            for (j, c) in group[..end].char_indices() {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        out.push(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
            out.push(ident(group[start..end].trim()));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// The module a path names: its longest prefix that is a module of `src/`.
fn resolve(path: &str, modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains_key(m))
}

/// Module -> the modules it imports (`crate::`, `super::`, `self::`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut graph = BTreeMap::new();
    for (module, path) in &modules {
        let code = code(path);
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let own = if module == "lib" || module == "main" {
            ""
        } else {
            module.as_str()
        };
        let mut to = BTreeSet::new();
        let named = paths_after(&code, "crate::")
            .into_iter()
            .chain(paths_after(&code, "super::").into_iter().map(|p| join(parent, &p)))
            .chain(paths_after(&code, "self::").into_iter().map(|p| join(own, &p)));
        for p in named {
            if let Some(m) = resolve(&p, &modules).filter(|m| m != module) {
                to.insert(m);
            }
        }
        // A child module named bare (`mod cache;` then `cache::Cache`).
        let children = modules.keys().filter_map(|m| {
            let rest = if own.is_empty() {
                Some(m.as_str())
            } else {
                m.strip_prefix(own)?.strip_prefix("::")
            };
            rest.filter(|r| !r.contains("::"))
        });
        for child in children {
            let named = paths_after(&code, &format!("{child}::"));
            if !named.is_empty() || code.contains(&format!("use {child}::")) {
                to.insert(join(own, child));
            }
        }
        graph.insert(module.clone(), to);
    }
    graph
}

fn join(base: &str, path: &str) -> String {
    if base.is_empty() {
        path.to_owned()
    } else {
        format!("{base}::{path}")
    }
}

/// A circle through `start`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn dfs(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    dfs(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

/// A module and the submodules of its folder are one room: a child naming its parent's items
/// (or the parent re-exporting the child's) is how Rust shapes a module, not an import
/// between rooms. Circles are looked for between rooms, at every level.
fn between_rooms(graph: BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let related = |a: &str, b: &str| a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
    graph
        .into_iter()
        .map(|(m, to)| {
            let to = to.into_iter().filter(|t| !related(&m, t)).collect();
            (m, to)
        })
        .collect()
}

#[test]
fn no_import_circle_between_modules() {
    let graph = between_rooms(imports());
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle(&graph, m))
        .map(|c| format!("{} -> {}", c.join(" -> "), c[0]))
        .collect();
    assert!(
        circles.is_empty(),
        "modules that import each other in a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn no_import_runs_back_up_the_floors() {
    let floor = |module: &str| {
        let top = module.split("::").next().unwrap_or_default();
        FLOORS
            .iter()
            .position(|f| f.contains(&top))
            .unwrap_or_else(|| panic!("module `{top}` stands on no floor: add it to FLOORS"))
    };
    let mut upward = Vec::new();
    for (module, to) in imports() {
        for target in to {
            if floor(&target) < floor(&module) {
                upward.push(format!("{module} -> {target}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a lower floor to a higher one:\n{}",
        upward.join("\n")
    );
}

/// The `src/` files whose code contains `needle`.
fn files_with(needle: &str) -> Vec<String> {
    modules()
        .into_iter()
        .filter(|(_, path)| code(path).contains(needle))
        .map(|(module, _)| module)
        .collect()
}

#[test]
fn the_places_that_exist_once() {
    assert_eq!(
        files_with("Ended {"),
        ["outcome"],
        "how an exchange ended is made only by outcome::Exchange"
    );
    assert_eq!(
        files_with(".accept()"),
        ["admin", "server"],
        "one accept loop serves the proxy and transparent listeners (the admin listener has its own)"
    );
    assert_eq!(
        files_with(".candidates("),
        ["upstream::walk"],
        "a plan's names are located and walked in one place"
    );
}

#[test]
fn errors_are_types_not_strings() {
    let stringly: Vec<String> = modules()
        .into_iter()
        .filter(|(_, path)| {
            let code = code(path);
            code.match_indices("Result<").any(|(i, _)| {
                // The error type of this `Result<…>`: what follows its top-level comma.
                let mut depth = 0;
                let rest = &code[i + "Result<".len()..];
                let mut comma = None;
                for (j, c) in rest.char_indices() {
                    match c {
                        '<' | '(' => depth += 1,
                        ')' => depth -= 1,
                        '>' if depth == 0 => {
                            return comma.is_some_and(|k: usize| rest[k + 1..j].trim() == "String");
                        }
                        '>' => depth -= 1,
                        ',' if depth == 0 => comma = Some(j),
                        _ => {}
                    }
                }
                false
            })
        })
        .map(|(module, _)| module)
        .collect();
    assert!(
        stringly.is_empty(),
        "`Result<_, String>` in: {stringly:?}; give the error a type"
    );
}

#[test]
fn the_checker_reads_imports_as_written() {
    // A grouped `use`, `super::` from a child module, and a path inside an expression.
    let code = "use crate::{config::Via, routes::{Route, RouteTable}};\nlet x = crate::target::Host::Ip(ip);";
    assert_eq!(
        paths_after(code, "crate::"),
        ["config::Via", "routes", "target::Host::Ip"]
    );
    let graph = imports();
    assert!(
        graph["upstream::dial"].contains("upstream::walk"),
        "{:?}",
        graph["upstream::dial"]
    );
    assert!(graph["proxy"].contains("upstream::connect"), "{:?}", graph["proxy"]);
    assert!(graph["server"].contains("transparent"), "{:?}", graph["server"]);
    assert!(
        graph["upstream::dns"].contains("upstream::dns::cache"),
        "a bare child path"
    );
    // A circle between rooms is found: the walk reaching back into the dial would be one.
    let mut looped = between_rooms(imports());
    looped
        .get_mut("upstream::walk")
        .expect("walk")
        .insert("upstream::dial".into());
    assert!(circle(&looped, "upstream::dial").is_some(), "a planted circle is seen");
}
