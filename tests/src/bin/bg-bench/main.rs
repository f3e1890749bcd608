//! `cargo xtask bench`: benchmarks that report ratios against baselines
//! measured in the same run. Nothing here asserts speed.
//!
//! `--prog`: cost per packet of `bg_steer` for a UDP syslog packet, beside
//! the no-op XDP program, through BPF_PROG_TEST_RUN with repeat.
use std::path::PathBuf;

mod fleet;
mod generators;
mod mode_rate;
mod modes;
mod plot;
mod results;
mod rollback;
mod scaling;
mod scenario;
mod shadow;
mod stages;
mod tcp;
mod throughput;
mod topology;
mod xlated;
mod zero_loss;

use anyhow::{Context as _, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use bg_tests::{
    fixtures::BENCH_SERVICES,
    lab::remove_pins,
    netns::NetNs,
    packet::{ACK, Frame, PSH, SYN},
    unique_id,
};
use bluegreen::{
    config::Config,
    dataplane::{Dataplane, TableSizes, load_bench_object, load_object},
    model::{Colour, Steering, Weight},
};

struct Row {
    name: &'static str,
    ns_per_packet: f64,
    /// Index of the row this one is compared with (a no-op measured the same way).
    baseline: usize,
}

/// Median of a sample.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    // Ctrl-C or SIGTERM must not leave namespaces or pins behind.
    bg_tests::cleanup::remove_everything_on_interrupt();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the benchmarks need root (BPF_PROG_TEST_RUN, namespaces)");
    }
    let only_rollback =
        args.iter().any(|a| a == "--rollback") && !args.iter().any(|a| a == "--prog");
    let only_prog = args.iter().any(|a| a == "--prog") && !args.iter().any(|a| a == "--rollback");
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        let name = args
            .get(i + 1)
            .context(
                "--scenario needs a name: limit, bluegreen, nftables, relay, flips, tcp-flips, tcp-flood, fleet, modes or scrape",
            )?;
        match name.as_str() {
            "tcp-flips" => return tcp::run(quick).map(drop),
            "tcp-flood" => return tcp::flood(quick).map(drop),
            "fleet" => return fleet::run(quick).map(drop),
            "modes" => {
                print!("{}", mode_rate::run(quick)?);
                return Ok(());
            }
            // The scrape alone, no traffic: to compare two builds of
            // bgctl (BGCTL_BIN) quickly.
            "scrape" => {
                let bench = throughput::Bench::new("bluegreen")?;
                println!("{}", bench.scrape_alone()?.line());
                return Ok(());
            }
            _ => {}
        }
        if name == "flips" {
            // --flips N: how many (0 gives the same run without flips).
            let n = match args.iter().position(|a| a == "--flips") {
                Some(i) => args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .context("--flips needs a whole number, e.g. --flips 1000")?,
                None if quick => 100,
                None => 1000,
            };
            let bench = throughput::Bench::new("bluegreen")?;
            let total = if quick { 1_000_000 } else { 6_000_000 };
            let o = bench.flips(total, n, 1_000_000, std::time::Duration::from_millis(5))?;
            println!("{}", results::flip_line(&o));
            if let Some(c) = bench.agent_counters() {
                println!("  data path counters: {c}");
            }
            return Ok(());
        }
        let Some(&name) = throughput::SCENARIOS.iter().find(|s| *s == name) else {
            anyhow::bail!(
                "--scenario {name:?}: accepted: {}, flips, tcp-flips, tcp-flood, fleet, modes, scrape",
                throughput::SCENARIOS.join(", ")
            );
        };
        let mut sections = Vec::new();
        let m = scenario::run(name, quick, &mut sections)?;
        results::print(&m.rows, &m.flips, &m.zero_loss);
        return Ok(());
    }
    let mut sections = Vec::new();
    let mut scaling_points = Vec::new();
    if !only_rollback {
        println!("running the program micro-benchmark ...");
        let (mut rows, memory, walk, insns) = prog_bench(quick)?;
        rows.extend(modes::rows(quick, rows.len())?);
        let table = prog_table(&rows);
        print!("\n{table}");
        println!(
            "\nTCP tables at the default {} established and {} pending entries (kernel memlock): {memory}",
            bg_common::DEFAULT_FLOW_TABLE_SIZE,
            bg_common::DEFAULT_PENDING_TABLE_SIZE
        );
        println!("{walk}\n\n{insns}");
        sections.push(format!(
            "## Program cost\n\n{table}\nTCP tables at {} established and {} pending entries: {memory}. {walk}.\n\nProgram sizes:\n\n{insns}",
            bg_common::DEFAULT_FLOW_TABLE_SIZE,
            bg_common::DEFAULT_PENDING_TABLE_SIZE
        ));
        println!("running the cost by stage ...");
        let section = stages::run(quick)?;
        print!("\n{section}");
        sections.push(section);
        println!("running the scaling curves ...");
        let (section, points) = scaling::run(quick)?;
        print!("\n{section}");
        sections.push(section);
        scaling_points = points;
    }
    if !only_prog && !only_rollback {
        println!("running TCP connections across flips ...");
        sections.push(tcp::run(quick)?);
        println!("running TCP connections through floods of spoofed segments ...");
        sections.push(tcp::flood(quick)?);
    }
    if !only_prog {
        println!("running the rollback scenario ...");
        sections.push(rollback::run()?);
    }
    if !only_prog && !only_rollback {
        println!("running fleet flip convergence ...");
        sections.push(fleet::run(quick)?);
    }
    if !only_prog && !only_rollback {
        let (mut rows, mut flips, mut zero_loss) = (Vec::new(), Vec::new(), Vec::new());
        for name in throughput::SCENARIOS {
            let m = scenario::run(name, quick, &mut sections)?;
            rows.extend(m.rows);
            flips.extend(m.flips);
            zero_loss.extend(m.zero_loss);
        }
        println!("running the delivered rate of each delivery mode ...");
        let section = mode_rate::run(quick)?;
        print!("\n{section}");
        sections.push(section);
        results::write(&rows, &flips, &zero_loss, &scaling_points, &sections, quick)?;
    }
    Ok(())
}

