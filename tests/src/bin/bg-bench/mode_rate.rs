//! The delivered rate of each delivery mode (issue 20) beside the limit,
//! in the same run: the `limit` forwarder, then the real agent with both
//! colours in `nat`, `dsr-l2` and `dsr-ipip`, each on a topology of its
//! own, the live-frames generator at maximum load.
//!
//! The sinks count a dsr-ipip frame by its inner packet. The agent's own
//! counters must show each DSR mode took the frames, so a mode that fell
//! back to another path cannot pass for itself.
use std::fmt::Write as _;

use anyhow::{Result, bail};
use bg_tests::lab::Family;

use crate::{
    median,
    throughput::{Bench, Outcome},
    topology::Traffic,
};

/// Scenario, the mode it steers in, and the counter its frames take.
const MODES: [(&str, &str, Option<&str>); 4] = [
    ("limit", "(ceiling: redirect, no parsing)", None),
    ("bluegreen", "nat", None),
    ("bluegreen-dsr-l2", "dsr-l2", Some("dsr_l2")),
    ("bluegreen-dsr-ipip", "dsr-ipip", Some("dsr_ipip")),
];

const TRAFFIC: [Traffic; 2] = [Traffic::BASE, Traffic::new(Family::V6, 100)];

struct Measured {
    mode: &'static str,
    traffic: Traffic,
    /// Median delivered frames per second over the runs.
    pps: f64,
    loss_pct: f64,
}

/// The section: a table of delivered Mpps and each mode over the limit.
/// The four topologies stand side by side and take their runs in turn, so
/// that the host's drift (large here) falls on every mode alike.
pub fn run(quick: bool) -> Result<String> {
    let (total, runs) = if quick { (200_000, 1) } else { (2_000_000, 5) };
    let mut benches = Vec::new();
    for (scenario, mode, counter) in MODES {
        println!("  modes: {mode}: setting up");
        let bench = Bench::new(scenario)?;
        let before = taken(&bench, counter);
        benches.push((bench, before));
    }
    let mut outcomes: Vec<Vec<Outcome>> = (0..MODES.len() * TRAFFIC.len())
        .map(|_| Vec::new())
        .collect();
    for _ in 0..runs {
        for (m, (bench, _)) in benches.iter().enumerate() {
            for (t, traffic) in TRAFFIC.into_iter().enumerate() {
                outcomes[m * TRAFFIC.len() + t].push(bench.measure(traffic, total, None)?);
            }
        }
    }
    let mut measured = Vec::new();
    for (m, ((bench, before), (_, mode, counter))) in benches.iter().zip(MODES).enumerate() {
        let mut sent = 0;
        for (t, traffic) in TRAFFIC.into_iter().enumerate() {
            let runs = &outcomes[m * TRAFFIC.len() + t];
            sent += runs.iter().map(|o| o.sent).sum::<u64>();
            measured.push(Measured {
                mode,
                traffic,
                pps: median(runs.iter().map(Outcome::delivered_pps).collect()),
                loss_pct: runs.iter().map(Outcome::loss_pct).fold(0.0, f64::max),
            });
        }
        // Every frame the generator sent went by this mode (the flows'
        // neighbours were resolved before the runs).
        if let Some(name) = counter {
            let took = taken(bench, counter) - before;
            if took < sent {
                bail!(
                    "{mode}: the data path counted {took} frames as {name} of {sent} sent: the frames went another way ({})",
                    bench.agent_counters().unwrap_or_default()
                );
            }
        }
    }
    Ok(section(&measured, total, runs))
}

/// The agent's count of `counter` (0 without one).
fn taken(bench: &Bench, counter: Option<&str>) -> u64 {
    counter
        .and_then(|name| bench.agent_counters()?[name].as_u64())
        .unwrap_or(0)
}

fn section(measured: &[Measured], total: u32, runs: usize) -> String {
    let mut md = format!(
        "## Delivered rate by delivery mode\n\nLive frames at maximum load, {total} frames a run, median of {runs}; each mode on a topology of its own, all four set up in this run and measured in turn. The sinks take dsr-l2 frames by MAC and count dsr-ipip frames by their inner packet.\n\n| mode | traffic | delivered Mpps | worst loss % | / limit |\n|---|---|---:|---:|---:|\n"
    );
    for m in measured {
        let limit = measured
            .iter()
            .find(|l| l.mode == MODES[0].1 && l.traffic == m.traffic)
            .map_or(f64::NAN, |l| l.pps);
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.3} | {:.2}x |",
            m.mode,
            m.traffic.label(),
            m.pps / 1e6,
            m.loss_pct,
            m.pps / limit
        );
    }
    md
}
