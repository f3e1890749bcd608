//! The crate's layering, checked on its sources: `model` is plain data that
//! imports nothing else from the crate, and only the data-path modules use
//! aya. A new import that breaks either fails here, naming the file and line.
use std::path::{Path, PathBuf};

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

/// (file, line number, line) for every line of `files` that `bad` flags.
fn offending(files: &[PathBuf], bad: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if bad(code) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn model_imports_nothing_else_from_the_crate() {
    let files = rust_files(&src().join("model"));
    assert!(files.len() >= 2, "model/ holds its files: {files:?}");
    let found = offending(&files, |code| {
        let outside = code
            .match_indices("crate::")
            .any(|(i, _)| !code[i..].starts_with("crate::model"));
        outside || code.contains("super::super")
    });
    assert!(
        found.is_empty(),
        "model/ must stay plain data:\n{}",
        found.join("\n")
    );
}

/// The modules allowed to use aya: the data path's own.
const DATA_PATH_MODULES: &[&str] = &[
    "dataplane.rs",
    "attach.rs",
    "ebpf_log.rs",
    "backend_path.rs",
];

#[test]
fn only_the_data_path_uses_aya() {
    let files: Vec<PathBuf> = rust_files(&src())
        .into_iter()
        .filter(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !DATA_PATH_MODULES.contains(&name)
        })
        .collect();
    let found = offending(&files, |code| {
        code.contains("aya::") || code.contains("use aya") || code.contains("aya_log::")
    });
    assert!(
        found.is_empty(),
        "aya outside the data-path modules {DATA_PATH_MODULES:?}:\n{}",
        found.join("\n")
    );
}
