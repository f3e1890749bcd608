//! Developer tasks: `cargo xtask setup | build | package | run | test | bench | fuzz | soak`.
mod cmd;
mod package;
mod setup;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use cmd::{cargo, is_root, run_status, workspace_root};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "bluegreen developer tasks")]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make this machine ready: nightly rust-src, bpf-linker built against the
    /// nightly's LLVM, and the Debian packages the lab and tests use. Skips
    /// whatever is already present and working.
    Setup,
    /// Build bgctl (with its embedded eBPF object) in release mode.
    /// Installs only what the build needs (Rust parts, protoc).
    Build,
    /// Build target/package/bluegreen_<version>_<arch>.deb: bgctl, the
    /// example config, the systemd unit, man pages, completions, licences.
    /// Install it with `sudo apt install ./target/package/bluegreen_*.deb`.
    Package,
    /// With no arguments: start the self-contained lab (namespaces, rsyslog
    /// backends, the agent, a trickle of traffic), installing the lab's
    /// tools first. With arguments after `--`: run `bgctl agent <ARGS>` on
    /// this host, installing nothing beyond what the build needs.
    Run {
        /// Arguments for `bgctl agent`, e.g. `-- --iface eth0 --config bg.toml`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        agent_args: Vec<String>,
    },
    /// fmt --check, clippy -D warnings, unit tests, then the privileged tests.
    Test {
        /// Extra arguments for the privileged test run (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        filter: Vec<String>,
    },
    /// Benchmarks; with no selection, all of them.
    Bench {
        /// Program micro-benchmark through BPF_PROG_TEST_RUN.
        #[arg(long)]
        prog: bool,
        /// Detection-to-rollback and messages lost to a dead green.
        #[arg(long)]
        rollback: bool,
        /// Shorter run (CI).
        #[arg(long)]
        quick: bool,
    },
    /// The soak: the lab with rsyslog on both colours under a fixed-rate
    /// UDP and TCP syslog stream, a flip every second and, every 10 s, one
    /// of: agent kill -9 and restart, a deploy rolled back when its colour
    /// dies in bake, a backend restart, the state directory's disk full.
    /// Prints what was sent, lost, duplicated, misrouted and reset; fails
    /// on any of it outside the documented windows.
    Soak {
        /// How long, in seconds (at least 30).
        #[arg(long, default_value_t = 3600)]
        duration: u64,
        /// The chaos schedule's seed (default: a fresh one, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The differential fuzzer of the data path: random frames and map
    /// states through the real bg_steer and bg_steer_tc (BPF_PROG_TEST_RUN,
    /// as root), each
    /// answer held against a model of the documented rules, checksums
    /// verified by etherparse. Prints its seed, frames per second and what
    /// the frames reached; a disagreement prints the command replaying it.
    Fuzz {
        /// How many frames.
        #[arg(long, default_value_t = 1_000_000)]
        frames: u64,
        /// Where to start (default: a fresh seed, printed).
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> Result<()> {
    let task = Xtask::parse();
    match task.command {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::for_build()?;
            build()
        }
        Task::Package => {
            setup::for_build()?;
            build()?;
            package::run(&bgctl()).map(drop)
        }
        Task::Run { agent_args } => {
            if agent_args.is_empty() {
                setup::run()?;
            } else {
                setup::for_build()?;
            }
            build()?;
            let root = workspace_root();
            if agent_args.is_empty() {
                cargo(&["build", "--release", "-p", "bg-tests", "--bin", "bg-lab"])?;
                let lab = root.join("target/release/bg-lab");
                let mut c = std::process::Command::new(lab);
                c.env("BGCTL_BIN", bgctl());
                run_status(&mut c)
            } else {
                let mut c = std::process::Command::new(bgctl());
                c.arg("agent").args(&agent_args);
                run_status(&mut c)
            }
        }
        Task::Test { filter } => {
            setup::run()?;
            test(&filter)
        }
        Task::Soak { duration, seed } => {
            setup::run()?;
            build()?;
            cargo(&["build", "--release", "-p", "bg-tests", "--bin", "bg-soak"])?;
            let mut c = std::process::Command::new(workspace_root().join("target/release/bg-soak"));
            c.env("BGCTL_BIN", bgctl())
                .args(["--duration", &duration.to_string()]);
            if let Some(seed) = seed {
                c.args(["--seed", &seed.to_string()]);
            }
            run_status(&mut c)
        }
        Task::Fuzz { frames, seed } => {
            setup::for_build()?;
            cargo(&["build", "--release", "-p", "bg-tests", "--bin", "bg-fuzz"])?;
            let mut c = std::process::Command::new(workspace_root().join("target/release/bg-fuzz"));
            c.args(["--frames", &frames.to_string()]);
            if let Some(seed) = seed {
                c.args(["--seed", &seed.to_string()]);
            }
            run_status(&mut c)
        }
        Task::Bench {
            prog,
            rollback,
            quick,
        } => {
            setup::run()?;
            build()?;
            cargo(&["build", "--release", "-p", "bg-tests", "--bin", "bg-bench"])?;
            let mut c =
                std::process::Command::new(workspace_root().join("target/release/bg-bench"));
            if prog {
                c.arg("--prog");
            }
            if rollback {
                c.arg("--rollback");
            }
            if quick {
                c.arg("--quick");
            }
            run_status(&mut c)?;
            if quick && !prog && !rollback {
                check_quick_results()?;
            }
            Ok(())
        }
    }
}

/// CI's assertion on `bench --quick`: it completed and wrote every row.
/// Checked on the written Markdown, independently of the bench's code.
fn check_quick_results() -> Result<()> {
    let path = workspace_root().join("target/bench-quick/latest.md");
    let md =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut missing = Vec::new();
    let scenarios = ["limit", "bluegreen", "nftables", "relay"];
    for s in scenarios {
        for t in ["IPv4 100 B", "IPv4 500 B", "IPv6 100 B", "IPv6 500 B"] {
            for g in ["live frames", "trafgen"] {
                missing.push(format!("| {s} | {t} | {g} | "));
            }
        }
        missing.push(format!("| {s} | IPv4 100 B | paced AF_PACKET | "));
        for r in ["0.10", "0.50", "1.00", "2.00"] {
            missing.push(format!("| {s} | live frames | {r} |"));
        }
    }
    for g in [
        "paced AF_PACKET, IPv4 100 B",
        "live frames, IPv4 100 B",
        "live frames, IPv6 100 B",
    ] {
        missing.push(format!("| {g} | "));
    }
    for t in ["IPv4 100 B", "IPv4 500 B", "IPv6 100 B", "IPv6 500 B"] {
        missing.push(format!("\n| {t} | "));
    }
    missing.push("## Delivered rate by delivery mode".into());
    for m in [
        "(ceiling: redirect, no parsing)",
        "nat",
        "dsr-l2",
        "dsr-ipip",
    ] {
        for t in ["IPv4 100 B", "IPv6 100 B"] {
            missing.push(format!("| {m} | {t} | "));
        }
    }
    missing.extend(
        [
            "| bg_steer UDP/IPv4 ~100 B |",
            "| bg_steer TCP established segment |",
            "| bg_steer_tc UDP/IPv4 ~100 B |",
            "| bg_steer UDP/IPv4, green weight 5000 (split) |",
            "Split: ",
            "## Cost by stage",
            "| parse |",
            "| + service, colour, backend |",
            "| + DNAT and checksums |",
            "| + colour counters |",
            "| + shadow check |",
            "| + next hop and delivery (whole program) |",
            "### The flow lookup by key size",
            "| lookup, 12-byte key (IPv4 addresses and ports) |",
            "| bg_steer UDP/IPv4 ~100 B, nat to XDP_TX (single runs) |",
            "| bg_steer UDP/IPv4 ~100 B, dsr-l2 to XDP_TX (single runs) |",
            "| bg_steer UDP/IPv4 ~100 B, dsr-ipip to XDP_TX (single runs) |",
            "## Rollback",
            "## TCP across flips",
            "## TCP under a flood",
            "## Scrape cost",
            "## Fleet convergence",
            "Detection-to-rollback",
            "with fastinter_ms",
        ]
        .map(String::from),
    );
    missing.retain(|row| !md.contains(row.as_str()));
    // Each flip row starts with the scenario and its flip count, the
    // throughput rows with a traffic label: count the flip rows apart.
    let flip_rows = md
        .lines()
        .skip_while(|l| !l.starts_with("## Flip under load"))
        .take_while(|l| !l.starts_with("## Program"))
        .filter(|l| {
            scenarios
                .iter()
                .any(|s| l.starts_with(&format!("| {s} | ")))
        })
        .count();
    if flip_rows != 3 {
        missing.push(format!("3 flip-under-load rows (found {flip_rows})"));
    }
    // A zero-loss search per scenario for each of 3 generator and traffic
    // pairs, each row ending in the delivered rate at maximum load.
    let zero_loss_rows = md
        .lines()
        .skip_while(|l| !l.starts_with("## Zero-loss throughput (RFC 2544"))
        .take_while(|l| !l.starts_with("Ratios of zero-loss"))
        .filter(|l| {
            scenarios
                .iter()
                .any(|s| l.starts_with(&format!("| {s} | ")))
        })
        .count();
    if zero_loss_rows != 12 {
        missing.push(format!("12 zero-loss rows (found {zero_loss_rows})"));
    }
    if md.contains("NaN") {
        missing.push("no NaN figures".into());
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "bench --quick: {} lacks {}",
            path.display(),
            missing.join(", ")
        );
    }
    println!("bench --quick: every row present in {}", path.display());
    Ok(())
}

