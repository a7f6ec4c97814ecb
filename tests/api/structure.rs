//! The structure rule: imports point down the data's path. Each top-level module of `src/` has a
//! floor (`FLOORS`, the one table of them); a file may name (`use crate::…` or an inline
//! `crate::…` path) its own module and modules on lower floors, never one above it. The
//! imports that still point up are listed in `KNOWN_UPWARD`, each with why; the list is exact
//! (an entry that no longer happens fails too), so it only shrinks. No files may import each
//! other in a circle either (`KNOWN_CIRCLES`, exact in the same way).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom; modules on one line share a floor.
const FLOORS: &[&[&str]] = &[
    // commands (and the unit test that drives a whole server with a test-only kind)
    &["main", "cli", "kind_proof"],
    // startup: builds the server from its configuration and supervises its tasks
    &["startup", "supervise", "config"],
    // transports
    &["grpc", "http_server", "admin", "tls"],
    // the data's writers and readers
    &["ingest", "backfill", "applier", "cache", "outbound"],
    &["hub"],
    &["inbox"],
    &["store", "filter"],
    // wire: generated code
    &["pb"],
    // leaves
    &["db", "lender", "secrets", "metrics", "telemetry"],
    // the embedded PostgreSQL
    &["pg"],
];

/// Imports that point up today: (importing file, imported module, why it is still there).
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

/// Circles that are still there (files, sorted), each with why; exact, so it only shrinks.
const KNOWN_CIRCLES: &[(&[&str], &str)] = &[];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

/// The top-level module a file of `src/` belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .expect("a path")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The paths a source text names from the crate's root, each as its segments: `crate::a::b`,
/// groups such as `use crate::{a::X, b::{c, d}};` over several lines, and `super::`/`self::`
/// paths made absolute from `module` (the file's own module path). Comments are not read.
fn named_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let rest = &code[i..];
        let root = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") || rest.starts_with("self::") {
            // `super::super::x` climbs twice; `self::x` stays.
            let mut base = module.to_vec();
            let mut at = 0;
            loop {
                if code[i + at..].starts_with("super::") {
                    base.pop();
                    at += "super::".len();
                } else if code[i + at..].starts_with("self::") {
                    at += "self::".len();
                } else {
                    break;
                }
            }
            Some((base, at))
        } else {
            None
        };
        match root {
            Some((base, skip)) => {
                let (found, used) = tree(&code[i + skip..], &base);
                paths.extend(found);
                i += skip + used.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    paths
}

/// One use tree at the start of `text` under `prefix`: `a::b`, `a::{b, c::d}`, `*`, `x as y`.
/// Returns the paths and how many bytes it read.
fn tree(text: &str, prefix: &[String]) -> (Vec<Vec<String>>, usize) {
    let skip_ws = |at: usize| at + text[at..].len() - text[at..].trim_start().len();
    let mut at = skip_ws(0);
    if text[at..].starts_with('{') {
        at += 1;
        let mut paths = Vec::new();
        loop {
            at = skip_ws(at);
            if text[at..].starts_with('}') || at >= text.len() {
                return (paths, at + 1);
            }
            let (found, used) = tree(&text[at..], prefix);
            paths.extend(found);
            at = skip_ws(at + used);
            if text[at..].starts_with(',') {
                at += 1;
            }
        }
    }
    let ident: String = text[at..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        // `*`, or the end of the path.
        return (vec![prefix.to_vec()], at + usize::from(text[at..].starts_with('*')));
    }
    at += ident.len();
    let mut path = prefix.to_vec();
    if ident != "self" {
        path.push(ident);
    }
    if text[at..].starts_with("::") {
        let (found, used) = tree(&text[at + 2..], &path);
        return (found, at + 2 + used);
    }
    (vec![path], at)
}

/// The file of `src/` a path resolves to: the deepest module file among its prefixes (an item's
/// path resolves to the file of its module).
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    let mut found = None;
    for k in 1..=path.len() {
        let dir = src.join(path[..k].join("/"));
        let file = dir.with_extension("rs");
        let module = dir.join("mod.rs");
        if file.is_file() {
            found = Some(file);
        } else if module.is_file() {
            found = Some(module);
        } else {
            break;
        }
    }
    found
}

/// The module path of a file of `src/` (`grpc/watch.rs` → `[grpc, watch]`, `grpc/mod.rs` → `[grpc]`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every file of `src/` with the files it imports (`src/`-relative paths).
fn import_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src").to_path_buf();
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let targets = named_paths(&text, &module_path(&relative))
            .iter()
            .filter_map(|path| file_of(&src, path))
            .map(|f| f.strip_prefix(&src).expect("under src").to_path_buf())
            .filter(|f| *f != relative)
            .collect();
        graph.insert(relative, targets);
    }
    graph
}

