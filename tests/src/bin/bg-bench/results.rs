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
    std::fs::write(dir.join("latest.svg"), svg(rows, flips))?;
    std::fs::write(
        dir.join("latest.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("wrote {}", dir.display());
    Ok(())
}

/// Two panels: delivered Mpps per scenario, and packets per second at each
/// colour across the flips (50 ms samples).
fn svg(rows: &[Outcome], flips: &FlipOutcome) -> String {
    let (w, h) = (760.0, 520.0);
    let mut o = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
    );
    // Panel 1: bars.
    let max = rows.iter().map(pps).fold(1.0, f64::max);
    let _ = writeln!(
        o,
        "<text x='20' y='22' font-size='15'>Delivered Mpps (UDP syslog, ~100 B, max offered load)</text>"
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 40.0 + i as f64 * 42.0;
        let len = 520.0 * pps(r) / max;
        let fill = if r.scenario == "bluegreen" {
            "#1f6feb"
        } else {
            "#8b949e"
        };
        let _ = writeln!(o, "<text x='20' y='{}'>{}</text>", y + 20.0, r.scenario);
        let _ = writeln!(
            o,
            "<rect x='110' y='{y}' width='{len:.1}' height='28' fill='{fill}'/>"
        );
        let _ = writeln!(
            o,
            "<text x='{:.1}' y='{}'>{:.2}</text>",
            116.0 + len,
            y + 20.0,
            pps(r) / 1e6
        );
    }
    // Panel 2: per-colour pps across flips, from cumulative samples.
    let top = 250.0;
    let _ = writeln!(
        o,
        "<text x='20' y='{}' font-size='15'>Packets per second at each colour during {} flips at {:.1} Mpps</text>",
        top - 12.0,
        flips.flips,
        f64::from(flips.rate) / 1e6
    );
    let rates: Vec<(f64, f64, f64)> = flips
        .timeline
        .windows(2)
        .map(|p| {
            let dt = (p[1].0 - p[0].0).max(1e-3);
            (
                p[1].0,
                (p[1].1 - p[0].1) as f64 / dt,
                (p[1].2 - p[0].2) as f64 / dt,
            )
        })
        .collect();
    let tmax = rates.last().map_or(1.0, |r| r.0).max(1e-3);
    let ymax = rates.iter().map(|r| r.1.max(r.2)).fold(1.0, f64::max);
    let (x0, y0, pw, ph) = (60.0, top + 220.0, 660.0, 200.0);
    let _ = writeln!(
        o,
        "<line x1='{x0}' y1='{y0}' x2='{}' y2='{y0}' stroke='black'/>",
        x0 + pw
    );
    let _ = writeln!(
        o,
        "<line x1='{x0}' y1='{y0}' x2='{x0}' y2='{}' stroke='black'/>",
        y0 - ph
    );
    let _ = writeln!(
        o,
        "<text x='{x0}' y='{}'>0 s</text><text x='{}' y='{}'>{tmax:.1} s</text>",
        y0 + 16.0,
        x0 + pw - 30.0,
        y0 + 16.0
    );
    let _ = writeln!(
        o,
        "<text x='8' y='{}'>{:.2} Mpps</text>",
        y0 - ph + 4.0,
        ymax / 1e6
    );
    for (idx, colour) in [(1usize, "#1f6feb"), (2, "#2da44e")] {
        let points: Vec<String> = rates
            .iter()
            .map(|r| {
                let v = if idx == 1 { r.1 } else { r.2 };
                format!("{:.1},{:.1}", x0 + pw * r.0 / tmax, y0 - ph * v / ymax)
            })
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{}'/>",
            points.join(" ")
        );
    }
    let _ = writeln!(
        o,
        "<text x='{}' y='{}' fill='#1f6feb'>blue</text><text x='{}' y='{}' fill='#2da44e'>green</text>",
        x0 + 10.0,
        y0 - ph - 2.0,
        x0 + 60.0,
        y0 - ph - 2.0
    );
    o.push_str("</svg>\n");
    o
}

/// UTC date and time from the system clock (no date crate needed for one line).
fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