fn bgctl() -> PathBuf {
    workspace_root().join("target/release/bgctl")
}

fn build() -> Result<()> {
    cargo(&["build", "--release", "-p", "bg-userspace"])
}

fn test(filter: &[String]) -> Result<()> {
    println!("== cargo fmt --check");
    cargo(&["fmt", "--all", "--", "--check"])?;
    println!("== clippy (user space, -D warnings)");
    cargo(&[
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--exclude",
        "bg-ebpf",
        "--",
        "-D",
        "warnings",
    ])?;
    println!("== clippy (eBPF, -D warnings)");
    let mut c = std::process::Command::new("cargo");
    c.current_dir(workspace_root().join("bg-ebpf")).args([
        "+nightly",
        "clippy",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);
    run_status(&mut c)?;
    let mut totals = cmd::TestTotals::default();
    println!("== unit tests");
    let mut c = std::process::Command::new("cargo");
    c.current_dir(workspace_root()).args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "bg-ebpf",
        "--exclude",
        "bg-tests",
        "--lib",
        "--bins",
        "--tests",
    ]);
    cmd::cargo_test(&mut c, &mut totals)?;
    println!("== privileged tests (network namespaces, XDP, BPF_PROG_TEST_RUN)");
    build()?;
    // The package test installs it into a scratch root.
    package::run(&bgctl())?;
    if !is_root() {
        println!(
            "SKIPPED: the privileged tests need root (CAP_NET_ADMIN, CAP_BPF); run `sudo -E cargo xtask test`"
        );
    } else {
        let mut c = std::process::Command::new("cargo");
        c.current_dir(workspace_root())
            .env("BGCTL_BIN", bgctl())
            .args([
                "test",
                "--release",
                "-p",
                "bg-tests",
                "--lib",
                "--bins",
                "--tests",
                // Every test binary runs, so one run shows every failure.
                "--no-fail-fast",
                "--",
            ])
            .args(filter);
        cmd::cargo_test(&mut c, &mut totals)?;
    }
    println!(
        "\n{} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(())
}
