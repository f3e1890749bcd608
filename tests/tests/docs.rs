//! The docs cannot go stale: every `bgctl` and `cargo xtask` command they
//! show, in code blocks and inline, is accepted by the program it names,
//! and every TOML example passes `bgctl check-config`.
use std::{path::Path, process::Command};

use bg_tests::{
    agent::bgctl_bin,
    certs::TestPki,
    docs::{self, Block},
};

/// Commands from inline `code` spans and shell blocks of every page, with
/// where each was found.
fn commands(program: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let prefix = format!("`{}", program.join(" "));
    for page in docs::pages() {
        for b in docs::blocks(&page) {
            if !matches!(b.lang.as_str(), "" | "sh") {
                continue;
            }
            for line in docs::command_lines(&b.text) {
                if placeholder(&line) {
                    continue;
                }
                if let Some(args) = docs::invocation(&line, program) {
                    found.push((format!("{}: {line}", b.place()), args));
                }
            }
        }
        let prose = docs::prose(&page);
        for span in prose.split(prefix.as_str()).skip(1) {
            let Some((span, _)) = span.split_once('`') else {
                continue;
            };
            let line = format!("{}{span}", program.join(" "));
            if placeholder(&line) {
                continue;
            }
            if let Some(args) = docs::invocation(&line, program) {
                found.push((format!("{}: `{line}`", page.display()), args));
            }
        }
    }
    found
}

/// A synopsis (`bgctl agent <ARGS>`, `bgctl [--json] ...`): its words stand
/// for arguments, not for themselves.
fn placeholder(line: &str) -> bool {
    line.contains('<') || line.contains("...") || line.contains("[-")
}

/// `ARGS --help` parses ARGS as the program would and prints the help
/// instead of acting: an unknown subcommand, flag or value fails it.
fn accepted(mut command: Command, args: &[String]) -> Result<(), String> {
    let out = command
        .args(args)
        .arg("--help")
        .output()
        .expect("running the command");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[test]
fn every_bgctl_command_in_the_docs_is_accepted() {
    let found = commands(&["bgctl"]);
    // The cheat sheet alone has a dozen: finding none means the scan broke.
    assert!(
        found.len() >= 30,
        "only {} bgctl commands found",
        found.len()
    );
    let bad: Vec<String> = found
        .iter()
        .filter_map(|(place, args)| {
            accepted(Command::new(bgctl_bin()), args)
                .err()
                .map(|e| format!("{place}\n    {e}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "stale bgctl commands in the docs:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_xtask_command_in_the_docs_is_accepted() {
    let found = commands(&["cargo", "xtask"]);
    assert!(
        found.len() >= 10,
        "only {} xtask commands found",
        found.len()
    );
    // `cargo xtask test` runs this binary; run from plain `cargo test`, it
    // is built first, with cargo's own variables for this test removed
    // (they would change its fingerprint and rebuild it every time).
    let xtask = docs::root().join("target/debug/xtask");
    if !xtask.exists() {
        let mut build = Command::new(env!("CARGO"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CARGO_") && k != "CARGO_HOME" {
                build.env_remove(k);
            }
        }
        let built = build
            .current_dir(docs::root())
            .args(["build", "--quiet", "--package", "xtask"])
            .status()
            .expect("cargo build -p xtask");
        assert!(built.success(), "cargo build -p xtask failed");
    }
    let bad: Vec<String> = found
        .iter()
        .filter_map(|(place, args)| {
            // `run` and `test` pass what follows on (to `bgctl agent`, to the
            // test binaries), so `--help` after it would run them: their own
            // word goes to xtask, and `run -- ARGS` to bgctl's parser.
            let checked = match args.split_first() {
                Some((task, rest)) if task == "run" && rest.first().is_some_and(|a| a == "--") => {
                    accepted(Command::new(&xtask), std::slice::from_ref(task)).and_then(|()| {
                        let mut agent = vec!["agent".to_owned()];
                        agent.extend_from_slice(&rest[1..]);
                        accepted(Command::new(bgctl_bin()), &agent)
                    })
                }
                Some((task, _)) if task == "run" || task == "test" => {
                    accepted(Command::new(&xtask), std::slice::from_ref(task))
                }
                _ => accepted(Command::new(&xtask), args),
            };
            checked.err().map(|e| format!("{place}\n    {e}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "stale xtask commands in the docs:\n{}",
        bad.join("\n")
    );
}

/// A block without services is a section added to a minimal config.
const BASE: &str = r#"[[service]]
name = "syslog-udp"
protocol = "udp"
listen = "0.0.0.0:514"
blue = "198.18.1.2:514"
green = "198.18.2.2:514"
"#;

/// The example's files (CAs, client certificates, password files) made for
/// real under `dir`, and the block pointed at them.
fn with_real_files(b: &Block, dir: &Path, pki: &TestPki) -> String {
    let mut text = if b.text.contains("[[service]]") {
        b.text.clone()
    } else {
        format!("{BASE}\n{}", b.text)
    };
    for (name, real) in [
        ("collectors-ca.pem", &pki.ca),
        ("etcd-ca.pem", &pki.ca),
        ("client.pem", &pki.cert),
        ("client.key", &pki.key),
        ("etcd-client.pem", &pki.cert),
        ("etcd-client-key.pem", &pki.key),
    ] {
        let real = real.display().to_string();
        text = text
            .replace(
                &format!("\"/etc/bluegreen/{name}\""),
                &format!("\"{real}\""),
            )
            .replace(&format!("\"{name}\""), &format!("\"{real}\""));
    }
    let password = dir.join("etcd-password");
    std::fs::write(&password, "secret\n").unwrap();
    text.replace(
        "\"/etc/bluegreen/etcd-password\"",
        &format!("\"{}\"", password.display()),
    )
}

#[test]
fn every_config_example_in_the_docs_passes_check_config() {
    let dir = std::env::temp_dir().join(format!("bg-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = TestPki::new(&dir, &["collector.example"], &[]).unwrap();
    let mut checked = 0;
    let mut bad = Vec::new();
    for page in docs::pages() {
        for b in docs::blocks(&page).iter().filter(|b| b.lang == "toml") {
            let file = dir.join(format!("example-{checked}.toml"));
            std::fs::write(&file, with_real_files(b, &dir, &pki)).unwrap();
            let out = Command::new(bgctl_bin())
                .arg("check-config")
                .arg(&file)
                .output()
                .expect("running bgctl check-config");
            if !out.status.success() {
                bad.push(format!(
                    "{}\n    {}",
                    b.place(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            checked += 1;
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(checked >= 3, "only {checked} TOML examples found");
    assert!(
        bad.is_empty(),
        "config examples check-config refuses:\n{}",
        bad.join("\n")
    );
}