/// A program run through BPF_PROG_TEST_RUN (XDP or TC).
type RunFn<'a> = dyn Fn(TestRunOptions<'_>) -> Result<aya::programs::TestRunResult, aya::programs::ProgramError>
    + Sync
    + 'a;

/// Mean kernel time of one run over `repeat` runs of `frame`, median of
/// `rounds`: robust against a noisy neighbour.
fn time_repeats(run: &RunFn<'_>, frame: &[u8], repeat: u32, rounds: usize) -> Result<f64> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        samples.push(run(opts)?.duration.as_nanos() as f64);
    }
    Ok(median(samples))
}

/// `syn` from the `i`-th of distinct source tuples: a SYN opens a pending
/// flow only for a tuple it has not seen.
fn syn_from(syn: &Frame, i: u32) -> Vec<u8> {
    let mut f = syn.clone();
    f.sport = 1024 + (i % 60_000) as u16;
    f.src = std::net::Ipv4Addr::from(0xc613_0000 | (i / 60_000) << 8 | (1 + i % 250)).into();
    f.build()
}

/// The agent's object with its XDP and TC steering programs loaded (not
/// attached) and the bench services applied, pinned under `pin_root`, and
/// the bench object with the no-op baselines loaded.
fn steering_objects(pin_root: &std::path::Path) -> Result<(Dataplane, aya::Ebpf)> {
    let mut ebpf = load_object(
        &pin_root.join("bench"),
        false,
        TableSizes {
            flows: bg_common::DEFAULT_FLOW_TABLE_SIZE,
            pending: bg_common::DEFAULT_PENDING_TABLE_SIZE,
        },
    )?;
    // The no-op baselines live in the bench object, not the agent's.
    let mut bench = load_bench_object()?;
    for (object, name) in [(&mut ebpf, "bg_steer"), (&mut bench, "bg_noop")] {
        let p: &mut Xdp = object.program_mut(name).context(name)?.try_into()?;
        p.load()?;
    }
    for (object, name) in [(&mut ebpf, "bg_steer_tc"), (&mut bench, "bg_noop_tc")] {
        let p: &mut SchedClassifier = object.program_mut(name).context(name)?.try_into()?;
        p.load()?;
    }
    let mut dp = Dataplane::from_ebpf(ebpf, "bench", 1, pin_root.join("bench"));
    dp.apply_config(&Config::parse(
        std::path::Path::new("bench.toml"),
        BENCH_SERVICES,
    )?)?;
    Ok((dp, bench))
}

