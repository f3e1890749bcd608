//! The cost of shadow copies (issue 15) on the bluegreen topology: the
//! original stream's delivered rate and the CPU per packet with no shadow,
//! a shadow sampling almost no one (0.01 %: every datagram checked, none
//! copied) and one copying every sender, at maximum load, round by round
//! so drift hits all alike. The shadow is set through the agent's pinned
//! maps, as its shadow phase sets them.
use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use bg_common::{
    names,
    shadow::{BUDGET_SLOT, SHARE_SLOT, ShadowStats, ShadowTarget},
};
use bluegreen::dataplane::{addr_words, pin_dir};

use crate::{
    throughput::{Bench, cpu_busy_seconds},
    topology::Traffic,
};

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Run {
    sent: u64,
    blue: u64,
    green: u64,
    copied: u64,
    failed: u64,
    seconds: f64,
    cpu_seconds: f64,
}

/// (name, share in bp, whether the default `shadow_max_pps` applies).
const SHARES: [(&str, u32, bool); 4] = [
    ("no shadow", 0, true),
    ("shadow 0.01 % (none copied)", 1, true),
    ("shadow 100 %, default shadow_max_pps", 10_000, true),
    ("shadow 100 %, no bound (shadow_max_pps = 0)", 10_000, false),
];

pub fn run(bench: &Bench, total: u32, rounds: usize) -> Result<String> {
    let dir = pin_dir(&bench.lab.pin_root, &bench.lab.lb_if);
    let open = |name: &str| -> Result<MapData> {
        MapData::from_pin(dir.join(name)).with_context(|| format!("pinned map {name}"))
    };
    let mut share: Array<MapData, u32> = Array::try_from(Map::Array(open(names::SHADOW)?))?;
    let mut targets: Array<MapData, ShadowTarget> =
        Array::try_from(Map::Array(open(names::SHADOW_TARGETS)?))?;
    let stats: PerCpuArray<MapData, ShadowStats> =
        PerCpuArray::try_from(Map::PerCpuArray(open(names::SHADOW_STATS)?))?;
    // Green's backend, from the steering host's green-side address; no
    // socket holds the source port, so green's ICMP errors end there.
    let (dst_be, family) = addr_words("198.18.2.2".parse()?);
    let (src_be, _) = addr_words("198.18.2.1".parse()?);
    let target = ShadowTarget {
        dst_be,
        src_be,
        dst_port_be: 514u16.to_be(),
        src_port_be: 9u16.to_be(),
        family,
        _pad: [0; 3],
    };
    // The v4 service's id is the agent's; IPv4 frames match only it.
    for id in 0..2 {
        targets.set(id, target, 0)?;
    }
    let copies = |stats: &PerCpuArray<MapData, ShadowStats>| -> Result<(u64, u64)> {
        let (mut c, mut f) = (0, 0);
        for id in 0..2 {
            for s in stats.get(&id, 0)?.iter() {
                c += s.copied;
                f += s.copy_failed + s.no_route + s.no_metadata + s.over_budget;
            }
        }
        Ok((c, f))
    };
    let max_pps = bluegreen::config::DeploySettings::default().shadow_max_pps;
    let per_cpu = max_pps.div_ceil(aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u32);
    let frame = bench.frame(Traffic::BASE)?;
    bench.generator.expect(b'?')?;
    let mut sums = [Run::default(); SHARES.len()];
    let result = (|| -> Result<()> {
        for _ in 0..rounds {
            for (i, (_, bp, bounded)) in SHARES.iter().enumerate() {
                share.set(BUDGET_SLOT, if *bounded { per_cpu } else { 0 }, 0)?;
                share.set(SHARE_SLOT, *bp, 0)?;
                std::thread::sleep(Duration::from_millis(50));
                let (b0, g0) = (bench.blue.count()?, bench.green.count()?);
                let (c0, f0) = copies(&stats)?;
                let cpu0 = cpu_busy_seconds();
                let (sent, seconds) =
                    bench
                        .generator
                        .send(&bench.lab.client, &frame, total, None)?;
                std::thread::sleep(Duration::from_millis(200));
                let cpu = cpu_busy_seconds() - cpu0;
                let (b1, g1) = (bench.blue.count()?, bench.green.count()?);
                let (c1, f1) = copies(&stats)?;
                let s = &mut sums[i];
                s.sent += sent;
                s.blue += (b1 - b0).frames;
                s.green += (g1 - g0).frames;
                s.copied += c1 - c0;
                s.failed += f1 - f0;
                s.seconds += seconds;
                s.cpu_seconds += cpu;
            }
        }
        Ok(())
    })();
    // Whatever happened, the agent's shadow maps go back to off.
    share.set(SHARE_SLOT, 0, 0)?;
    for id in 0..2 {
        targets.set(id, ShadowTarget::default(), 0)?;
    }
    result?;
    let base = sums[0].blue as f64 / sums[0].seconds;
    let mut out = format!(
        "## Shadow copies\n\nbluegreen UDP/IPv4 at maximum load (live-frames generator), XDP steering; a shadow hands each sampled datagram to the kernel and `bg_shadow_tc` clones it to green. `shadow_max_pps` bounds those hand-overs (default {max_pps} per second, {per_cpu} per CPU here); past it datagrams go on by XDP without a copy. Sums over rounds.\n\n| run | sent | to blue (Mpps) | blue vs no shadow | originals lost | copies sent | copies at green | not copied (failures, over budget) | CPU ns/packet |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((name, _, _), s) in SHARES.iter().zip(&sums) {
        let pps = s.blue as f64 / s.seconds;
        out.push_str(&format!(
            "| {name} | {} | {:.3} | {:.2}x | {} | {} | {} | {} | {:.0} |\n",
            s.sent,
            pps / 1e6,
            pps / base,
            s.sent.saturating_sub(s.blue),
            s.copied,
            s.green,
            s.failed,
            s.cpu_seconds * 1e9 / s.sent.max(1) as f64
        ));
    }
    Ok(out)
}
