//! `cargo xtask package`: a Debian package of bgctl, built with dpkg-deb
//! from a staged tree, so nothing beyond Debian's own tools is needed.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{output, run_status, workspace_root};

const PACKAGE: &str = "bluegreen";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the package ships besides the binary: (file in the repository,
/// installed path, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "packaging/bluegreen.toml",
        "etc/bluegreen/bluegreen.toml",
        0o644,
    ),
    (
        "packaging/bluegreen@.service",
        "lib/systemd/system/bluegreen@.service",
        0o644,
    ),
    ("LICENSE-MIT", "usr/share/doc/bluegreen/LICENSE-MIT", 0o644),
    (
        "LICENSE-APACHE",
        "usr/share/doc/bluegreen/LICENSE-APACHE",
        0o644,
    ),
    ("README.md", "usr/share/doc/bluegreen/README.md", 0o644),
    // The README's links, so they resolve in the installed copy.
    (
        "docs/configuration.md",
        "usr/share/doc/bluegreen/docs/configuration.md",
        0o644,
    ),
    (
        "docs/operations.md",
        "usr/share/doc/bluegreen/docs/operations.md",
        0o644,
    ),
    (
        "docs/deployments.md",
        "usr/share/doc/bluegreen/docs/deployments.md",
        0o644,
    ),
    ("docs/dsr.md", "usr/share/doc/bluegreen/docs/dsr.md", 0o644),
    (
        "docs/http-api.md",
        "usr/share/doc/bluegreen/docs/http-api.md",
        0o644,
    ),
    (
        "docs/metrics.md",
        "usr/share/doc/bluegreen/docs/metrics.md",
        0o644,
    ),
    (
        "docs/architecture.md",
        "usr/share/doc/bluegreen/docs/architecture.md",
        0o644,
    ),
    (
        "docs/performance.md",
        "usr/share/doc/bluegreen/docs/performance.md",
        0o644,
    ),
    (
        "docs/reliability.md",
        "usr/share/doc/bluegreen/docs/reliability.md",
        0o644,
    ),
    // What the README and docs link to, so the installed copy's links
    // resolve (the package test follows every one).
    (
        "CONTRIBUTING.md",
        "usr/share/doc/bluegreen/CONTRIBUTING.md",
        0o644,
    ),
    (
        "bench/results/latest.svg",
        "usr/share/doc/bluegreen/bench/results/latest.svg",
        0o644,
    ),
    (
        "docs/dashboard.png",
        "usr/share/doc/bluegreen/docs/dashboard.png",
        0o644,
    ),
    (
        "docs/dashboard-390px.png",
        "usr/share/doc/bluegreen/docs/dashboard-390px.png",
        0o644,
    ),
    (
        "docs/dashboard-dark.png",
        "usr/share/doc/bluegreen/docs/dashboard-dark.png",
        0o644,
    ),
    // For an operator's Prometheus and Grafana to load (docs/metrics.md).
    (
        "packaging/prometheus/bluegreen.rules.yml",
        "usr/share/bluegreen/prometheus/bluegreen.rules.yml",
        0o644,
    ),
    (
        "packaging/grafana/bluegreen.json",
        "usr/share/bluegreen/grafana/bluegreen.json",
        0o644,
    ),
];

/// Completion scripts, where Debian's bash-completion, zsh and fish look.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/bgctl"),
    ("zsh", "usr/share/zsh/vendor-completions/_bgctl"),
    ("fish", "usr/share/fish/vendor_completions.d/bgctl.fish"),
];