/// Runs `body` in a fresh namespace, whose FIB hands steered packets to
/// the kernel, with a private pin root removed afterwards, failed or not.
pub(crate) fn in_fresh_netns<T: Send + 'static>(
    name: &str,
    body: impl FnOnce(&std::path::Path) -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = NetNs::new(&format!("bg{name}{}", unique_id()))?;
    let pin_root = PathBuf::from(format!("/sys/fs/bpf/bluegreen-{name}-{}", unique_id()));
    ns.enter(move || {
        let result = body(&pin_root);
        remove_pins(&pin_root);
        result
    })?
}

/// The measured path is parse, lookup, DNAT, checksums, counters and FIB.
fn prog_bench(quick: bool) -> Result<(Vec<Row>, String, String, String)> {
    in_fresh_netns("bench", move |pin_root| {
        let (mut dp, bench) = steering_objects(pin_root)?;
        let repeat: u32 = if quick { 200_000 } else { 5_000_000 };
        let rounds = if quick { 3 } else { 7 };
        let msg100 = vec![b'x'; 100];
        let msg500 = vec![b'y'; 500];
        let v4 = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, &msg100).build();
        let v4_500 = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, &msg500).build();
        let v6 = Frame::udp("2001:db8::2", "2001:db8::1", 40000, 514, &msg100).build();
        let other = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 515, &msg100).build();
        let tcp_syn = Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, SYN, b"");
        let mut tcp_data = Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, ACK | PSH, &msg100);
        tcp_data.payload = format!("100 {}", String::from_utf8_lossy(&msg100)).into_bytes();
        let tcp_data = tcp_data.build();
        let mut rows = Vec::new();
        let ebpf = dp.ebpf_mut();
        // An established flow, as its handshake leaves it, so the
        // repeats below measure the established path.
        establish(ebpf, &tcp_syn)?;
        let steering: &aya::Ebpf = ebpf;
        let object = |prog: &str| {
            if prog.starts_with("bg_noop") {
                &bench
            } else {
                steering
            }
        };
        for (name, prog, frame) in [
            ("no-op XDP (repeat)", "bg_noop", &v4),
            ("bg_steer UDP/IPv4 ~100 B", "bg_steer", &v4),
            ("bg_steer UDP/IPv4 ~500 B", "bg_steer", &v4_500),
            ("bg_steer UDP/IPv6 ~100 B", "bg_steer", &v6),
            ("bg_steer non-matching UDP", "bg_steer", &other),
            ("bg_steer TCP established segment", "bg_steer", &tcp_data),
        ] {
            let p: &Xdp = object(prog).program(prog).context(prog)?.try_into()?;
            rows.push(Row {
                name,
                ns_per_packet: time_repeats(&|o| p.test_run(o), frame, repeat, rounds)?,
                baseline: 0,
            });
        }
        // The split (issue 14) against today's UDP steering: weights
        // 0 and 10,000 are the plain colours' words (today's cost),
        // 5,000 takes the hash. The three are timed in turn, round by
        // round, so drift on a shared host hits all alike. The ACTIVE
        // map is written through its pin, beside the object's handle.
        let active_pin = pin_root.join("bench").join(bg_common::names::ACTIVE);
        let mut active: aya::maps::Array<aya::maps::MapData, u32> = aya::maps::Array::try_from(
            aya::maps::Map::Array(aya::maps::MapData::from_pin(&active_pin)?),
        )?;
        let p: &Xdp = steering
            .program("bg_steer")
            .context("bg_steer")?
            .try_into()?;
        let weights = [
            ("bg_steer UDP/IPv4, green weight 0 (plain blue)", 0),
            ("bg_steer UDP/IPv4, green weight 5000 (split)", 5000),
            (
                "bg_steer UDP/IPv4, green weight 10000 (plain green)",
                10_000,
            ),
        ];
        let mut samples = vec![Vec::new(); weights.len()];
        for _ in 0..rounds * 3 {
            for (i, (_, bp)) in weights.iter().enumerate() {
                let w = Weight::new(*bp).map_err(anyhow::Error::msg)?;
                active.set(0, Steering::split(Colour::Blue, w).word(), 0)?;
                // The kernel's figure (whole ns): a clock around the
                // call would also count the time the kernel yields the
                // CPU inside the run, which on a VM can be most of it.
                samples[i].push(time_repeats(&|o| p.test_run(o), &v4, repeat, 1)?);
            }
        }
        let weight_base = rows.len();
        for ((name, _), s) in weights.iter().zip(samples) {
            rows.push(Row {
                name,
                ns_per_packet: median(s),
                baseline: weight_base,
            });
        }
        active.set(0, Colour::Blue.index(), 0)?;
        // The TC twin (attach = "tc"), against a TC no-op: a socket
        // buffer costs more than an XDP frame before any program runs.
        let tc_base = rows.len();
        for (name, prog, frame) in [
            ("no-op TC (repeat)", "bg_noop_tc", &v4),
            ("bg_steer_tc UDP/IPv4 ~100 B", "bg_steer_tc", &v4),
            ("bg_steer_tc UDP/IPv6 ~100 B", "bg_steer_tc", &v6),
            (
                "bg_steer_tc TCP established segment",
                "bg_steer_tc",
                &tcp_data,
            ),
        ] {
            let p: &SchedClassifier = object(prog).program(prog).context(prog)?.try_into()?;
            rows.push(Row {
                name,
                ns_per_packet: time_repeats(&|o| p.test_run(o), frame, repeat, rounds)?,
                baseline: tc_base,
            });
        }
        // A SYN opens a flow only for a new tuple, and repeats reuse one
        // frame: time single runs over distinct source tuples instead, and
        // the no-op the same way, so the ratio compares like with like.
        let singles: u32 = if quick { 2_000 } else { 20_000 };
        let single_base = rows.len();
        for (name, prog) in [
            ("no-op XDP (single runs)", "bg_noop"),
            ("bg_steer TCP SYN (new pending flow)", "bg_steer"),
        ] {
            let p: &Xdp = object(prog).program(prog).context(prog)?.try_into()?;
            let mut samples = Vec::with_capacity(singles as usize);
            for i in 0..singles {
                let frame = syn_from(&tcp_syn, i);
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&frame);
                samples.push(p.test_run(opts)?.duration.as_nanos() as f64);
            }
            rows.push(Row {
                name,
                ns_per_packet: median(samples),
                baseline: single_base,
            });
        }
        let mut infos = Vec::new();
        for name in ["bg_steer", "bg_noop"] {
            let p: &Xdp = object(name).program(name).context(name)?.try_into()?;
            infos.push((name, p.info()?));
        }
        for name in ["bg_steer_tc", "bg_noop_tc"] {
            let p: &SchedClassifier = object(name).program(name).context(name)?.try_into()?;
            infos.push((name, p.info()?));
        }
        let insns = xlated::table(&infos)?;
        let memory = [
            "FLOWS",
            "FLOWS4",
            "REV_FLOWS",
            "PENDING_FLOWS",
            "PENDING_REV",
        ]
        .iter()
        .map(|m| {
            let bytes = ebpf.map(m).map_or(0, memlock);
            format!("{m} {:.1} MiB", bytes as f64 / f64::from(1 << 20))
        })
        .collect::<Vec<_>>()
        .join(", ");
        let walk = flow_walk(ebpf, &pin_root.join("bench"))?;
        Ok((rows, memory, walk, insns))
    })
}

