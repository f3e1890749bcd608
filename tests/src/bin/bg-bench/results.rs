//! The throughput table, printed and written to bench/results/.
use std::{fmt::Write as _, path::PathBuf};

use anyhow::Result;

use crate::throughput::{FlipOutcome, Outcome};

fn pps(o: &Outcome) -> f64 {
    o.delivered_pps()
}

pub fn write(rows: &[Outcome], flips: &FlipOutcome, quick: bool) -> Result<()> {
    let by = |name: &str| rows.iter().find(|r| r.scenario == name);
    let ratio = |a: &str, b: &str| match (by(a), by(b)) {
        (Some(a), Some(b)) if pps(b) > 0.0 => pps(a) / pps(b),
        _ => f64::NAN,
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = chrono_like_now();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# bluegreen throughput ({})\n",
        if quick { "quick run" } else { "full run" }
    );
    let _ = writeln!(
        md,
        "Machine: {cores} cores, Linux {}; {date}. UDP/IPv4 syslog, about 100 B, source ports varied; generator: BPF_PROG_TEST_RUN live frames at maximum offered load; counting XDP sinks on blue and green.\n",
        kernel.trim()
    );
    let _ = writeln!(
        md,
        "| scenario | sent | delivered | delivered Mpps | loss % | CPU s (system-wide) |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.3} | {:.2} |",
            r.scenario,
            r.sent,
            r.delivered,
            pps(r) / 1e6,
            r.loss_pct(),
            r.cpu_seconds
        );
    }
    let (l, n, rl) = (
        ratio("bluegreen", "limit"),
        ratio("bluegreen", "nftables"),
        ratio("bluegreen", "relay"),
    );
    let _ = writeln!(
        md,
        "\nbluegreen / limit {l:.2}x (goal >= 0.9x), / nftables {n:.1}x (goal >= 5x), / relay {rl:.1}x (goal >= 20x)\n"
    );
    let lost = flips.sent.saturating_sub(flips.blue + flips.green);
    let _ = writeln!(
        md,
        "Flip under load at {:.1} Mpps offered: {} flips in {:.2} s; sent {}, received {} (blue {}, green {}); lost {lost} (goal 0).",
        f64::from(flips.rate) / 1e6,
        flips.flips,
        flips.seconds,
        flips.sent,
        flips.blue + flips.green,
        flips.blue,
        flips.green
    );
    print!("\n{md}");
    let json = serde_json::json!({
        "quick": quick,
        "date": date,
        "machine": {"cores": cores, "kernel": kernel.trim()},
        "throughput": rows.iter().map(|r| serde_json::json!({
            "scenario": r.scenario, "sent": r.sent, "delivered": r.delivered,
            "delivered_pps": pps(r), "loss_pct": r.loss_pct(), "cpu_seconds": r.cpu_seconds,
        })).collect::<Vec<_>>(),
        "ratios": {"bluegreen_over_limit": l, "bluegreen_over_nftables": n, "bluegreen_over_relay": rl},
        "flip_under_load": {"rate_pps": flips.rate, "flips": flips.flips, "sent": flips.sent, "blue": flips.blue, "green": flips.green, "lost": lost},
    });
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("latest.md"), md)?;
    std::fs::write(
        dir.join("latest.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("wrote {}", dir.display());
    Ok(())
}

/// UTC date and time from the system clock (no date crate needed for one line).
fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
