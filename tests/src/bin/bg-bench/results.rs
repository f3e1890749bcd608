//! The throughput table, printed and written to bench/results/.
use std::{fmt::Write as _, path::PathBuf};

use anyhow::Result;

use crate::{
    throughput::{FlipOutcome, Outcome},
    topology::{Gen, Traffic},
    zero_loss::Found,
};

pub(crate) fn pps(o: &Outcome) -> f64 {
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

/// A row at maximum load of one scenario, traffic and generator.
fn max_load(r: &Outcome, scenario: &str, traffic: Traffic, generator: Gen) -> bool {
    r.scenario == scenario && r.traffic == traffic && r.rate.is_none() && r.generator == generator
}

/// bluegreen's zero-loss rate over another scenario's, as text: a lower
/// bound (">=") when only bluegreen's is one, an upper bound when only the
/// other's is, and nothing to say when both are (both carried all the
/// generator offered).
fn ratio_text(a: Option<(u32, bool)>, b: Option<(u32, bool)>, other: &str) -> String {
    match (a, b) {
        (Some((_, true)), Some((_, true))) => "n/a: both carried all the generator offered".into(),
        (Some((x, a_low)), Some((y, b_low))) => {
            let sign = match (a_low, b_low) {
                (true, false) => ">= ",
                (false, true) => "<= ",
                _ => "",
            };
            format!("{sign}{:.1}x", f64::from(x) / f64::from(y))
        }
        (Some(_), None) => format!("unbounded ({other} lost frames at every rate)"),
        (None, _) => "bluegreen lost frames at every rate".into(),
    }
}

/// The zero-loss rate of `scenario` with one generator and traffic.
fn zero_loss_of(
    found: &[Found],
    scenario: &str,
    generator: Gen,
    traffic: Traffic,
) -> Option<(u32, bool)> {
    found
        .iter()
        .find(|f| f.scenario == scenario && f.generator == generator && f.traffic == traffic)
        .and_then(Found::rate)
}

/// The highest zero-loss rate of `scenario` with any generator. Bursts only
/// make loss likelier, so a rate that passed with bursts is a lower bound
/// of the rate without them: the best figure is the device's, not the
/// generator's, and it is a lower bound when its search was.
pub fn best_zero_loss(found: &[Found], scenario: &str, traffic: Traffic) -> Option<(u32, bool)> {
    found
        .iter()
        .filter(|f| f.scenario == scenario && f.traffic == traffic)
        .filter_map(Found::rate)
        .max_by_key(|(r, _)| *r)
}

/// The zero-loss table and its ratios, as Markdown.
pub fn zero_loss_tables(rows: &[Outcome], found: &[Found]) -> String {
    let mut md = String::from(
        "## Zero-loss throughput (RFC 2544, loss <= 0.01 %)\n\nBinary search over the offered rate, each trial at the rate the generator really offered. \"At least\" marks a figure where the generator's own ceiling passed. The burst is the longest run of frames the generator sent back to back in the best passing trial.\n\n| scenario | traffic | generator | zero-loss Mpps | longest burst (frames) | delivered at maximum load, same generator, Mpps |\n|---|---|---|---|---:|---:|\n",
    );
    for f in found {
        let max = rows
            .iter()
            .find(|r| max_load(r, f.scenario, f.traffic, f.generator))
            .map_or(f64::NAN, |r| pps(r) / 1e6);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {max:.3} |",
            f.scenario,
            f.traffic.label(),
            f.generator.label(),
            f.search.describe(),
            f.burst().map_or("-".to_owned(), |b| b.to_string()),
        );
    }
    let _ = writeln!(
        md,
        "\nRatios of zero-loss throughput, each with one generator on both sides:\n\n| generator, traffic | bluegreen / limit (goal >= 0.9x) | bluegreen / nftables (goal >= 5x) | bluegreen / relay (goal >= 20x) |\n|---|---|---|---|"
    );
    let mut pairs: Vec<(Gen, Traffic)> = Vec::new();
    for f in found {
        if !pairs.contains(&(f.generator, f.traffic)) {
            pairs.push((f.generator, f.traffic));
        }
    }
    for (g, t) in pairs {
        let r = |other| {
            ratio_text(
                zero_loss_of(found, "bluegreen", g, t),
                zero_loss_of(found, other, g, t),
                other,
            )
        };
        let _ = writeln!(
            md,
            "| {}, {} | {} | {} | {} |",
            g.label(),
            t.label(),
            r("limit"),
            r("nftables"),
            r("relay")
        );
    }
    let t = Traffic::BASE;
    let r = |other| {
        ratio_text(
            best_zero_loss(found, "bluegreen", t),
            best_zero_loss(found, other, t),
            other,
        )
    };
    let _ = writeln!(
        md,
        "| best of either generator, {} | {} | {} | {} |",
        t.label(),
        r("limit"),
        r("nftables"),
        r("relay")
    );
    md
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
            .find(|r| max_load(r, name, traffic, Gen::LiveFrames))
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
            .find(|r| max_load(r, name, traffic, Gen::LiveFrames))
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
        "| scenario | traffic | generator | sent | delivered | delivered Mpps | loss % | CPU s (system-wide) | CPU ns per delivered packet |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows.iter().filter(|r| r.rate.is_none()) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.2} | {:.3} | {:.2} | {:.0} |",
            r.scenario,
            r.traffic.label(),
            r.generator.label(),
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
        "\nRatios of delivered rates at maximum load (live frames):\n\n| traffic | bluegreen / limit | bluegreen / nftables | bluegreen / relay |\n|---|---:|---:|---:|"
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
        "\n## Fixed offered rates ({})\n\n| scenario | generator | offered Mpps | delivered Mpps | loss % | longest burst (frames) | CPU s (system-wide) |\n|---|---|---:|---:|---:|---:|---:|",
        Traffic::BASE.label()
    );
    for r in rows.iter().filter(|r| r.rate.is_some()) {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.3} | {} | {:.2} |",
            r.scenario,
            r.generator.label(),
            f64::from(r.rate.unwrap_or(0)) / 1e6,
            pps(r) / 1e6,
            r.loss_pct(),
            r.max_burst,
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