/// Puts the flow of `syn` (to the TCP service, blue) in the established
/// tables, as the handshake's final ACK would. Repeated test runs reuse the
/// frame the previous run rewrote, whose destination is then the backend:
/// on a service listening on any address that is a flow of its own, which
/// is made established too, so every run takes the established path.
pub(crate) fn establish(ebpf: &mut aya::Ebpf, syn: &Frame) -> Result<()> {
    use bg_common::{FLOW_OPEN, FlowKey, FlowKey4, FlowValue, RevValue};
    use bluegreen::dataplane::addr_words;
    let (client_be, family) = addr_words(syn.src);
    let (service_be, _) = addr_words(syn.dst);
    let (backend_be, _) = addr_words("198.18.1.2".parse()?);
    let key = |server_be, port: u16| FlowKey {
        client_be,
        server_be,
        client_port_be: syn.sport.to_be(),
        server_port_be: port.to_be(),
        proto: 6,
        family,
        _pad: [0; 2],
    };
    // IPv4 flows are admitted to FLOWS4.
    let mut flows: aya::maps::HashMap<_, FlowKey4, FlowValue> =
        aya::maps::HashMap::try_from(ebpf.map_mut("FLOWS4").context("FLOWS4")?)?;
    let value = FlowValue {
        last_seen_jiffies: 0,
        colour: 0,
        state: FLOW_OPEN,
    };
    flows.insert(FlowKey4::of(&key(service_be, syn.dport)), value, 0)?;
    flows.insert(FlowKey4::of(&key(backend_be, 601)), value, 0)?;
    let mut rev: aya::maps::HashMap<_, FlowKey, RevValue> =
        aya::maps::HashMap::try_from(ebpf.map_mut("REV_FLOWS").context("REV_FLOWS")?)?;
    let value = RevValue {
        service_be,
        service_port_be: syn.dport.to_be(),
        _pad: [0; 2],
    };
    // Both flows steer to the same backend: one reverse entry serves them.
    rev.insert(key(backend_be, 601), value, 0)?;
    Ok(())
}

