//! `cargo xtask setup`: everything a fresh machine needs, each step skipped
//! when its result is already present and working.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{is_root, output, run_status};

/// Debian packages building bgctl needs.
const BUILD_PACKAGES: &[(&str, &str)] = &[
    (
        "protobuf-compiler",
        "protoc: the etcd-client crate compiles etcd's protos when bgctl builds",
    ),
    (
        "libprotobuf-dev",
        "google/protobuf/*.proto, which etcd's protos import (only a Recommends of protoc)",
    ),
];

/// Debian packages the lab, the privileged tests and the bench use: never
/// installed by building or by running the agent on a host.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip, network namespaces and veth"),
    ("util-linux", "nsenter, setpriv"),
    ("bsdutils", "logger, the real syslog client"),
    (
        "rsyslog",
        "the real syslog server used as blue and green backends",
    ),
    (
        "rsyslog-relp",
        "RELP for rsyslog (imrelp, omrelp): RELP backends and clients",
    ),
    (
        "rsyslog-gnutls",
        "TLS for rsyslog (gtls): syslog-over-TLS backends",
    ),
    ("ethtool", "turning off veth checksum offload in the lab"),
    ("nftables", "the nftables DNAT comparison in the bench"),
    (
        "haproxy",
        "the userspace syslog relay (log-forward) the bench compares against",
    ),
    ("chromium", "the headless browser the dashboard test drives"),
    (
        "chromium-driver",
        "WebDriver for that browser (chromedriver)",
    ),
    (
        "etcd-server",
        "the etcd members the fleet tests start (never on 2379)",
    ),
    ("etcd-client", "etcdctl, to look at a fleet's keys"),
    ("systemd", "systemd-analyze, which checks the packaged unit"),
    ("binutils", "strip, for the package's binary"),
    (
        "prometheus",
        "promtool, which checks and unit-tests the shipped alert rules",
    ),
    (
        "netsniff-ng",
        "trafgen, the bench's second, independent and finely paced generator",
    ),
    (
        "tcpdump",
        "the generator tests' independent view of what arrived (gaps, checksums)",
    ),
    (
        "bpftool",
        "the bench's instruction counts per program (prog dump xlated)",
    ),
];

/// bpf-linker version known to build with this machine's nightly.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// syslog-ng's package and the libraries it needs, unpacked apart: Debian's
/// syslog-ng conflicts with rsyslog, and the tests need both collectors.
const SYSLOG_NG_PACKAGES: &[&str] = &[
    "syslog-ng-core",
    "libivykis0",
    "libnet1",
    "libpcre3",
    "libwrap0",
    "libglib2.0-0",
    "libjson-c5",
    "libssl3",
    "libsystemd0",
    "libcap2",
];

/// Everything: the build's needs, then the lab's, the tests' and the
/// bench's tools.
pub fn run() -> Result<()> {
    for_build()?;
    debian_packages(TEST_PACKAGES)?;
    syslog_ng_apart()?;
    Ok(())
}

/// Only what building bgctl needs: `build`, `package` and `run -- ARGS`
/// (the agent on a real host) install nothing else.
pub fn for_build() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages(BUILD_PACKAGES)
}

fn rust_src() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    );
    if installed.is_some_and(|l| l.lines().any(|c| c.starts_with("rust-src"))) {
        return Ok(());
    }
    println!("setup: installing rust-src for the nightly toolchain");
    run_status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// Where setup keeps what must outlive a build (not /tmp, not target/).
fn data_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("bluegreen")
}

/// Stable home of the LLVM prefix bpf-linker links against: its rpath points
/// here, so it must outlive the build.
fn llvm_prefix(release: &str) -> PathBuf {
    data_home().join(format!("llvm-{release}"))
}

/// Root of the unpacked syslog-ng (`usr/sbin/syslog-ng` below it); the
/// tests find it here too (bg_tests::syslog_ng).
fn syslog_ng_root() -> PathBuf {
    data_home().join("syslog-ng")
}

/// The library path the unpacked syslog-ng runs with.
fn syslog_ng_library_path(root: &Path) -> String {
    [
        "usr/lib/x86_64-linux-gnu",
        "lib/x86_64-linux-gnu",
        "usr/lib/syslog-ng",
    ]
    .iter()
    .map(|d| root.join(d).display().to_string())
    .collect::<Vec<_>>()
    .join(":")
}

