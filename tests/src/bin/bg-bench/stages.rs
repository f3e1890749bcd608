//! Where `bg_steer`'s time goes: the program stopped after each of its
//! stages (the `bg_steer_cut_*` programs of `bg_common::stage_cut`, in the
//! agent's object beside it), timed in turn round by round with the no-op, so drift on a shared host hits every stage alike. Each
//! stage's cost is its difference from the one before; its size is the
//! difference in instructions after verification.
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, Xdp};
use bg_common::stage_cut;
use bg_tests::{
    lookup_bench,
    packet::{ACK, Frame, PSH, SYN},
};

/// One stage: ns per packet for each path, and the cut program's size.
pub struct Stage {
    pub name: &'static str,
    pub ns: Vec<f64>,
    pub insns: u32,
}

const PATHS: [&str; 3] = [
    "UDP/IPv4 ~100 B",
    "UDP/IPv6 ~100 B",
    "TCP established segment",
];

pub fn run(quick: bool) -> Result<String> {
    crate::in_fresh_netns("stage", move |pin_root| measure(pin_root, quick))
}

fn measure(pin_root: &std::path::Path, quick: bool) -> Result<String> {
    // The agent's object with the bench services, and its cut programs
    // beside `bg_steer`: every stage steers with the same maps.
    let (mut dp, noop) = crate::steering_objects(pin_root)?;
    for (name, _) in stage_cut::STAGES {
        let p: &mut Xdp = dp.ebpf_mut().program_mut(name).context(name)?.try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
    }
    let msg = vec![b'x'; 100];
    let syn = Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, SYN, b"");
    let mut data = Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, ACK | PSH, &msg);
    data.payload = format!("100 {}", String::from_utf8_lossy(&msg)).into_bytes();
    let frames = [
        Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, &msg).build(),
        Frame::udp("2001:db8::2", "2001:db8::1", 40000, 514, &msg).build(),
        data.build(),
    ];
    crate::establish(dp.ebpf_mut(), &syn)?;
    let key_sizes = key_sizes(&frames[2], quick)?;

    // The programs in program order: the no-op, then each stage.
    let steering: &aya::Ebpf = dp.ebpf_mut();
    let mut programs: Vec<(&'static str, &Xdp)> = vec![(
        "no-op XDP",
        noop.program("bg_noop").context("bg_noop")?.try_into()?,
    )];
    for (name, stage) in stage_cut::STAGES {
        programs.push((stage, steering.program(name).context(name)?.try_into()?));
    }

    let repeat: u32 = if quick { 200_000 } else { 2_000_000 };
    let rounds = if quick { 5 } else { 21 };
    let mut samples = vec![vec![Vec::with_capacity(rounds); frames.len()]; programs.len()];
    for _ in 0..rounds {
        for (p, (_, prog)) in programs.iter().enumerate() {
            for (f, frame) in frames.iter().enumerate() {
                // The kernel's own figure, in whole nanoseconds: a clock
                // around the call also counts the time the kernel yields
                // the CPU inside the run, which on a VM can be most of it.
                samples[p][f].push(crate::time_repeats(
                    &|o| prog.test_run(o),
                    frame,
                    repeat,
                    1,
                )?);
            }
        }
    }
    let mut stages = Vec::new();
    for ((name, prog), s) in programs.iter().zip(samples) {
        stages.push(Stage {
            name,
            ns: s.into_iter().map(crate::median).collect(),
            insns: crate::xlated::count(prog.info()?.id())?,
        });
    }
    Ok(section(&stages, repeat, rounds) + &key_sizes)
}

/// What the established flow lookup costs by key size: one LRU hash
/// lookup in a table of `FLOWS`' size, with today's 40-byte `FlowKey` and
/// with a 12-byte IPv4 4-tuple (the bench object's `bg_lookup_key*`),
/// each program parsing the tuple the same way, timed in turn with the
/// no-op. Tells what an IPv4 flow table would take off the TCP path.
fn key_sizes(tcp: &[u8], quick: bool) -> Result<String> {
    let mut bench = lookup_bench::load(bg_common::DEFAULT_FLOW_TABLE_SIZE)?;
    lookup_bench::insert_flow(&mut bench, tcp)?;
    for name in &lookup_bench::PROGRAMS[1..] {
        // Both must find the flow, or the figure would be a miss's.
        let verdict = lookup_bench::verdict(&bench, name, tcp)?;
        anyhow::ensure!(
            verdict == 2,
            "{name} did not find the established flow (verdict {verdict})"
        );
    }
    let programs = lookup_bench::PROGRAMS
        .iter()
        .map(|n| -> Result<&Xdp> { Ok(bench.program(n).context(*n)?.try_into()?) })
        .collect::<Result<Vec<_>>>()?;
    let repeat: u32 = if quick { 200_000 } else { 2_000_000 };
    let rounds = if quick { 5 } else { 21 };
    let mut samples = vec![Vec::with_capacity(rounds); programs.len()];
    for _ in 0..rounds {
        for (p, prog) in programs.iter().enumerate() {
            samples[p].push(crate::time_repeats(&|o| prog.test_run(o), tcp, repeat, 1)?);
        }
    }
    let ns: Vec<f64> = samples.into_iter().map(crate::median).collect();
    let mut md = format!(
        "\n### The flow lookup by key size\n\nOne LRU hash lookup of the TCP segment's flow in a table of `FLOWS`' size, after the same tuple parse, timed in turn with the no-op ({rounds} rounds of {repeat} repeats, medians):\n\n| program | ns per packet | over the no-op |\n|---|---:|---:|\n"
    );
    for (i, label) in [
        "no-op XDP",
        "lookup, 40-byte key (`FlowKey`, as `FLOWS` today)",
        "lookup, 12-byte key (IPv4 addresses and ports)",
    ]
    .iter()
    .enumerate()
    {
        let _ = writeln!(md, "| {label} | {:.1} | {:+.1} |", ns[i], ns[i] - ns[0]);
    }
    let _ = writeln!(
        md,
        "\nKey size: {:+.1} ns per established IPv4 segment from 40 bytes to 12.",
        ns[2] - ns[1]
    );
    Ok(md)
}

fn section(stages: &[Stage], repeat: u32, rounds: usize) -> String {
    let mut md = format!(
        "## Cost by stage\n\n`bg_steer` stopped after each stage (the `bg_steer_cut_*` programs: the same code with the cut a constant; the agent loads only the whole), timed in turn with the no-op over {rounds} rounds of {repeat} repeats; medians of the kernel's figure (whole ns). Each cell: ns per packet, and in brackets what that stage adds to the one before. Instructions: the cut program's size after verification (all paths).\n\n| stage |"
    );
    for p in PATHS {
        let _ = write!(md, " {p} |");
    }
    md.push_str(" instructions |\n|---|");
    for _ in PATHS {
        md.push_str("---:|");
    }
    md.push_str("---:|\n");
    for (i, s) in stages.iter().enumerate() {
        let _ = write!(md, "| {} |", s.name);
        for (f, ns) in s.ns.iter().enumerate() {
            match i.checked_sub(1).map(|j| &stages[j]) {
                Some(prev) => {
                    let _ = write!(md, " {ns:.1} ({:+.1}) |", ns - prev.ns[f]);
                }
                None => {
                    let _ = write!(md, " {ns:.1} |");
                }
            }
        }
        let _ = writeln!(md, " {} |", s.insns);
    }
    md
}
