//! `cargo xtask bench`: benchmarks that report ratios against baselines
//! measured in the same run. Nothing here asserts speed.
//!
//! `--prog`: cost per packet of `bg_steer` for a UDP syslog packet, beside
//! the no-op XDP program, through BPF_PROG_TEST_RUN with repeat.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use bg_tests::{lab::remove_pins, netns::NetNs, packet::Frame, unique_id};
use bluegreen::{
    config::Config,
    dataplane::{Dataplane, load_object},
};

const CONFIG: &str = r#"
[[service]]
name = "syslog-udp"
protocol = "udp"
listen = "0.0.0.0:514"
blue = "198.18.1.2:514"
green = "198.18.2.2:514"

[[service]]
name = "syslog-udp6"
protocol = "udp"
listen = "[::]:514"
blue = "[2001:db8:1::2]:514"
green = "[2001:db8:2::2]:514"
"#;

struct Row {
    name: &'static str,
    ns_per_packet: f64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the benchmarks need root (BPF_PROG_TEST_RUN, namespaces)");
    }
    let rows = prog_bench(quick)?;
    print_prog(&rows);
    Ok(())
}

/// Runs in a fresh namespace whose FIB hands steered packets to the kernel:
/// the measured path is parse, lookup, DNAT, checksums, counters and FIB.
fn prog_bench(quick: bool) -> Result<Vec<Row>> {
    let ns = NetNs::new(&format!("bgbench{}", unique_id()))?;
    ns.enter(move || -> Result<Vec<Row>> {
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/bluegreen-bench-{}", unique_id()));
        let result = (|| {
            let mut ebpf = load_object(
                &pin_root.join("bench"),
                false,
                bg_common::DEFAULT_FLOW_TABLE_SIZE,
            )?;
            for name in ["bg_steer", "bg_noop"] {
                let p: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
                p.load()?;
            }
            let mut dp = Dataplane::from_ebpf(ebpf, "bench", 1, pin_root.join("bench"));
            dp.apply_config(&Config::parse(std::path::Path::new("bench.toml"), CONFIG)?)?;
            let repeat: u32 = if quick { 200_000 } else { 5_000_000 };
            let rounds = if quick { 3 } else { 7 };
            let msg100 = vec![b'x'; 100];
            let msg500 = vec![b'y'; 500];
            let v4 = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, &msg100).build();
            let v4_500 = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, &msg500).build();
            let v6 = Frame::udp("2001:db8::2", "2001:db8::1", 40000, 514, &msg100).build();
            let other = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 515, &msg100).build();
            let mut rows = Vec::new();
            let ebpf = dp.ebpf_mut();
            for (name, prog, frame) in [
                ("no-op XDP (baseline)", "bg_noop", &v4),
                ("bg_steer UDP/IPv4 ~100 B", "bg_steer", &v4),
                ("bg_steer UDP/IPv4 ~500 B", "bg_steer", &v4_500),
                ("bg_steer UDP/IPv6 ~100 B", "bg_steer", &v6),
                ("bg_steer non-matching UDP", "bg_steer", &other),
            ] {
                let p: &Xdp = ebpf.program(prog).context(prog)?.try_into()?;
                // Median of several rounds: robust against a noisy neighbour.
                let mut samples = Vec::new();
                for _ in 0..rounds {
                    let mut opts = TestRunOptions::new();
                    opts.data_in = Some(frame);
                    opts.repeat = repeat;
                    let r = p.test_run(opts)?;
                    // With repeat > 1 the kernel reports the mean time of one run.
                    samples.push(r.duration.as_nanos() as f64);
                }
                samples.sort_by(f64::total_cmp);
                rows.push(Row {
                    name,
                    ns_per_packet: samples[samples.len() / 2],
                });
            }
            Ok(rows)
        })();
        remove_pins(&pin_root);
        result
    })?
}

fn print_prog(rows: &[Row]) {
    let base = rows[0].ns_per_packet;
    println!("\nXDP program cost per packet (BPF_PROG_TEST_RUN, median of rounds)");
    println!(
        "{:<28} {:>10} {:>10}",
        "program / packet", "ns/pkt", "vs no-op"
    );
    for r in rows {
        println!(
            "{:<28} {:>10.1} {:>9.2}x",
            r.name,
            r.ns_per_packet,
            r.ns_per_packet / base
        );
    }
    println!("target: bg_steer UDP at most 1.5x the no-op");
}
