//! How the cost per packet grows: with the number of services (1, 16,
//! 256), with the TCP flow table's fill (1 %, 50 %, 100 %), and from one
//! CPU to two running the program at once (shared maps, the LRU's lists).
//! Through BPF_PROG_TEST_RUN, like the program cost, beside the no-op.
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use bg_tests::{
    fixtures::BENCH_SERVICES,
    packet::{ACK, Frame, PSH, SYN},
};
use bluegreen::config::Config;

/// One point of a scaling curve.
pub struct Point {
    /// "services", "flow table fill %" or "CPUs at once".
    pub axis: &'static str,
    pub path: &'static str,
    pub x: u32,
    pub ns_per_packet: f64,
}

/// `n` UDP services: syslog on 514 (the one measured) and n - 1 others.
fn services(n: u32) -> String {
    let mut toml = String::from(
        "[[service]]\nname = \"syslog-udp\"\nprotocol = \"udp\"\nlisten = \"0.0.0.0:514\"\nblue = \"198.18.1.2:514\"\ngreen = \"198.18.2.2:514\"\n",
    );
    for i in 1..n {
        let port = 2000 + i;
        let _ = write!(
            toml,
            "\n[[service]]\nname = \"udp-{port}\"\nprotocol = \"udp\"\nlisten = \"0.0.0.0:{port}\"\nblue = \"198.18.1.2:{port}\"\ngreen = \"198.18.2.2:{port}\"\n"
        );
    }
    toml
}

/// `p` timed on `frame` (see `time_repeats`).
fn time(p: &Xdp, frame: &[u8], repeat: u32, rounds: usize) -> Result<f64> {
    crate::time_repeats(&|o| p.test_run(o), frame, repeat, rounds)
}

/// IPv4 flows in FLOWS4 from index `from` up to `to` (exclusive):
/// distinct clients to the TCP service, open, alternating colours.
pub fn fill_flows(ebpf: &mut aya::Ebpf, from: u32, to: u32) -> Result<()> {
    use bg_common::{FLOW_OPEN, FlowKey4, FlowValue};
    let map = ebpf.map_mut("FLOWS4").context("FLOWS4")?;
    let mut flows: aya::maps::HashMap<_, FlowKey4, FlowValue> = aya::maps::HashMap::try_from(map)?;
    for i in from..to {
        let key = FlowKey4 {
            client_be: 0xc612_0000 | i,
            server_be: 1,
            client_port_be: (i % 60_000) as u16,
            server_port_be: 601u16.to_be(),
        };
        let value = FlowValue {
            last_seen_jiffies: 1,
            colour: i & 1,
            state: FLOW_OPEN,
        };
        flows.insert(key, value, 0)?;
    }
    Ok(())
}

/// Runs `run` on CPUs 0..n at once, each pinned, and returns the mean of
/// their per-packet times.
fn on_cpus(n: usize, run: &(dyn Fn() -> Result<f64> + Sync)) -> Result<f64> {
    let times = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|cpu| {
                s.spawn(move || {
                    // SAFETY: a cpu_set_t of our own, for this thread (pid 0).
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(cpu, &mut set);
                        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                    }
                    run()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a timing thread panicked"))?
            })
            .collect::<Result<Vec<f64>>>()
    })?;
    Ok(times.iter().sum::<f64>() / times.len() as f64)
}

pub fn run(quick: bool) -> Result<(String, Vec<Point>)> {
    crate::in_fresh_netns("scale", move |pin_root| measure(pin_root, quick))
}

