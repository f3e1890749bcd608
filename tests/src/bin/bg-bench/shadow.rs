//! The cost of shadow copies (issue 15) on the bluegreen topology: the
//! original stream's delivered rate and the CPU per packet with no shadow,
//! a shadow sampling almost no one (0.01 %: every datagram checked, none
//! copied) and one copying every sender, by devmap broadcast and by the
//! kernel's path, at maximum load, round by round so drift hits all alike.
//! The shadow is set through the agent's pinned maps, as its shadow phase
//! sets them.
use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, DevMapHash, Map, MapData, PerCpuArray},
    programs::Xdp,
};
use bg_common::{
    names,
    shadow::{BROADCAST_SLOT, BUDGET_SLOT, SHARE_SLOT, ShadowStats, ShadowTarget},
};
use bluegreen::dataplane::{TableSizes, addr_words, load_object, pin_dir};

use crate::{
    throughput::{Bench, cpu_busy_seconds},
    topology::{Traffic, ifindex, mac},
};

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Run {
    sent: u64,
    blue: u64,
    green: u64,
    copied: u64,
    /// Not copied: refused or failed, no route, no metadata, over budget.
    failed: [u64; 4],
    seconds: f64,
    cpu_seconds: f64,
}

/// How a run copies, each bounded by the default `shadow_max_pps` or not.
#[derive(Clone, Copy, PartialEq)]
enum Copier {
    Broadcast { bounded: bool },
    Kernel { bounded: bool },
}

const OFF: Copier = Copier::Broadcast { bounded: false };

/// Offered rate of the paced rows: below what a 100 % broadcast copies
/// on this machine, so they show the original's loss when the node keeps up.
const PACED_PPS: u32 = 1_000_000;

