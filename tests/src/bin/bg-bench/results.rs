//! The throughput table, printed and written to bench/results/.
use std::{fmt::Write as _, path::PathBuf};

use anyhow::Result;

use crate::{
    throughput::{FlipOutcome, Outcome},
    topology::Traffic,
};

fn pps(o: &Outcome) -> f64 {
    o.delivered_pps()
}

/// One line about a flip run.
pub fn flip_line(o: &FlipOutcome) -> String {
    let (lasted, ongoing) = o.misrouting();
    format!(
        "{}: {} flips in {:.2} s at {:.2} Mpps offered; sent {}, received {} (blue {}, green {}), lost {}, wrong colour {} (misrouting lasted {:.2} s{})",
        o.scenario,
        o.flips(),
        o.seconds,
        f64::from(o.rate) / 1e6,
        o.sent,
        o.blue + o.green,
        o.blue,
        o.green,
        o.lost(),
        o.wrong,
        lasted,
        if ongoing {
            ", not ended before the next flip or the end"
        } else {
            ""
        }
    )
}

/// CPU time (system-wide, generator included) per delivered packet.
fn cpu_ns(o: &Outcome) -> f64 {
    o.cpu_seconds * 1e9 / o.delivered.max(1) as f64
}

/// How many times less CPU per delivered packet bluegreen spent than
/// another scenario, at maximum load with the same traffic.
fn cpu_ratio(rows: &[Outcome], traffic: Traffic, other: &str) -> f64 {
    let at = |name: &str| {
        rows.iter()
            .find(|r| r.scenario == name && r.traffic == traffic && r.rate.is_none())
    };
    match (at("bluegreen"), at(other)) {
        (Some(a), Some(b)) if cpu_ns(a) > 0.0 => cpu_ns(b) / cpu_ns(a),
        _ => f64::NAN,
    }
}

/// Ratio of bluegreen's delivered rate to another scenario's, at maximum
/// load with the same traffic.
fn ratio(rows: &[Outcome], traffic: Traffic, other: &str) -> f64 {
    let at = |name: &str| {
        rows.iter()
            .find(|r| r.scenario == name && r.traffic == traffic && r.rate.is_none())
    };
    match (at("bluegreen"), at(other)) {
        (Some(a), Some(b)) if pps(b) > 0.0 => pps(a) / pps(b),
        _ => f64::NAN,
    }
}

/// The tables, as Markdown.
fn tables(rows: &[Outcome], flips: &[FlipOutcome]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Throughput at maximum offered load\n");
    let _ = writeln!(
        md,
        "| scenario | traffic | sent | delivered | delivered Mpps | loss % | CPU s (system-wide) | CPU ns per delivered packet |\n|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows.iter().filter(|r| r.rate.is_none()) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2} | {:.3} | {:.2} | {:.0} |",
            r.scenario,
            r.traffic.label(),
            r.sent,
            r.delivered,
            pps(r) / 1e6,
            r.loss_pct(),
            r.cpu_seconds,
            cpu_ns(r)
        );
    }
    let _ = writeln!(
        md,
        "\n| traffic | bluegreen / limit (goal >= 0.9x) | bluegreen / nftables (goal >= 5x) | bluegreen / relay (goal >= 20x) |\n|---|---:|---:|---:|"
    );
    for t in Traffic::ALL {
        let _ = writeln!(
            md,
            "| {} | {:.2}x | {:.1}x | {:.1}x |",
            t.label(),
            ratio(rows, t, "limit"),
            ratio(rows, t, "nftables"),
            ratio(rows, t, "relay")
        );
    }
    let _ = writeln!(
        md,
        "\nThe same by CPU per delivered packet (the published anchors, Katran 4.3x IPVS and Cilium 4.7x kube-proxy, are per core):\n\n| traffic | nftables CPU / bluegreen CPU | relay CPU / bluegreen CPU |\n|---|---:|---:|"
    );
    for t in Traffic::ALL {
        let _ = writeln!(
            md,
            "| {} | {:.1}x | {:.1}x |",
            t.label(),
            cpu_ratio(rows, t, "nftables"),
            cpu_ratio(rows, t, "relay")
        );
    }
    let _ = writeln!(
        md,
        "\n## Fixed offered rates ({})\n\n| scenario | offered Mpps | delivered Mpps | loss % | CPU s (system-wide) |\n|---|---:|---:|---:|---:|",
        Traffic::BASE.label()
    );
    for r in rows.iter().filter(|r| r.rate.is_some()) {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.3} | {:.2} |",
            r.scenario,
            f64::from(r.rate.unwrap_or(0)) / 1e6,
            pps(r) / 1e6,
            r.loss_pct(),
            r.cpu_seconds
        );
    }
    let _ = writeln!(
        md,
        "\n## Flip under load ({})\n\nA frame generated after a flip completed carries the new colour; one that reaches the other colour is misrouted. Goal for bluegreen: 0 lost over 1000 flips.\n\n| scenario | flips | offered Mpps | sent | blue | green | lost | lost without flips | wrong colour | misrouting lasted |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        Traffic::BASE.label()
    );
    for o in flips {
        let (lasted, ongoing) = o.misrouting();
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            o.scenario,
            o.flips(),
            f64::from(o.rate) / 1e6,
            o.sent,
            o.blue,
            o.green,
            o.lost(),
            o.baseline_lost.map_or("-".to_owned(), |l| l.to_string()),
            o.wrong,
            if o.wrong == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{lasted:.2} s{}",
                    if ongoing {
                        " or more: not ended before the next flip"
                    } else {
                        ""
                    }
                )
            }
        );
    }
    md
}