/// Builds `target/package/bluegreen_<version>_<arch>.deb` from the release
/// bgctl (built beforehand) and returns its path.
pub fn run(bgctl: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    let out_dir = root.join("target/package");
    let stage = out_dir.join("root");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let arch = output("dpkg", &["--print-architecture"])
        .map(|a| a.trim().to_owned())
        .context("`dpkg --print-architecture` failed: packaging needs Debian's dpkg")?;

    let bin = stage.join("usr/bin/bgctl");
    fs::create_dir_all(bin.parent().unwrap())?;
    // Debian ships stripped binaries; the eBPF object inside is data and
    // keeps its BTF.
    run_status(Command::new("strip").arg("-o").arg(&bin).arg(bgctl))?;
    set_mode(&bin, 0o755)?;
    for (from, to, mode) in FILES {
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().unwrap())?;
        fs::copy(root.join(from), &dest).with_context(|| format!("copying {from}"))?;
        set_mode(&dest, *mode)?;
    }
    write(
        &stage.join("usr/share/doc/bluegreen/copyright"),
        &copyright(),
        0o644,
    )?;
    for (shell, to) in COMPLETIONS {
        let script = Command::new(bgctl)
            .args(["completions", shell])
            .output()
            .context("running bgctl completions")?;
        if !script.status.success() || script.stdout.is_empty() {
            bail!("`bgctl completions {shell}` failed");
        }
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().unwrap())?;
        fs::write(&dest, &script.stdout)?;
        set_mode(&dest, 0o644)?;
    }
    man_pages(bgctl, &stage.join("usr/share/man/man1"))?;

    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let glibc = glibc_needed(bgctl)?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: bluegreen developers <bluegreen@example.invalid>\n\
         Installed-Size: {}\n\
         Depends: libc6 (>= 2.{glibc}), libgcc-s1\n\
         Recommends: bpftool\n\
         Section: net\n\
         Priority: optional\n\
         Description: zero-downtime blue/green upgrades for syslog pipelines\n \
         bluegreen steers syslog (UDP 514, TCP 514/601/6514, RELP) to the active\n \
         colour's collector with an XDP program, flips colours with one map\n \
         write, checks the new colour before and after the switch and rolls\n \
         back by itself. One agent per interface: bluegreen@IFACE.service.\n",
        size_kib(&stage)?
    );
    write(&debian.join("control"), &control, 0o644)?;
    write(
        &debian.join("conffiles"),
        "/etc/bluegreen/bluegreen.toml\n",
        0o644,
    )?;
    // Units are enabled by the operator (one per interface), never here.
    write(
        &debian.join("postinst"),
        "#!/bin/sh\nset -e\n\
         if [ -z \"${DPKG_ROOT:-}\" ] && [ -d /run/systemd/system ]; then\n\
         \tsystemctl daemon-reload || true\nfi\n",
        0o755,
    )?;

    let deb = out_dir.join(format!("{PACKAGE}_{VERSION}_{arch}.deb"));
    run_status(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// bgctl.1 and a page per subcommand, gzipped as Debian installs them.
fn man_pages(bgctl: &Path, dir: &Path) -> Result<()> {
    run_status(Command::new(bgctl).arg("manpages").arg(dir))?;
    let mut pages = 0;
    for entry in fs::read_dir(dir)? {
        let page = entry?.path();
        run_status(Command::new("gzip").arg("-9n").arg(&page))?;
        set_mode(&page.with_extension("1.gz"), 0o644)?;
        pages += 1;
    }
    if pages == 0 {
        bail!("`bgctl manpages` wrote nothing into {}", dir.display());
    }
    Ok(())
}

/// The highest GLIBC_2.N symbol version the binary asks for.
fn glibc_needed(bin: &Path) -> Result<u32> {
    let bytes = fs::read(bin)?;
    let tag = b"GLIBC_2.";
    let highest = bytes
        .windows(tag.len())
        .enumerate()
        .filter(|(_, w)| *w == tag)
        .filter_map(|(i, _)| {
            let digits: Vec<u8> = bytes[i + tag.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .copied()
                .collect();
            std::str::from_utf8(&digits).ok()?.parse::<u32>().ok()
        })
        .max();
    highest.with_context(|| format!("{} names no GLIBC_2.N version", bin.display()))
}

/// Debian's machine-readable copyright file, for the licence Cargo.toml
/// declares.
fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: bluegreen\n\n\
     Files: *\n\
     Copyright: the bluegreen developers\n\
     License: MIT or Apache-2.0\n \
     The full texts are in /usr/share/doc/bluegreen/LICENSE-MIT and\n \
     /usr/share/doc/bluegreen/LICENSE-APACHE; on Debian also\n \
     /usr/share/common-licenses/Apache-2.0.\n"
        .to_owned()
}

fn size_kib(dir: &Path) -> Result<u64> {
    fn bytes(dir: &Path) -> Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            total += if meta.is_dir() {
                bytes(&entry.path())?
            } else {
                meta.len()
            };
        }
        Ok(total)
    }
    Ok(bytes(dir)?.div_ceil(1024))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
