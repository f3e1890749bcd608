//! The project's Markdown: its code blocks and inline commands, so tests
//! run what the docs tell operators to run.
use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// README.md, CONTRIBUTING.md and every page under docs/.
pub fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// A fenced code block: where it is, its language and its text.
pub struct Block {
    pub page: PathBuf,
    /// 1-based line of the opening fence.
    pub line: usize,
    pub lang: String,
    pub text: String,
}

impl Block {
    pub fn place(&self) -> String {
        format!("{}:{}", self.page.display(), self.line)
    }
}

/// Every fenced code block of `page`, in order.
pub fn blocks(page: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((i + 1, lang.trim().to_owned(), String::new())),
            (Some((start, lang, body)), Some(_)) => out.push(Block {
                page: page.to_owned(),
                line: start,
                lang,
                text: body,
            }),
            (Some((start, lang, mut body)), None) => {
                body.push_str(line);
                body.push('\n');
                open = Some((start, lang, body));
            }
            (None, None) => {}
        }
    }
    assert!(
        open.is_none(),
        "{}: a code block never ends",
        page.display()
    );
    out
}

/// The text outside code blocks, for inline `code` spans.
pub fn prose(page: &Path) -> String {
    let text = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    let mut fence = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The code block after `<!-- tested: NAME -->` in `page` (relative to the
/// repository root): a snippet a test runs as documented.
pub fn snippet(page: &str, name: &str) -> String {
    let text = std::fs::read_to_string(root().join(page)).expect(page);
    let after = text
        .split_once(&format!("<!-- tested: {name} -->"))
        .unwrap_or_else(|| panic!("no `tested: {name}` marker in {page}"))
        .1;
    let block = after.split_once("```").expect("a code block").1;
    let block = block.split_once('\n').expect("its language line").1;
    block.split_once("```").expect("its end").0.to_owned()
}

/// The shell command lines of a block: continuations joined, comments and
/// prompts dropped.
pub fn command_lines(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for line in block.lines() {
        let line = line.trim_start().trim_start_matches("$ ");
        if let Some(head) = line.strip_suffix('\\') {
            acc.push_str(head.trim_end());
            acc.push(' ');
            continue;
        }
        acc.push_str(line);
        out.push(std::mem::take(&mut acc));
    }
    out
}

/// The `PROGRAM ...` command a shell line runs, as arguments after the
/// program: `sudo`, `sudo -E env "PATH=$PATH"`, `VAR=value` prefixes, a
/// trailing comment and anything after a pipe, redirect or `&&` removed.
/// None when the line does not run `program` (e.g. `cargo xtask`).
pub fn invocation(line: &str, program: &[&str]) -> Option<Vec<String>> {
    let line = line.split(" #").next().unwrap_or(line);
    let line = line
        .split(['|', '>', '&', ';'])
        .next()
        .unwrap_or(line)
        .trim();
    let words = shlex::split(line)?;
    let mut words = words.as_slice();
    loop {
        match words {
            [w, rest @ ..] if w == "sudo" || w == "-E" || w == "env" || w.contains('=') => {
                words = rest
            }
            _ => break,
        }
    }
    let rest = words.strip_prefix(
        program
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .as_slice(),
    )?;
    Some(rest.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_are_found_behind_sudo_and_env() {
        assert_eq!(
            invocation(
                r#"sudo -E env "PATH=$PATH" cargo xtask test   # all"#,
                &["cargo", "xtask"]
            ),
            Some(vec!["test".to_owned()])
        );
        assert_eq!(
            invocation("BGCTL_SOCKET=/run/x.sock bgctl status | jq .", &["bgctl"]),
            Some(vec!["status".to_owned()])
        );
        assert_eq!(
            invocation(
                "sudo systemctl daemon-reload && sudo systemctl enable --now bluegreen@eth0",
                &["bgctl"]
            ),
            None
        );
        assert_eq!(
            command_lines("bgctl deploy green \\\n  --version 2\n# a comment\n"),
            vec!["bgctl deploy green --version 2", "# a comment"]
        );
    }
}