pub fn print(rows: &[Outcome], flips: &[FlipOutcome]) {
    print!("\n{}", tables(rows, flips));
}

pub fn write(
    rows: &[Outcome],
    flips: &[FlipOutcome],
    sections: &[String],
    quick: bool,
) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = chrono_like_now();
    let mut md = format!(
        "# bluegreen benchmark ({})\n\nMachine: {cores} cores, Linux {}; {date}. UDP syslog (RFC 3164) from 4096 source address and port pairs; generator: BPF_PROG_TEST_RUN live frames (no pktgen module on this kernel); counting XDP sinks on blue and green. CPU is system-wide, so it includes the generator.\n\n",
        if quick { "quick run" } else { "full run" },
        kernel.trim()
    );
    md.push_str(&tables(rows, flips));
    for s in sections {
        md.push('\n');
        md.push_str(s);
    }
    print!("\n{md}");
    let json = serde_json::json!({
        "quick": quick,
        "date": date,
        "machine": {"cores": cores, "kernel": kernel.trim()},
        "throughput": rows.iter().map(|r| serde_json::json!({
            "scenario": r.scenario, "traffic": r.traffic.label(), "offered_pps": r.rate,
            "sent": r.sent, "delivered": r.delivered,
            "delivered_pps": pps(r), "loss_pct": r.loss_pct(), "cpu_seconds": r.cpu_seconds,
            "cpu_ns_per_delivered_packet": cpu_ns(r),
        })).collect::<Vec<_>>(),
        "ratios": Traffic::ALL.iter().map(|&t| serde_json::json!({
            "traffic": t.label(),
            "bluegreen_over_limit": ratio(rows, t, "limit"),
            "bluegreen_over_nftables": ratio(rows, t, "nftables"),
            "bluegreen_over_relay": ratio(rows, t, "relay"),
            "cpu_per_packet_nftables_over_bluegreen": cpu_ratio(rows, t, "nftables"),
            "cpu_per_packet_relay_over_bluegreen": cpu_ratio(rows, t, "relay"),
        })).collect::<Vec<_>>(),
        "flip_under_load": flips.iter().map(|o| {
            let (lasted, ongoing) = o.misrouting();
            serde_json::json!({
                "scenario": o.scenario, "rate_pps": o.rate, "flips": o.flips(), "sent": o.sent,
                "blue": o.blue, "green": o.green, "lost": o.lost(), "lost_without_flips": o.baseline_lost, "wrong_colour": o.wrong,
                "misrouting_seconds": lasted, "misrouting_at_end": ongoing,
            })
        }).collect::<Vec<_>>(),
    });
    // A quick run is a smoke test: it must not replace the published figures.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = if quick {
        root.join("target/bench-quick")
    } else {
        root.join("bench/results")
    };
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
fn svg(rows: &[Outcome], flips: &[FlipOutcome]) -> String {
    let rows: Vec<&Outcome> = rows
        .iter()
        .filter(|r| r.rate.is_none() && r.traffic == Traffic::BASE)
        .collect();
    let Some(flips) = flips.iter().find(|f| f.scenario == "bluegreen") else {
        return String::new();
    };
    let (w, h) = (760.0, 520.0);
    let mut o = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n"
    );
    // Panel 1: bars.
    let max = rows.iter().map(|r| pps(r)).fold(1.0, f64::max);
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
        flips.flips(),
        f64::from(flips.rate) / 1e6
    );
    let rates: Vec<(f64, f64, f64)> = flips
        .timeline
        .windows(2)
        .map(|p| {
            let dt = (p[1].t - p[0].t).max(1e-3);
            (
                p[1].t,
                (p[1].blue - p[0].blue) as f64 / dt,
                (p[1].green - p[0].green) as f64 / dt,
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
