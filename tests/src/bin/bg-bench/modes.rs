//! What each delivery mode costs (issue 20): nat, dsr-l2 and dsr-ipip,
//! each through to XDP_TX with a resolved next hop (`wire_dsr_lab`), so
//! the rewrite, the MACs and the tunnel header are all in the figure.
//!
//! Single runs, in turn, against a no-op run the same way: a repeat reuses
//! one frame, and DSR changes a frame for good (its TTL drops by one a run,
//! the tunnel grows it by a header a run), so repeats would soon time
//! another path.
use anyhow::{Context as _, Result, bail};
use aya::programs::Xdp;
use bg_tests::{
    fixtures::DSR_SERVICES,
    netns::NetNs,
    packet::Frame,
    prog::{Harness, XDP_TX, run_with_ingress, wire_dsr_lab},
    unique_id,
};
use bluegreen::dataplane::{if_index, load_bench_object};

use crate::{Row, median};

/// The rows, to append after `first` rows already in the table: the
/// no-op, nat against it, and the DSR modes against nat.
pub fn rows(quick: bool, first: usize) -> Result<Vec<Row>> {
    let ns = NetNs::new(&format!("bgmodes{}", unique_id()))?;
    wire_dsr_lab(&ns)?;
    let runs: usize = if quick { 2_000 } else { 20_000 };
    let samples = ns.enter(move || -> Result<Vec<Vec<f64>>> {
        let h = Harness::new(DSR_SERVICES, false);
        let mut bench = load_bench_object()?;
        let noop: &mut Xdp = bench
            .program_mut("bg_noop")
            .context("bg_noop")?
            .try_into()?;
        noop.load()?;
        let noop: &Xdp = bench.program("bg_noop").context("bg_noop")?.try_into()?;
        let steer: &Xdp =
            h.dp.ebpf()
                .program("bg_steer")
                .context("bg_steer")?
                .try_into()?;
        let tx0 = if_index("tx0")?;
        let udp = |dst: &str| Frame::udp("198.18.0.2", dst, 40000, 514, &[b'x'; 100]).build();
        // nat: 198.18.0.13 (blue on the segment); dsr-l2: 198.18.0.10;
        // dsr-ipip: 198.18.0.11 (blue behind the gateway).
        let frames = [
            udp("198.18.0.13"),
            udp("198.18.0.13"),
            udp("198.18.0.10"),
            udp("198.18.0.11"),
        ];
        let mut samples = vec![Vec::with_capacity(runs); frames.len()];
        for _ in 0..runs {
            for (i, frame) in frames.iter().enumerate() {
                let prog = if i == 0 { noop } else { steer };
                let (r, _) = run_with_ingress(prog, frame, tx0)?;
                if i > 0 && r.return_value != XDP_TX {
                    bail!(
                        "mode {i} went to {} instead of XDP_TX: {:?}",
                        r.return_value,
                        h.counters()
                    );
                }
                samples[i].push(r.duration.as_nanos() as f64);
            }
        }
        Ok(samples)
    })??;
    let names = [
        "no-op XDP (single runs, ingress tx0)",
        "bg_steer UDP/IPv4 ~100 B, nat to XDP_TX (single runs)",
        "bg_steer UDP/IPv4 ~100 B, dsr-l2 to XDP_TX (single runs)",
        "bg_steer UDP/IPv4 ~100 B, dsr-ipip to XDP_TX (single runs)",
    ];
    let baselines = [first, first, first + 1, first + 1];
    Ok(names
        .into_iter()
        .zip(samples)
        .zip(baselines)
        .map(|((name, s), baseline)| Row {
            name,
            ns_per_packet: median(s),
            baseline,
        })
        .collect())
}