pub fn print(rows: &[Outcome], flips: &[FlipOutcome], found: &[Found]) {
    print!(
        "\n{}\n{}",
        zero_loss_tables(rows, found),
        tables(rows, flips)
    );
}

pub fn write(
    rows: &[Outcome],
    flips: &[FlipOutcome],
    found: &[Found],
    scaling: &[crate::scaling::Point],
    sections: &[String],
    quick: bool,
) -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = chrono_like_now();
    // Said from what this kernel has, not assumed: the bench does not drive
    // pktgen yet even where it exists (tests/src/pktgen.rs is its driver).
    let pktgen = if bg_tests::pktgen::KernelProc::open().is_some() {
        "this kernel has pktgen, which the bench does not drive yet"
    } else {
        "as this kernel has no pktgen"
    };
    let mut md = format!(
        "# bluegreen benchmark ({})\n\nMachine: {cores} cores, Linux {}; {date}. UDP syslog (RFC 3164) from 4096 source address and port pairs (trafgen: one address, 64 ports); counting XDP sinks on blue and green. Generators, named on every row: live frames (`bg_gen` through BPF_PROG_TEST_RUN, {pktgen}; 50 ms batches at full speed), paced AF_PACKET (one frame per slot) and netsniff-ng's trafgen (its own frames and checksums, one CPU). CPU is system-wide, so it includes the generator.\n\n",
        if quick { "quick run" } else { "full run" },
        kernel.trim()
    );
    md.push_str(&zero_loss_tables(rows, found));
    md.push('\n');
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
            "scenario": r.scenario, "traffic": r.traffic.label(), "generator": r.generator.label(),
            "offered_pps": r.rate, "longest_burst": r.max_burst,
            "sent": r.sent, "delivered": r.delivered,
            "delivered_pps": pps(r), "loss_pct": r.loss_pct(), "cpu_seconds": r.cpu_seconds,
            "cpu_ns_per_delivered_packet": cpu_ns(r),
        })).collect::<Vec<_>>(),
        "zero_loss": found.iter().map(|f| serde_json::json!({
            "scenario": f.scenario, "traffic": f.traffic.label(), "generator": f.generator.label(),
            "zero_loss_pps": f.search.zero_loss_pps, "lower_bound": f.search.at_ceiling(),
            "longest_burst": f.burst(),
            "trials": f.search.trials.iter().map(|t| serde_json::json!({
                "offered_pps": t.offered_pps, "sent": t.sent, "delivered": t.delivered,
                "loss": t.loss(), "longest_burst": t.max_burst,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "scaling": scaling.iter().map(|p| serde_json::json!({
            "axis": p.axis, "path": p.path, "x": p.x, "ns_per_packet": p.ns_per_packet,
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
    std::fs::write(
        dir.join("latest.svg"),
        crate::plot::svg(rows, flips, found, scaling),
    )?;
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
