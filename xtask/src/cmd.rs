//! Small process helpers.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() == 0 }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Runs a command with inherited stdio; fails on a non-zero exit.
pub fn run_status(c: &mut Command) -> Result<()> {
    let status = c.status().with_context(|| format!("starting {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let mut c = Command::new("cargo");
    c.current_dir(workspace_root()).args(args);
    run_status(&mut c)
}

/// Runs a command quietly and returns its stdout when it succeeds.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