fn measure(pin_root: &std::path::Path, quick: bool) -> Result<(String, Vec<Point>)> {
    let (mut dp, noop) = crate::steering_objects(pin_root)?;
    let repeat: u32 = if quick { 200_000 } else { 2_000_000 };
    let rounds = if quick { 3 } else { 7 };
    let msg = vec![b'x'; 100];
    let udp = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, &msg).build();
    let mut points = Vec::new();
    let noop_p: &Xdp = noop.program("bg_noop").context("bg_noop")?.try_into()?;
    let noop_ns = time(noop_p, &udp, repeat, rounds)?;

    // Services: each count applied in turn, round by round, so drift on a
    // shared host hits all alike.
    let counts = [1u32, 16, bg_common::MAX_SERVICES];
    let configs: Vec<Config> = counts
        .iter()
        .map(|&n| Config::parse(std::path::Path::new("scale.toml"), &services(n)))
        .collect::<Result<_, _>>()?;
    let mut samples = vec![Vec::new(); counts.len()];
    for _ in 0..rounds {
        for (i, config) in configs.iter().enumerate() {
            dp.apply_config(config)?;
            let p: &Xdp = dp
                .ebpf_mut()
                .program("bg_steer")
                .context("bg_steer")?
                .try_into()?;
            samples[i].push(time(p, &udp, repeat, 1)?);
        }
    }
    for (&n, s) in counts.iter().zip(samples) {
        points.push(Point {
            axis: "services",
            path: "UDP/IPv4 ~100 B",
            x: n,
            ns_per_packet: crate::median(s),
        });
    }

    // The flow table's fill, on the TCP established path.
    dp.apply_config(&Config::parse(
        std::path::Path::new("bench.toml"),
        BENCH_SERVICES,
    )?)?;
    let size = bg_common::DEFAULT_FLOW_TABLE_SIZE;
    let syn = Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, SYN, b"");
    let mut data = Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, ACK | PSH, &msg);
    data.payload = format!("100 {}", String::from_utf8_lossy(&msg)).into_bytes();
    let data = data.build();
    let mut filled = 0;
    for pct in [1u32, 50, 100] {
        // Less the 2 entries `establish` adds (at 100 % they evict 2).
        let target = (u64::from(size) * u64::from(pct) / 100) as u32;
        fill_flows(dp.ebpf_mut(), filled, target.saturating_sub(2))?;
        filled = target.saturating_sub(2);
        crate::establish(dp.ebpf_mut(), &syn)?;
        let p: &Xdp = dp
            .ebpf_mut()
            .program("bg_steer")
            .context("bg_steer")?
            .try_into()?;
        points.push(Point {
            axis: "flow table fill %",
            path: "TCP established segment",
            x: pct,
            ns_per_packet: time(p, &data, repeat, rounds)?,
        });
    }

    // One CPU, then every CPU running the program at once: per-CPU
    // counters do not contend; the flow table's LRU and hash buckets are
    // shared. The SYN path inserts into the pending LRU on every packet.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ebpf = dp.ebpf_mut();
    let steer: &Xdp = ebpf.program("bg_steer").context("bg_steer")?.try_into()?;
    let singles = if quick { 2_000u32 } else { 20_000 };
    let next = std::sync::atomic::AtomicU32::new(0);
    let syn_run = || -> Result<f64> {
        let mut s = Vec::with_capacity(singles as usize);
        for _ in 0..singles {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let frame = crate::syn_from(&syn, i);
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&frame);
            s.push(steer.test_run(opts)?.duration.as_nanos() as f64);
        }
        Ok(crate::median(s))
    };
    for n in [1, cpus] {
        points.push(Point {
            axis: "CPUs at once",
            path: "UDP/IPv4 ~100 B",
            x: n as u32,
            ns_per_packet: on_cpus(n, &|| time(steer, &udp, repeat, rounds))?,
        });
        points.push(Point {
            axis: "CPUs at once",
            path: "TCP established segment",
            x: n as u32,
            ns_per_packet: on_cpus(n, &|| time(steer, &data, repeat, rounds))?,
        });
        points.push(Point {
            axis: "CPUs at once",
            path: "TCP SYN (new pending flow, single runs)",
            x: n as u32,
            ns_per_packet: on_cpus(n, &syn_run)?,
        });
    }
    Ok((section(&points, noop_ns), points))
}

fn section(points: &[Point], noop_ns: f64) -> String {
    let mut md = format!(
        "## Scaling\n\nCost per packet through BPF_PROG_TEST_RUN (no-op XDP: {noop_ns:.1} ns). bluegreen has one backend address per colour and service, so there is no backend count to scale: a colour is one address (a host, or a VIP of its own).\n\n| axis | path | x | ns/pkt | ratio to the first point |\n|---|---|---:|---:|---:|\n"
    );
    for p in points {
        let first = points
            .iter()
            .find(|q| q.axis == p.axis && q.path == p.path)
            .map_or(f64::NAN, |q| q.ns_per_packet);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.2}x |",
            p.axis,
            p.path,
            p.x,
            p.ns_per_packet,
            p.ns_per_packet / first
        );
    }
    md
}
