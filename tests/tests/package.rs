//! The Debian package (`cargo xtask package`, which `cargo xtask test`
//! runs first): installed with dpkg into a scratch root, it holds every
//! file an operator needs, and the unit's own command line, run as systemd
//! would run it, starts the agent with the example config on a lab
//! interface and steers a syslog stream.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use bg_tests::{
    lab::{Backends, Family, Lab, service_addr},
    notify::Notify,
    privileged,
    traffic::{Sink, occurrences, send_paced, sender},
    unique_id, wait_for,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT: &str = "lib/systemd/system/bluegreen@.service";
const CONFIG: &str = "etc/bluegreen/bluegreen.toml";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn deb() -> PathBuf {
    let arch = text(&run(Command::new("dpkg").arg("--print-architecture")));
    let deb = repo(&format!(
        "target/package/bluegreen_{VERSION}_{}.deb",
        arch.trim()
    ));
    assert!(
        deb.exists(),
        "{} is missing: `cargo xtask package` builds it (`cargo xtask test` does so first)",
        deb.display()
    );
    deb
}

/// A scratch root the package is installed into with dpkg; removed on drop.
struct Root(PathBuf);

impl Root {
    fn install() -> Self {
        let root = Root(std::env::temp_dir().join(format!("bluegreen-pkg-{}", unique_id())));
        let admin = root.0.join("var/lib/dpkg");
        for d in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(admin.join(d)).unwrap();
        }
        std::fs::write(admin.join("status"), "").unwrap();
        // The scratch root has no libc6 package: the dependencies are
        // checked against the host's instead (`depends_hold_on_this_host`).
        run(Command::new("dpkg")
            .arg(format!("--root={}", root.0.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
                "-i",
            ])
            .arg(deb()));
        root
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn dpkg(&self, args: &[&str]) -> String {
        text(&run(Command::new("dpkg")
            .arg(format!("--root={}", self.0.display()))
            .args(args)))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gunzip(path: &Path) -> String {
    let out = run(Command::new("gzip").arg("-dc").arg(path));
    text(&out)
}

#[test]
fn the_package_installs_every_file_an_operator_needs() {
    if !privileged() {
        return;
    }
    let root = Root::install();
    let status = root.dpkg(&["-s", "bluegreen"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(status.contains(&format!("Version: {VERSION}")), "{status}");
    let listed = root.dpkg(&["-L", "bluegreen"]);
    for f in [
        "/usr/bin/bgctl",
        "/etc/bluegreen/bluegreen.toml",
        "/lib/systemd/system/bluegreen@.service",
        "/usr/share/man/man1/bgctl.1.gz",
        "/usr/share/man/man1/bgctl-agent.1.gz",
        "/usr/share/man/man1/bgctl-check-config.1.gz",
        "/usr/share/bash-completion/completions/bgctl",
        "/usr/share/zsh/vendor-completions/_bgctl",
        "/usr/share/fish/vendor_completions.d/bgctl.fish",
        "/usr/share/doc/bluegreen/copyright",
        "/usr/share/doc/bluegreen/LICENSE-MIT",
        "/usr/share/doc/bluegreen/LICENSE-APACHE",
    ] {
        assert!(listed.lines().any(|l| l == f), "{f} not in dpkg -L");
        assert!(root.path(&f[1..]).is_file(), "{f} not installed");
    }
    // dpkg keeps an operator's edits of the config across upgrades.
    let conffiles = std::fs::read_to_string(root.path("var/lib/dpkg/info/bluegreen.conffiles"))
        .unwrap_or_default();
    assert_eq!(conffiles.trim(), "/etc/bluegreen/bluegreen.toml");

    // The installed (stripped) binary runs and is this version.
    let bgctl = root.path("usr/bin/bgctl");
    let version = text(&run(Command::new(&bgctl).arg("--version")));
    assert_eq!(version.trim(), format!("bgctl {VERSION}"));
    let checked = run(Command::new(&bgctl)
        .arg("check-config")
        .arg(root.path(CONFIG)));
    assert!(text(&checked).contains("valid: 2 service(s)"));

    // Files the package copies are the repository's, byte for byte.
    for (from, to) in [
        ("packaging/bluegreen.toml", CONFIG),
        ("packaging/bluegreen@.service", UNIT),
        ("LICENSE-MIT", "usr/share/doc/bluegreen/LICENSE-MIT"),
        ("LICENSE-APACHE", "usr/share/doc/bluegreen/LICENSE-APACHE"),
        ("README.md", "usr/share/doc/bluegreen/README.md"),
        (
            "docs/operations.md",
            "usr/share/doc/bluegreen/docs/operations.md",
        ),
        (
            "docs/configuration.md",
            "usr/share/doc/bluegreen/docs/configuration.md",
        ),
        (
            "packaging/prometheus/bluegreen.rules.yml",
            "usr/share/bluegreen/prometheus/bluegreen.rules.yml",
        ),
        (
            "packaging/grafana/bluegreen.json",
            "usr/share/bluegreen/grafana/bluegreen.json",
        ),
    ] {
        assert_eq!(
            std::fs::read(repo(from)).unwrap(),
            std::fs::read(root.path(to)).unwrap(),
            "{to} differs from {from}"
        );
    }
    // The licence files are the licences Cargo.toml declares.
    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"MIT OR Apache-2.0\""));
    let mit = std::fs::read_to_string(repo("LICENSE-MIT")).unwrap();
    assert!(mit.starts_with("MIT License") || mit.contains("Permission is hereby granted"));
    let apache = std::fs::read_to_string(repo("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0"));
    let copyright =
        std::fs::read_to_string(root.path("usr/share/doc/bluegreen/copyright")).unwrap();
    assert!(
        copyright.contains("License: MIT or Apache-2.0"),
        "{copyright}"
    );

    // Man pages: valid gzip, roff with the command's title and its
    // subcommands' pages named in it.
    let man = gunzip(&root.path("usr/share/man/man1/bgctl.1.gz"));
    assert!(man.contains(".TH bgctl 1"), "{man}");
    assert!(man.contains("bgctl\\-flip(1)"), "{man}");
    let check = gunzip(&root.path("usr/share/man/man1/bgctl-check-config.1.gz"));
    assert!(check.contains("nginx \\-t"), "{check}");

    // Completions: bash loads it and knows the subcommands.
    let bash = root.path("usr/share/bash-completion/completions/bgctl");
    let out = run(Command::new("bash").arg("-c").arg(format!(
        "source {} && complete -p bgctl && COMP_WORDS=(bgctl che); COMP_CWORD=1; _bgctl bgctl che bgctl && echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    assert!(text(&out).contains("check-config"), "{}", text(&out));
    let zsh =
        std::fs::read_to_string(root.path("usr/share/zsh/vendor-completions/_bgctl")).unwrap();
    assert!(zsh.starts_with("#compdef bgctl"), "{zsh:.80}");
    let fish = std::fs::read_to_string(root.path("usr/share/fish/vendor_completions.d/bgctl.fish"))
        .unwrap();
    assert!(fish.contains("complete -c bgctl"), "{fish:.80}");

    // The installed docs' links and images resolve within the package.
    let doc = root.path("usr/share/doc/bluegreen");
    let mut pages = vec![doc.join("README.md")];
    for entry in std::fs::read_dir(doc.join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            pages.push(p);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for target in local_links(&text) {
            if !page.parent().unwrap().join(&target).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links the package does not hold: {broken:?}"
    );
}

/// Relative link and image targets of a Markdown page (`](x)`, `src="x"`),
/// without their `#fragment`; web links and bare fragments left out.
fn local_links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (open, close) in [("](", ')'), ("src=\"", '"')] {
        for piece in markdown.split(open).skip(1) {
            let Some(target) = piece.split(close).next() else {
                continue;
            };
            let target = target.split('#').next().unwrap_or_default().trim();
            if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
                out.push(target.to_owned());
            }
        }
    }
    out
}

#[test]
fn the_packages_depends_hold_on_this_host() {
    if !privileged() {
        return;
    }
    let deb = deb();
    let depends = text(&run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .arg("Depends")));
    assert!(depends.contains("libc6 (>= 2."), "{depends}");
    for dep in depends.trim().split(", ") {
        let (name, version) = match dep.split_once(" (>= ") {
            Some((n, v)) => (n, Some(v.trim_end_matches(')'))),
            None => (dep, None),
        };
        let installed = text(&run(Command::new("dpkg-query").args([
            "-W",
            "-f=${Version}",
            name,
        ])));
        if let Some(v) = version {
            run(Command::new("dpkg").args(["--compare-versions", &installed, "ge", v]));
        }
    }
}

#[test]
fn systemd_accepts_the_installed_unit() {
    if !privileged() {
        return;
    }
    let root = Root::install();
    // systemd-analyze checks that ExecStart's program exists and that the
    // Documentation= man page opens: point both at the scratch root.
    let dir = root.path("verify");
    std::fs::create_dir_all(&dir).unwrap();
    let unit = std::fs::read_to_string(root.path(UNIT)).unwrap();
    let bgctl = root.path("usr/bin/bgctl");
    std::fs::write(
        dir.join("bluegreen@.service"),
        unit.replace("/usr/bin/bgctl", bgctl.to_str().unwrap()),
    )
    .unwrap();
    std::os::unix::fs::symlink("bluegreen@.service", dir.join("bluegreen@eth0.service")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("bluegreen@eth0.service"))
        .env("MANPATH", root.path("usr/share/man"))
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A key systemd cannot parse is only a warning ("..., ignoring").
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// The agent, started from the unit's command line; SIGTERM on drop.
struct Unit(Child);

impl Drop for Unit {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let stopped = wait_for(Duration::from_secs(10), || self.0.try_wait().ok()?);
        if stopped.is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `ExecStartPre=`/`ExecStart=` of the installed unit for interface
/// `iface`, with systemd's substitutions, the scratch root's paths, and
/// `extra` for `$BLUEGREEN_ARGS` (as /etc/default/bluegreen-IFACE sets it).
fn unit_command(root: &Root, key: &str, lab: &Lab, extra: &str) -> Vec<String> {
    let unit = std::fs::read_to_string(root.path(UNIT)).unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="));
    line.replace(
        "/usr/bin/bgctl",
        root.path("usr/bin/bgctl").to_str().unwrap(),
    )
    .replace("${BLUEGREEN_CONFIG}", root.path(CONFIG).to_str().unwrap())
    .replace(
        "/run/bluegreen/",
        &format!("{}/run-", lab.path("").display()),
    )
    .replace(
        "/var/lib/bluegreen/",
        &format!("{}/state-", lab.path("").display()),
    )
    .replace("%i", &lab.lb_if)
    .replace("$BLUEGREEN_ARGS", extra)
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

#[test]
fn the_units_command_runs_the_example_config_on_a_lab_interface() {
    if !privileged() {
        return;
    }
    let root = Root::install();
    // The example's addresses are the lab's: blue 198.18.1.2, green
    // 198.18.2.2, clients sending to 198.18.0.1:514.
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let pins = format!("--pin-root {}", lab.pin_root.display());
    let pre = unit_command(&root, "ExecStartPre", &lab, &pins);
    run(Command::new(&pre[0]).args(&pre[1..]));
    let start = unit_command(&root, "ExecStart", &lab, &pins);
    let socket = start[start.iter().position(|a| a == "--socket").unwrap() + 1].clone();
    let mut notify = Notify::bind(&lab.path("notify.sock"));
    let log = std::fs::File::create(lab.path("unit.log")).unwrap();
    // As systemd starts a unit: stderr is the journal's stream, and
    // JOURNAL_STREAM names it (device:inode).
    let journal = {
        use std::os::unix::fs::MetadataExt as _;
        let m = log.metadata().unwrap();
        format!("{}:{}", m.dev(), m.ino())
    };
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.lb.name))
        .arg("--")
        .args(&start)
        .env("NOTIFY_SOCKET", lab.path("notify.sock"))
        .env("JOURNAL_STREAM", journal)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the unit's ExecStart");
    let unit = Unit(child);
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("STATUS="), "{ready}");

    let ctl = |args: &[&str]| {
        Command::new(root.path("usr/bin/bgctl"))
            .args(["--socket", &socket])
            .args(args)
            .output()
            .unwrap()
    };
    let status: serde_json::Value = serde_json::from_slice(&ctl(&["--json", "status"]).stdout)
        .unwrap_or_else(|e| {
            let mut log = String::new();
            let _ = std::fs::File::open(lab.path("unit.log"))
                .and_then(|mut f| f.read_to_string(&mut log));
            panic!("status: {e}; the agent's log:\n{log}")
        });
    let names: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["syslog-udp", "syslog-tcp"]);
    assert_eq!(status["active"], "blue");

    // A stream of syslog datagrams reaches the example's blue collector.
    let blue = Sink::start(lab.backend_ns("blue"), lab.backend("blue", Family::V4)).unwrap();
    let client = sender(&lab.client, service_addr(Family::V4)).expect("sender");
    let msgs: Vec<String> = (0..200).map(|i| format!("package-{i} ")).collect();
    send_paced(&client, &msgs, 1000).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let got = blue.finish();
    let seen = occurrences(&got, &msgs);
    let lost: Vec<_> = msgs.iter().filter(|m| seen[*m] != 1).take(5).collect();
    assert!(lost.is_empty(), "not delivered exactly once: {lost:?}");
    // systemctl stop: SIGTERM, STOPPING=1, and the data path stays.
    drop(unit);
    notify.wait_for("STOPPING=1");
    // Every line the journal gets starts with its syslog priority, so
    // `journalctl -p warning` works, and has no timestamp of its own.
    let logged = std::fs::read_to_string(lab.path("unit.log")).unwrap();
    let lines: Vec<&str> = logged.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let p = l.strip_prefix('<').and_then(|r| r.split_once('>'));
        assert!(
            p.is_some_and(|(n, rest)| matches!(n, "3" | "4" | "6" | "7") && !rest.starts_with('[')),
            "not a journal line: {l:?}"
        );
    }
    assert!(lines.iter().any(|l| l.starts_with("<6>")), "{logged}");
}