/// Fills the flow table to capacity and times the walk behind `status`
/// and `drain` (live connections per colour).
fn flow_walk(ebpf: &mut aya::Ebpf, pin_dir: &std::path::Path) -> Result<String> {
    let n = bg_common::DEFAULT_FLOW_TABLE_SIZE;
    scaling::fill_flows(ebpf, 0, n)?;
    let table = bluegreen::dataplane::FlowTable::open(pin_dir)?;
    let started = std::time::Instant::now();
    let live = table.live_connections(2, 1 << 40)?;
    let took = started.elapsed();
    Ok(format!(
        "flow table walk (status, drain) over {} flows: {:.0} ms ({} live)",
        n,
        took.as_secs_f64() * 1000.0,
        live[0] + live[1]
    ))
}

/// The kernel's accounting of a map's memory (memlock in its fdinfo).
fn memlock(map: &aya::maps::Map) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    let data = match map {
        aya::maps::Map::LruHashMap(d) | aya::maps::Map::HashMap(d) => d,
        _ => return 0,
    };
    let fd = data.fd().as_fd().as_raw_fd();
    std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("memlock:")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The program cost rows as a Markdown table, with the targets.
fn prog_table(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let mut t = String::from(
        "| program / packet | ns/pkt | ratio | compared with |\n|---|---:|---:|---|\n",
    );
    for r in rows {
        let base = &rows[r.baseline];
        let _ = writeln!(
            t,
            "| {} | {:.1} | {:.2}x | {} |",
            r.name,
            r.ns_per_packet,
            r.ns_per_packet / base.ns_per_packet,
            base.name
        );
    }
    t.push_str(
        "\nTargets: bg_steer UDP at most 1.5x the no-op; TCP established segments at most 3x.\n",
    );
    let ns = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| r.ns_per_packet)
    };
    if let (Some(plain), Some(split)) = (
        ns("bg_steer UDP/IPv4, green weight 0 (plain blue)"),
        ns("bg_steer UDP/IPv4, green weight 5000 (split)"),
    ) {
        let _ = writeln!(
            t,
            "Split: {:+.1} ns per packet at weight 5000 over plain UDP steering, timed in turn (goal: at most +3 ns).",
            split - plain
        );
    }
    t
}