/// (name, share in bp, copier, offered rate: None is maximum load).
const SHARES: [(&str, u32, Copier, Option<u32>); 8] = [
    ("no shadow", 0, OFF, None),
    ("shadow 0.01 % (none copied)", 1, OFF, None),
    (
        "shadow 100 %, XDP devmap broadcast, default shadow_max_pps",
        10_000,
        Copier::Broadcast { bounded: true },
        None,
    ),
    (
        "shadow 100 %, XDP devmap broadcast, no bound",
        10_000,
        Copier::Broadcast { bounded: false },
        None,
    ),
    (
        "shadow 100 %, kernel path, default shadow_max_pps",
        10_000,
        Copier::Kernel { bounded: true },
        None,
    ),
    (
        "shadow 100 %, kernel path, no bound",
        10_000,
        Copier::Kernel { bounded: false },
        None,
    ),
    ("no shadow, 1.0 Mpps offered", 0, OFF, Some(PACED_PPS)),
    (
        "shadow 100 %, XDP devmap broadcast, no bound, 1.0 Mpps offered",
        10_000,
        Copier::Broadcast { bounded: false },
        Some(PACED_PPS),
    ),
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
    let lab = &bench.lab;
    let (blue_if, green_if) = (
        ifindex(&lab.lb, &format!("bg{}l1", lab.id))?,
        ifindex(&lab.lb, &format!("bg{}l2", lab.id))?,
    );
    let green_ns = lab.green.as_ref().context("green")?;
    let target = ShadowTarget {
        dst_be,
        src_be,
        dst_port_be: 514u16.to_be(),
        src_port_be: 9u16.to_be(),
        family,
        dmac: mac(green_ns, "b0")?,
        smac: mac(&lab.lb, &format!("bg{}l2", lab.id))?,
        ..ShadowTarget::default()
    };
    // The copier program, loaded from the agent's object over its pins
    // (the maps it uses are the agent's), in the broadcast devmap.
    let mut object = load_object(
        &dir,
        false,
        TableSizes {
            flows: bg_common::DEFAULT_FLOW_TABLE_SIZE,
            pending: bg_common::DEFAULT_PENDING_TABLE_SIZE,
        },
    )?;
    let copier: &mut Xdp = object
        .program_mut(names::PROG_SHADOW_COPY)
        .context("bg_shadow_copy")?
        .try_into()?;
    copier.load()?;
    // The kernel resolves a devmap's ifindex in the caller's namespace:
    // filled from the host's, the entries named host devices, no copy was
    // valid and every broadcast frame was dropped silently. The agent
    // fills it from the steering namespace; so does the bench.
    let copier_fd = copier.fd()?.try_clone()?;
    let devmap_pin = dir.join(names::SHADOW_DEVMAP);
    lab.lb.enter(move || -> Result<()> {
        let mut devmap: DevMapHash<MapData> =
            DevMapHash::try_from(Map::DevMapHash(MapData::from_pin(&devmap_pin)?))?;
        devmap.insert(0, blue_if, None, 0)?;
        devmap.insert(1, green_if, Some(&copier_fd), 0)?;
        Ok(())
    })??;
    let mut devmap: DevMapHash<MapData> =
        DevMapHash::try_from(Map::DevMapHash(open(names::SHADOW_DEVMAP)?))?;
    // The v4 service's id is the agent's; IPv4 frames match only it.
    for id in 0..2 {
        targets.set(id, target, 0)?;
    }
    // Broadcast copies are told by blue's backend, 198.18.1.2:514.
    let mut by_blue: aya::maps::HashMap<MapData, bg_common::ServiceKey, u32> =
        aya::maps::HashMap::try_from(Map::HashMap(open(names::SHADOW_BY_BLUE)?))?;
    let (blue_be, _) = addr_words("198.18.1.2".parse()?);
    let blue_key = bg_common::ServiceKey {
        addr_be: blue_be,
        port_be: 514u16.to_be(),
        proto: bg_common::PROTO_UDP,
        family,
    };
    let v4_id = (0..2)
        .find(|&id| {
            // The v4 service is the one whose blue backend is IPv4.
            let backends: Option<aya::maps::Array<MapData, bg_common::Backend>> =
                MapData::from_pin(dir.join(names::BACKENDS))
                    .ok()
                    .and_then(|m| aya::maps::Array::try_from(Map::Array(m)).ok());
            backends
                .and_then(|b| b.get(&(id * 2), 0).ok())
                .is_some_and(|b| b.family == family)
        })
        .context("the IPv4 service")?;
    by_blue.insert(blue_key, v4_id, 0)?;
    let copies = |stats: &PerCpuArray<MapData, ShadowStats>| -> Result<(u64, [u64; 4])> {
        let (mut c, mut f) = (0, [0; 4]);
        for id in 0..2 {
            for s in stats.get(&id, 0)?.iter() {
                c += s.copied;
                for (slot, n) in
                    f.iter_mut()
                        .zip([s.copy_failed, s.no_route, s.no_metadata, s.over_budget])
                {
                    *slot += n;
                }
                if s.copied > 0 && s.broadcast + s.handed_to_tc == 0 {
                    // Cannot happen: a copy comes from one of the two.
                    anyhow::bail!("copies without a broadcast or a hand-over");
                }
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
            for (i, (_, bp, copier, rate)) in SHARES.iter().enumerate() {
                let (broadcast, bounded) = match *copier {
                    Copier::Broadcast { bounded } => (blue_if, bounded),
                    Copier::Kernel { bounded } => (0, bounded),
                };
                let budget = if bounded { per_cpu } else { 0 };
                share.set(BROADCAST_SLOT, broadcast, 0)?;
                share.set(BUDGET_SLOT, budget, 0)?;
                share.set(SHARE_SLOT, *bp, 0)?;
                std::thread::sleep(Duration::from_millis(50));
                let (b0, g0) = (bench.blue.count()?, bench.green.count()?);
                let (c0, f0) = copies(&stats)?;
                let cpu0 = cpu_busy_seconds();
                let (sent, seconds) =
                    bench
                        .generator
                        .send(&bench.lab.client, &frame, total, *rate)?;
                std::thread::sleep(Duration::from_millis(200));
                let cpu = cpu_busy_seconds() - cpu0;
                let (b1, g1) = (bench.blue.count()?, bench.green.count()?);
                let (c1, f1) = copies(&stats)?;
                if let Some(c) = bench.agent_counters() {
                    println!("    {}: data path counters {c}", SHARES[i].0);
                }
                let s = &mut sums[i];
                s.sent += sent;
                s.blue += (b1 - b0).frames;
                s.green += (g1 - g0).frames;
                s.copied += c1 - c0;
                for k in 0..4 {
                    s.failed[k] += f1[k] - f0[k];
                }
                s.seconds += seconds;
                s.cpu_seconds += cpu;
            }
        }
        Ok(())
    })();
    // Whatever happened, the agent's shadow maps go back to off.
    share.set(SHARE_SLOT, 0, 0)?;
    share.set(BROADCAST_SLOT, 0, 0)?;
    for key in [0, 1] {
        let _ = devmap.remove(key);
    }
    let _ = by_blue.remove(&blue_key);
    for id in 0..2 {
        targets.set(id, ShadowTarget::default(), 0)?;
    }
    result?;
    // A run sampling everyone copies, the others copy nothing: the
    // broadcast row once read 0 copies for a bench bug and passed.
    for ((name, bp, _, _), s) in SHARES.iter().zip(&sums) {
        if (*bp == 10_000) != (s.copied > 0) {
            anyhow::bail!("shadow bench, {name}: {} copies sent", s.copied);
        }
    }
    // Each row against the no-shadow row at the same offered rate.
    let base = |rate: Option<u32>| {
        SHARES
            .iter()
            .zip(&sums)
            .find(|((_, bp, _, r), _)| *bp == 0 && *r == rate)
            .map_or(f64::NAN, |(_, s)| s.blue as f64 / s.seconds)
    };
    let mut out = format!(
        "## Shadow copies\n\nbluegreen UDP/IPv4 at maximum load (live-frames generator), XDP steering; blue and green behind their own veths. Broadcast: devmap broadcast to blue's and green's interfaces, `bg_shadow_copy` rewriting green's copy. Paced rows offer {:.1} Mpps, compared with the no-shadow row at the same rate. Kernel path: XDP hands each sampled datagram to the kernel and `bg_shadow_tc` clones it; `shadow_max_pps` bounds the copies of either (default {max_pps} per second, {per_cpu} per CPU here); past it datagrams go on by XDP without a copy. Generator and data path share the 2 CPUs: a paced row's rate falls short of the offer when the CPU runs out. Sums over rounds.\n\n| run | sent | to blue (Mpps) | blue vs no shadow | originals lost | copies sent | copies at green | not copied: failed / no route / no metadata / over budget | CPU ns/packet |\n|---|---|---|---|---|---|---|---|---|\n",
        f64::from(PACED_PPS) / 1e6
    );
    for ((name, _, _, rate), s) in SHARES.iter().zip(&sums) {
        let pps = s.blue as f64 / s.seconds;
        out.push_str(&format!(
            "| {name} | {} | {:.3} | {:.2}x | {} | {} | {} | {} | {:.0} |\n",
            s.sent,
            pps / 1e6,
            pps / base(*rate),
            s.sent.saturating_sub(s.blue),
            s.copied,
            s.green,
            s.failed.map(|n| n.to_string()).join(" / "),
            s.cpu_seconds * 1e9 / s.sent.max(1) as f64
        ));
    }
    Ok(out)
}
