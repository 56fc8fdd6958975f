//! The shape of the code: no two files of a crate import each other, directly or around a
//! circle. A circle means two concerns that cannot be understood, tested or moved apart; the
//! fix is to find the piece both need and give it its own file (`ARCHITECTURE.md`).
//!
//! Imports are read from the source (`crate::a::b`, `super::c`, grouped `crate::{a, b}`), each
//! resolved to the deepest file module it names. A module's own children and `#[cfg(test)]`
//! code are left out: a parent declares its children, and tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

const CRATES: &[&str] = &[
    "spec",
    "crypto",
    "federation",
    "node",
    "client-api",
    "client-core",
    "client",
    "bench",
    "tests",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a source file is: `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs`
/// the root.
fn module_of(src: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The paths a source names after `crate::` or `super::`, as written (groups expanded one
/// level, which is as deep as this workspace writes them).
fn named_paths(source: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    for anchor in ["crate::", "super::"] {
        let from_crate = anchor == "crate::";
        let mut rest = source;
        while let Some(at) = rest.find(anchor) {
            let before = rest[..at].chars().last();
            rest = &rest[at + anchor.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    out.push((from_crate, segments(item.trim())));
                }
            } else {
                out.push((from_crate, segments(rest)));
            }
        }
    }
    out
}

fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

/// Each file module's imports of other file modules of the crate at `src`.
fn imports(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .into_iter()
        .map(|f| (module_of(src, &f), f))
        .filter(|(m, _)| m.last().is_none_or(|last| last != "tests"))
        .collect();
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let mut deps = BTreeSet::new();
        for (from_crate, path) in named_paths(text) {
            // `super` of module a::b (`a/b.rs` or `a/b/mod.rs`) is a.
            let mut full: Module = if from_crate {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            full.extend(path);
            let target = (1..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|m| modules.contains_key(m));
            if let Some(target) = target
                && target != *module
                && !module.starts_with(&target)
            {
                deps.insert(target);
            }
        }
        edges.insert(module.clone(), deps);
    }
    edges
}

/// The circles of the import graph (strongly connected components of more than one file).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    let reach = |from: &Module| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Module, BTreeSet<Module>> =
        edges.keys().map(|m| (m, reach(m))).collect();
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    for (module, reached) in &reachable {
        if !reached.contains(*module) {
            continue;
        }
        let circle: Vec<String> = reached
            .iter()
            .filter(|other| reachable[other].contains(*module))
            .map(|m| m.join("::"))
            .collect();
        found.insert(circle);
    }
    found.into_iter().collect()
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut all = Vec::new();
    for name in CRATES {
        let edges = imports(&root.join(name).join("src"));
        assert!(edges.len() > 1, "{name}: no sources found");
        for circle in circles(&edges) {
            all.push(format!("{name}: {}", circle.join(" → ")));
        }
    }
    assert!(all.is_empty(), "import circles:\n{}", all.join("\n"));
}

#[test]
fn the_check_sees_a_circle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::c::Thing;\n").unwrap();
    std::fs::write(src.join("b/mod.rs"), "pub mod c;\n").unwrap();
    std::fs::write(
        src.join("b/c.rs"),
        "use crate::{a::Other, d};\n#[cfg(test)]\nmod tests { use crate::x; }\n",
    )
    .unwrap();
    std::fs::write(src.join("d.rs"), "use super::b::c;\n").unwrap();
    let edges = imports(src);
    assert_eq!(
        circles(&edges),
        vec![vec!["a".to_owned(), "b::c".to_owned(), "d".to_owned()]]
    );
    // Without the edges back (test code does not count) there is none.
    std::fs::write(
        src.join("b/c.rs"),
        "pub struct Thing;\n#[cfg(test)]\nmod tests { use crate::{a, d}; }\n",
    )
    .unwrap();
    assert!(circles(&imports(src)).is_empty());
}
