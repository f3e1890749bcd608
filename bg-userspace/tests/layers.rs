//! The crate's layering, checked on its sources (the order is `lib.rs`'s):
//! every module imports only from layers below its own, only the data path
//! uses aya, the core's state is reachable only through its methods, and no
//! file grows past the size a reader can hold. A new import that breaks a
//! rule fails here, naming the file and line.
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module may import from a lower layer only: two
/// modules of one layer do not know each other.
const LAYERS: &[&[&str]] = &[
    &["model"],
    &["host", "transport"],
    &["probe"],
    &["config"],
    &["store", "metrics"],
    &["dataplane"],
    &["health"],
    &["core"],
    &["deploy"],
    &["fleet"],
    &["api"],
    &["cli"],
    &["agent"],
];

/// Longest a source file may grow, in lines.
const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The crate's module files: all but the crate roots.
fn module_files() -> Vec<PathBuf> {
    rust_files(&src())
        .into_iter()
        .filter(|f| !matches!(relative(f).as_str(), "lib.rs" | "main.rs"))
        .collect()
}

fn relative(file: &Path) -> String {
    file.strip_prefix(src())
        .expect("under src")
        .to_string_lossy()
        .into_owned()
}

/// The top-level module a file belongs to: `config/tcp.rs` -> `config`.
fn top_module(file: &Path) -> String {
    let rel = relative(file);
    let first = rel.split('/').next().expect("a component");
    first.trim_end_matches(".rs").to_owned()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Source lines without `//` comments, numbered from 1.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).expect("read source");
    text.lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.split("//").next().unwrap_or("").to_owned()))
        .collect()
}

/// The top-level modules named by `crate::` paths in `code`, with the line
/// of each. `use crate::{a::x, b}` names `a` and `b`, across lines.
fn crate_imports(lines: &[(usize, String)]) -> Vec<(usize, String)> {
    // One string with a line number per byte, so groups can span lines.
    let mut text = String::new();
    let mut line_at = Vec::new();
    for (n, l) in lines {
        text.push_str(l);
        text.push('\n');
        line_at.resize(text.len(), *n);
    }
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        let name: String = group[j..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push((line_at[i + "crate::{".len() + j], name));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((line_at[i], name));
        }
    }
    found
}

#[test]
fn every_module_has_a_layer() {
    let missing: Vec<String> = module_files()
        .iter()
        .map(|f| top_module(f))
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a layer in LAYERS: {missing:?}"
    );
}

#[test]
fn modules_import_only_from_lower_layers() {
    let mut found = Vec::new();
    for file in module_files() {
        let own = top_module(&file);
        let Some(rank) = layer_of(&own) else { continue };
        for (line, target) in crate_imports(&code_lines(&file)) {
            if target == own {
                continue;
            }
            match layer_of(&target) {
                Some(r) if r < rank => {}
                other => found.push(format!(
                    "{}:{line}: {own} (layer {rank}) imports {target} (layer {other:?})",
                    relative(&file)
                )),
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}

/// The checker itself: a group that spans lines, nested groups, and a
/// plain path each name their top-level modules.
#[test]
fn imports_are_read_from_groups_and_paths() {
    let code = [
        "use crate::{",
        "    core::{Core, FlipKind},",
        "    model::Colour,",
        "};",
        "let x = crate::dataplane::if_index(\"lo\");",
    ];
    let lines: Vec<(usize, String)> = code
        .iter()
        .enumerate()
        .map(|(n, l)| (n + 1, (*l).to_owned()))
        .collect();
    assert_eq!(
        crate_imports(&lines),
        [
            (2, "core".to_owned()),
            (3, "model".to_owned()),
            (5, "dataplane".to_owned())
        ]
    );
}

#[test]
fn model_imports_nothing_else_from_the_crate() {
    let files = rust_files(&src().join("model"));
    assert!(files.len() >= 2, "model/ holds its files: {files:?}");
    let found: Vec<String> = files
        .iter()
        .flat_map(|f| {
            crate_imports(&code_lines(f))
                .into_iter()
                .filter(|(_, m)| m != "model")
                .map(move |(n, m)| format!("{}:{n}: {m}", relative(f)))
        })
        .collect();
    assert!(
        found.is_empty(),
        "model/ must stay plain data:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_data_path_uses_aya() {
    let mut found = Vec::new();
    for file in module_files() {
        if top_module(&file) == "dataplane" {
            continue;
        }
        for (n, code) in code_lines(&file) {
            if code.contains("aya::") || code.contains("use aya") || code.contains("aya_log::") {
                found.push(format!("{}:{n}: {}", relative(&file), code.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "aya outside dataplane/:\n{}",
        found.join("\n")
    );
}

/// The core's state is private: the control surfaces, the deployment
/// controller and the probes change it only through `Core`'s methods.
#[test]
fn the_core_keeps_its_fields_private() {
    let file = src().join("core/mod.rs");
    let lines = code_lines(&file);
    let start = lines
        .iter()
        .position(|(_, l)| l.starts_with("pub struct Core {"))
        .expect("core/mod.rs declares `pub struct Core {`");
    let public: Vec<String> = lines[start + 1..]
        .iter()
        .take_while(|(_, l)| !l.starts_with('}'))
        .filter(|(_, l)| l.trim_start().starts_with("pub"))
        .map(|(n, l)| format!("core/mod.rs:{n}: {}", l.trim()))
        .collect();
    assert!(
        public.is_empty(),
        "public fields of Core:\n{}",
        public.join("\n")
    );
}

#[test]
fn no_file_is_too_long_to_read() {
    let long: Vec<String> = rust_files(&src())
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).expect("read").lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", relative(f)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines; split them by what they hold:\n{}",
        long.join("\n")
    );
}