/// Every (file, module) import that points up a floor.
fn upward_imports() -> BTreeSet<(String, String)> {
    let mut upward = BTreeSet::new();
    for (file, targets) in import_graph() {
        let module = module_of(&file);
        if module == "lib" {
            continue;
        }
        let from = floor_of(&module).unwrap_or_else(|| panic!("src/{module} has no floor in FLOORS: give it one"));
        for target in targets {
            let named = module_of(&target);
            let Some(to) = floor_of(&named) else { continue };
            if to < from {
                upward.insert((file.to_string_lossy().into_owned(), named));
            }
        }
    }
    upward
}

/// The circles of the import graph between files, leaving out the edges between a folder's
/// `mod.rs` and the files of that folder (a module and its parts).
fn circles() -> Vec<Vec<PathBuf>> {
    let graph = import_graph();
    let inside = |a: &Path, b: &Path| {
        let root_of = |m: &Path, part: &Path| {
            m.file_name().is_some_and(|n| n == "mod.rs") && part.starts_with(m.parent().unwrap())
        };
        root_of(a, b) || root_of(b, a)
    };
    let edges: BTreeMap<&PathBuf, Vec<&PathBuf>> = graph
        .iter()
        .map(|(f, ts)| {
            (
                f,
                ts.iter().filter(|t| graph.contains_key(*t) && !inside(f, t)).collect(),
            )
        })
        .collect();
    // Tarjan's strongly connected components: each with more than one file is a circle.
    struct State<'a> {
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(v: &'a PathBuf, edges: &BTreeMap<&'a PathBuf, Vec<&'a PathBuf>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in &edges[v] {
            if !s.index.contains_key(w) {
                visit(w, edges, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(*v) {
            visit(v, &edges, &mut state);
        }
    }
    state.out
}

/// Fails unless `found` is exactly `known`: what is new says `fix`, what is gone says to take
/// it off the list named `list`.
fn assert_exactly<T: Ord + std::fmt::Debug>(found: BTreeSet<T>, known: BTreeSet<T>, fix: &str, list: &str) {
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(new.is_empty(), "{fix}: {new:?}");
    assert!(
        gone.is_empty(),
        "listed in {list} but no longer found: remove them: {gone:?}"
    );
}

#[test]
fn every_import_points_down_the_floors_but_the_listed_ones() {
    let known = KNOWN_UPWARD
        .iter()
        .map(|(file, module, _)| (file.to_string(), module.to_string()))
        .collect();
    assert_exactly(
        upward_imports(),
        known,
        "imports that point up the floors (move the shared piece down, or import the other way)",
        "KNOWN_UPWARD",
    );
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let found = circles()
        .into_iter()
        .map(|c| c.iter().map(|f| f.to_string_lossy().into_owned()).collect::<Vec<_>>())
        .collect();
    let known = KNOWN_CIRCLES
        .iter()
        .map(|(files, _)| files.iter().map(|f| f.to_string()).collect())
        .collect();
    assert_exactly(
        found,
        known,
        "files that import each other, directly or around a circle (move what they share into a file both import)",
        "KNOWN_CIRCLES",
    );
}

#[test]
fn the_import_reader_sees_use_lines_groups_and_inline_paths_but_not_comments() {
    let text = "use crate::hub::Hub;\nuse crate::{\n    store::{changes::X, Y},\n    pb,\n};\nlet x = crate::cache::Y;\n// crate::grpc::z\nuse super::cursor::{self, Cursor};\nuse self::inner::Z;\nuse super::super::db as d;\n";
    let module = ["grpc".to_string(), "watch".to_string()];
    let paths: BTreeSet<String> = named_paths(text, &module).iter().map(|p| p.join("::")).collect();
    let expected = [
        "hub::Hub",
        "store::changes::X",
        "store::Y",
        "pb",
        "cache::Y",
        "grpc::cursor",
        "grpc::cursor::Cursor",
        "grpc::watch::inner::Z",
        "db",
    ];
    assert_eq!(paths, expected.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
}

#[test]
fn a_path_resolves_to_the_file_of_its_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let of = |p: &str| {
        file_of(&src, &p.split("::").map(str::to_string).collect::<Vec<_>>())
            .map(|f| f.strip_prefix(&src).unwrap().to_string_lossy().into_owned())
    };
    assert_eq!(of("grpc::watch::WatchConfig").as_deref(), Some("grpc/watch.rs"));
    assert_eq!(of("grpc::Routes").as_deref(), Some("grpc/mod.rs"));
    assert_eq!(of("db::connect").as_deref(), Some("db.rs"));
    assert_eq!(of("Config"), None);
}