fn syslog_ng_runs(root: &Path) -> bool {
    Command::new(root.join("usr/sbin/syslog-ng"))
        .arg("--version")
        .env("LD_LIBRARY_PATH", syslog_ng_library_path(root))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Unpacks Debian's syslog-ng, and those of its libraries that are not
/// installed, into syslog_ng_root() without installing them: the package
/// conflicts with rsyslog. Tests run it as a second real collector.
fn syslog_ng_apart() -> Result<()> {
    let root = syslog_ng_root();
    if syslog_ng_runs(&root) {
        return Ok(());
    }
    let wanted: Vec<&str> = SYSLOG_NG_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            *p == "syslog-ng-core"
                || output("dpkg-query", &["-W", "-f=${db:Status-Status}", p]).as_deref()
                    != Some("installed")
        })
        .collect();
    println!(
        "setup: unpacking syslog-ng apart from rsyslog into {} ({wanted:?})",
        root.display()
    );
    let debs = tempfile_dir()?;
    let download = || {
        Command::new("apt-get")
            .current_dir(&debs)
            // As root, apt's sandbox user cannot write into our directory.
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(&wanted)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        // Stale or missing package lists on a fresh machine.
        run_status(Command::new("apt-get").arg("update").arg("-q"))?;
        if !download() {
            bail!("apt-get download {wanted:?} failed; syslog-ng is needed by the probe tests");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    for deb in std::fs::read_dir(&debs)? {
        let deb = deb?.path();
        run_status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    }
    let _ = std::fs::remove_dir_all(&debs);
    if !syslog_ng_runs(&root) {
        bail!(
            "syslog-ng unpacked in {} does not run; `LD_LIBRARY_PATH={} ldd {}/usr/sbin/syslog-ng` shows what is missing",
            root.display(),
            syslog_ng_library_path(&root),
            root.display()
        );
    }
    Ok(())
}

/// A fresh directory for downloads, under the data home (same filesystem).
fn tempfile_dir() -> Result<PathBuf> {
    let dir = data_home().join(format!("download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn bpf_linker() -> Result<()> {
    if output("bpf-linker", &["--version"]).is_some() {
        return Ok(());
    }
    let version = output("rustc", &["+nightly", "-vV"])
        .context("rustc +nightly -vV failed; is the nightly toolchain installed?")?;
    let field = |name: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let release = field("release:").context("no release in rustc -vV")?;
    let llvm = field("LLVM version:").context("no LLVM version in rustc -vV")?;
    let major = llvm.split('.').next().unwrap_or_default().to_owned();
    let sysroot =
        output("rustc", &["+nightly", "--print", "sysroot"]).context("rustc --print sysroot")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    // The real library, e.g. libLLVM.so.22.1-rust-1.97.0-nightly (the
    // libLLVM-22-rust-*.so beside it is a linker script).
    let real = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;
    let prefix = llvm_prefix(&release);
    let plib = prefix.join("lib");
    std::fs::create_dir_all(&plib)?;
    for name in ["libLLVM.so", real.as_str()] {
        let link = plib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&real), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} ({})",
        prefix.display()
    );
    let mut c = Command::new("cargo");
    c.args([
        "install",
        "bpf-linker",
        "--locked",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
    ])
    .arg(format!("llvm-{major}"))
    .env("LLVM_PREFIX", &prefix)
    .env(format!("LLVM_SYS_{major}1_PREFIX"), &prefix);
    run_status(&mut c)?;
    if output("bpf-linker", &["--version"]).is_none() {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` does not run; is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}

/// Installs what of `wanted` is missing, with apt. Setup targets Debian and
/// its derivatives (Ubuntu, ...); elsewhere it says what to install.
fn debian_packages(wanted: &[(&str, &str)]) -> Result<()> {
    if output("dpkg-query", &["--version"]).is_none() {
        let list: Vec<String> = wanted
            .iter()
            .map(|(p, why)| format!("  {p}: {why}"))
            .collect();
        bail!(
            "setup targets Debian and its derivatives (it installs with apt-get and checks with dpkg-query), and this host has no dpkg-query. Install the equivalents of these Debian packages with your distribution's tools, then run it again:\n{}",
            list.join("\n")
        );
    }
    let missing: Vec<&str> = wanted
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| {
            output("dpkg-query", &["-W", "-f=${db:Status-Status}", p]).as_deref()
                != Some("installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {missing:?}; run `sudo apt-get install {}` or run setup as root",
            missing.join(" ")
        );
    }
    println!("setup: installing Debian packages {missing:?}");
    let _no_daemons = NoServiceStarts::install();
    run_status(Command::new("apt-get").arg("update").arg("-q"))?;
    run_status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Debian's policy-rc.d (invoke-rc.d(8)): while it exists and exits 101,
/// packages' maintainer scripts start no services. The tools setup
/// installs (etcd, haproxy, rsyslog, prometheus) are run by the tests on
/// their own ports; on a host running systemd their packaged services
/// would otherwise start and stay, etcd on 2379 and Prometheus on 9090
/// among them. An existing policy-rc.d is the host's and is left alone.
struct NoServiceStarts(Option<std::path::PathBuf>);

impl NoServiceStarts {
    fn install() -> Self {
        Self::install_at(std::path::Path::new("/usr/sbin/policy-rc.d"))
    }

    fn install_at(path: &std::path::Path) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        if path.exists() {
            return Self(None);
        }
        let written = std::fs::write(
            path,
            "#!/bin/sh\n# Written by `cargo xtask setup` while it installs packages.\nexit 101\n",
        )
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)));
        match written {
            Ok(()) => Self(Some(path.to_path_buf())),
            Err(e) => {
                println!(
                    "setup: could not write {}: {e}; packaged services may start",
                    path.display()
                );
                Self(None)
            }
        }
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NoServiceStarts;

    #[test]
    fn the_policy_refuses_starts_while_packages_install_and_then_goes() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy-rc.d");
        {
            let _guard = NoServiceStarts::install_at(&path);
            // invoke-rc.d runs it with the service and action: 101 = refused.
            let status = std::process::Command::new(&path)
                .args(["etcd", "start"])
                .status()
                .unwrap();
            assert_eq!(status.code(), Some(101));
        }
        assert!(!path.exists(), "removed once the install is over");
        // A policy the host already has is the host's: kept as it was.
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        drop(NoServiceStarts::install_at(&path));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
