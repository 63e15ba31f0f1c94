//! The house's floors, checked on the source: every `crate::` / `super::` import of a file
//! points down (to a part below it in `src/lib.rs`'s order) or sideways within its part; no
//! import cycle between files; only the operator imports kube; the planner imports no tract,
//! tokio or kube. A grep, not a separate crate per part: one crate builds tract once, and this
//! test fails the same way a crate boundary would (a wrong `use` is a red test, not a build).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parts in floor order, lowest first (src/lib.rs); a part may use those before it.
const FLOORS: &[&[&str]] = &[
    &["planner"],
    &["onnx"],
    &["dataset", "digest"],
    &["session"],
    &["runtime"],
    &["demo", "bench"],
    &["operator"],
    &["output", "cli"],
];

fn floor(part: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&part))
}

/// Every `.rs` file under src/ (not the test-only `testkit`, not main.rs), with its module path.
fn files() -> Vec<(PathBuf, Vec<String>)> {
    let src = common::root().join("src");
    let mut out = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&src).unwrap();
                let mut module: Vec<String> = rel
                    .with_extension("")
                    .iter()
                    .map(|c| c.to_string_lossy().to_string())
                    .collect();
                if module.last().is_some_and(|m| m == "mod") {
                    module.pop();
                }
                if module == ["lib"]
                    || module == ["main"]
                    || module.first().is_some_and(|m| m == "testkit")
                {
                    continue;
                }
                out.push((p, module));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its `#[cfg(test)]` module (tests may use anything) and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file refers to through `crate::a::b` and `super::x` (resolved).
fn references(module: &[String], code: &str, is_mod_rs: bool) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    // The path's segments: identifiers joined by `::`, up to the first that is not a module
    // (an uppercase type, a brace) or that ends the path.
    let idents = |s: &str| -> Vec<String> {
        let mut out = Vec::new();
        for seg in s.split("::") {
            let id: String = seg
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if id.is_empty() || !id.chars().next().is_some_and(|c| c.is_lowercase()) {
                break;
            }
            let whole = id.len() == seg.len();
            out.push(id);
            if !whole {
                break;
            }
        }
        out
    };
    for (i, _) in code.match_indices("crate::") {
        let path = idents(&code[i + 7..]);
        if !path.is_empty() {
            out.insert(path);
        }
    }
    // `super` from a/b.rs is a; from a/b/mod.rs it is a too (the module is a::b).
    let parent: Vec<String> = if is_mod_rs || module.len() > 1 {
        module[..module.len() - 1].to_vec()
    } else {
        vec![]
    };
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("::") {
            continue; // super::super:: is resolved by the outer match
        }
        let mut path = parent.clone();
        path.extend(idents(&code[i + 7..]));
        if path.len() > parent.len() {
            out.insert(path);
        }
    }
    out
}

/// The file-level module a reference lands in (the longest module path that is a file).
fn target(reference: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=reference.len())
        .rev()
        .map(|n| reference[..n].to_vec())
        .find(|m| modules.contains(m))
}

struct Graph {
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    files: BTreeMap<Vec<String>, PathBuf>,
}

fn graph() -> Graph {
    let fs = files();
    let modules: BTreeSet<Vec<String>> = fs.iter().map(|(_, m)| m.clone()).collect();
    let mut edges = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (path, module) in &fs {
        let is_mod_rs = path.file_name().is_some_and(|n| n == "mod.rs");
        let refs = references(module, &code(path), is_mod_rs);
        let targets: BTreeSet<Vec<String>> = refs
            .iter()
            .filter_map(|r| target(r, &modules))
            .filter(|t| t != module)
            .collect();
        edges.insert(module.clone(), targets);
        files.insert(module.clone(), path.clone());
    }
    Graph { edges, files }
}

#[test]
fn every_import_points_down_or_sideways() {
    let g = graph();
    let mut wrong = Vec::new();
    for (from, tos) in &g.edges {
        let f = floor(&from[0]).unwrap_or_else(|| panic!("part {} is not in FLOORS", from[0]));
        for to in tos {
            let t = floor(&to[0]).unwrap_or_else(|| panic!("part {} is not in FLOORS", to[0]));
            if t > f {
                wrong.push(format!("{} uses {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports pointing up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycle_between_files() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit(
        n: &Vec<String>,
        g: &Graph,
        state: &mut BTreeMap<Vec<String>, u8>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        match state.get(n) {
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(n.clone());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(n.clone(), 1);
        path.push(n.clone());
        for m in g.edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.edges.keys() {
        if let Some(c) = visit(n, &g, &mut state, &mut Vec::new()) {
            panic!(
                "import cycle: {}",
                c.iter()
                    .map(|m| m.join("::"))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
        }
    }
    assert!(g.files.len() > 40, "only {} files seen", g.files.len());
}

/// Lines of `path` that use one of `crates` (as `name::` or `use name`).
fn uses_of(path: &Path, crates: &[&str]) -> Vec<String> {
    code(path)
        .lines()
        .filter(|l| {
            crates.iter().any(|c| {
                l.contains(&format!("{c}::")) && !l.contains(&format!("_{c}::"))
                    || l.trim_start().starts_with(&format!("use {c}"))
            })
        })
        .map(|l| format!("{}: {}", path.display(), l.trim()))
        .collect()
}

#[test]
fn only_the_operator_imports_kube_and_the_planner_no_tract_tokio_or_kube() {
    let mut wrong = Vec::new();
    for (path, module) in files() {
        if module[0] != "operator" {
            wrong.extend(uses_of(&path, &["kube", "k8s_openapi"]));
        }
        if module[0] == "planner" {
            wrong.extend(uses_of(
                &path,
                &[
                    "tract_onnx",
                    "tract_core",
                    "tokio",
                    "kube",
                    "k8s_openapi",
                    "axum",
                    "hyper",
                ],
            ));
        }
        if module[0] == "operator" {
            // The operator logs and reports through its own types: no CLI types below it.
            wrong.extend(uses_of(&path, &["clap", "indicatif"]));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The check sees what it looks for.
    let controller = common::root().join("src/operator/controller.rs");
    assert!(!uses_of(&controller, &["kube"]).is_empty());
}

#[test]
fn the_checker_resolves_super_and_crate_paths() {
    let module = vec!["operator".to_string(), "controller".to_string()];
    let refs = references(
        &module,
        "use super::decide::{self, Observation};\nuse crate::session::run;\nlet x = crate::planner::plan::Plan::x();",
        false,
    );
    let has = |want: &[&str]| {
        refs.iter()
            .any(|r| r.iter().map(String::as_str).eq(want.iter().copied()))
    };
    assert!(has(&["operator", "decide"]), "{refs:?}");
    assert!(has(&["session", "run"]), "{refs:?}");
    assert!(
        has(&["planner", "plan", "Plan"]) || has(&["planner", "plan"]),
        "{refs:?}"
    );
}
