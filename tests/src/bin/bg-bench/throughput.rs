//! Throughput on the gen -> lb -> blue/green topology, with the built-in
//! live-frames generator (BPF_PROG_TEST_RUN with XDP live frames, since this
//! kernel has no pktgen) and XDP counting sinks on the backends.
//!
//! Scenarios so far: `limit` (lb redirects every frame to blue without
//! parsing: the ceiling), `bluegreen` (the real agent and program) and
//! `nftables` (no XDP: a DNAT rule in prerouting and kernel forwarding).
use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{DevMap, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use bg_tests::{
    agent::Agent,
    lab::{Backends, Family, Lab, remove_pins, service_addr},
    netns::NetNs,
    packet::Frame,
    unique_id,
};
use bluegreen::dataplane::load_object;

pub struct Outcome {
    pub scenario: &'static str,
    pub sent: u64,
    pub delivered: u64,
    pub seconds: f64,
    /// CPU seconds (user + system + irq + softirq, all CPUs) during the run.
    /// System-wide: the generator's share is included in every scenario.
    pub cpu_seconds: f64,
}

/// Busy CPU time so far, in seconds, from /proc/stat.
fn cpu_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: count all but idle and iowait.
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 4].contains(i))
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

impl Outcome {
    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
    pub fn loss_pct(&self) -> f64 {
        100.0 * self.sent.saturating_sub(self.delivered) as f64 / self.sent.max(1) as f64
    }
}

/// A child process killed when the scenario ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An object loaded for bench programs, with its pins removed on drop.
struct Loaded {
    ebpf: Ebpf,
    pin_root: PathBuf,
}

impl Loaded {
    fn new() -> Result<Self> {
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/bluegreen-bench-{}", unique_id()));
        bg_tests::cleanup::track_pins(&pin_root);
        let ebpf = load_object(&pin_root.join("x"), false, 1024)?;
        Ok(Self { ebpf, pin_root })
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        remove_pins(&self.pin_root);
        bg_tests::cleanup::untrack_pins(&self.pin_root);
    }
}

fn mac(ns: &NetNs, dev: &str) -> Result<[u8; 6]> {
    let out = ns.run("ip", &["-o", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hex = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .with_context(|| format!("no MAC for {dev}"))?;
    let mut mac = [0u8; 6];
    for (i, b) in hex.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(b, 16)?;
    }
    Ok(mac)
}

fn ifindex(ns: &NetNs, dev: &str) -> Result<u32> {
    let out = ns.run("ip", &["-o", "link", "show", "dev", dev])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .context("ip link")?
        .trim()
        .parse()?)
}

/// Loads the bench object inside `ns` and attaches `program` to `dev` there
/// (the kernel resolves interfaces in the caller's namespace). The link
/// stays until the namespace, and with it the interface, goes.
fn attach_in(
    ns: &NetNs,
    program: &'static str,
    dev: String,
    setup: impl FnOnce(&mut Ebpf) -> Result<()> + Send + 'static,
) -> Result<Loaded> {
    ns.enter(move || -> Result<Loaded> {
        let mut loaded = Loaded::new()?;
        setup(&mut loaded.ebpf)?;
        let prog: &mut Xdp = loaded
            .ebpf
            .program_mut(program)
            .context(program)?
            .try_into()?;
        prog.load()?;
        let id = prog.attach(&dev, XdpMode::Driver)?;
        std::mem::forget(prog.take_link(id)?);
        Ok(loaded)
    })?
}

fn count(sink: &Loaded) -> Result<u64> {
    let map = sink.ebpf.map("SINK_COUNT").context("SINK_COUNT")?;
    let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    Ok(counts.get(&0, 0)?.iter().sum())
}

/// Sends `total` copies of `frame` out of `dev` in `ns`, as fast as the
/// generator goes, and returns (sent, seconds).
fn generate(ns: &NetNs, dev: &str, frame: Vec<u8>, total: u32) -> Result<(u64, f64)> {
    generate_at(ns, dev, frame, total, None)
}

/// Like `generate`, at `rate` frames per second when given: batches of a
/// 50 ms worth, each sent when due.
fn generate_at(
    ns: &NetNs,
    dev: &str,
    frame: Vec<u8>,
    total: u32,
    rate: Option<u32>,
) -> Result<(u64, f64)> {
    let index = ifindex(ns, dev)?;
    // The kernel resolves ingress_ifindex in the caller's namespace.
    ns.enter(move || -> Result<(u64, f64)> {
        let mut generator = Loaded::new()?;
        // The template the generator restores on every run: u32 length, bytes.
        let mut template = [0u8; 4 + 640];
        template[..4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        template[4..4 + frame.len()].copy_from_slice(&frame);
        let map = generator
            .ebpf
            .map_mut("GEN_TEMPLATE")
            .context("GEN_TEMPLATE")?;
        let mut templates: aya::maps::Array<_, [u8; 644]> = aya::maps::Array::try_from(map)?;
        templates.set(0, template, 0)?;
        let p: &mut Xdp = generator
            .ebpf
            .program_mut("bg_gen")
            .context("bg_gen")?
            .try_into()?;
        p.load()?;
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&index.to_ne_bytes());
        let started = Instant::now();
        // Each live-frames run costs about 20 ms to set up: batches of 50 ms
        // of traffic keep the average rate without that cost dominating.
        let batch = rate.map_or(total, |r| (r / 20).max(1));
        let mut sent = 0u32;
        while sent < total {
            let n = batch.min(total - sent);
            if let Some(r) = rate {
                let due =
                    started + std::time::Duration::from_secs_f64(f64::from(sent) / f64::from(r));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&frame);
            opts.ctx_in = Some(&ctx);
            opts.repeat = n;
            opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
            p.test_run(opts)?;
            sent += n;
        }
        Ok((u64::from(total), started.elapsed().as_secs_f64()))
    })?
}

fn syslog_frame(to_mac: [u8; 6], from_mac: [u8; 6]) -> Vec<u8> {
    let target = service_addr(Family::V4);
    // A real RFC 3164 line (about 100 bytes), so a relay forwards it.
    let mut payload = b"<14>Nov 24 00:00:00 gen bench: ".to_vec();
    payload.resize(100, b'x');
    let mut frame = Frame::udp(
        "198.18.0.2",
        &target.ip().to_string(),
        40000,
        target.port(),
        &payload,
    );
    // The generator varies the source port; with no UDP checksum (allowed
    // over IPv4) it need not fix one up, and the kernel path accepts it.
    frame.no_udp_checksum = true;
    let mut f = frame.build();
    f[0..6].copy_from_slice(&to_mac);
    f[6..12].copy_from_slice(&from_mac);
    f
}

/// The topology with counting sinks on blue and green.
fn lab_with_sinks() -> Result<(Lab, Loaded, Loaded)> {
    let lab = Lab::new(Backends::Namespaces)?;
    let blue = attach_in(
        lab.blue.as_ref().context("blue")?,
        "bg_sink",
        "b0".into(),
        |_| Ok(()),
    )?;
    let green = attach_in(
        lab.green.as_ref().context("green")?,
        "bg_sink",
        "b0".into(),
        |_| Ok(()),
    )?;
    Ok((lab, blue, green))
}

/// The real agent steering UDP 514. Probes would reach the counting sinks
/// too: one runs at start, then none during a run, so the counts are
/// exactly the generator's.
fn bluegreen_agent(lab: &Lab) -> Result<Agent> {
    let config = lab.write_test_config(
        &[("udp", 514)],
        Family::V4,
        "[service.health]\ninterval_ms = 3600000\n",
    )?;
    Agent::start(lab, &config)
}

pub fn run(scenario: &'static str, total: u32) -> Result<Outcome> {
    let (lab, blue, green) = lab_with_sinks()?;
    let mut _agent = None;
    let mut _fwd = None;
    let mut _relay = None;
    match scenario {
        "limit" => {
            let to = ifindex(&lab.lb, &format!("bg{}l1", lab.id))?;
            let fwd = attach_in(&lab.lb, "bg_fwd", lab.lb_if.clone(), move |ebpf| {
                let mut devmap: DevMap<_> =
                    DevMap::try_from(ebpf.map_mut("FWD_TO").context("FWD_TO")?)?;
                devmap.set(0, to, None, 0)?;
                Ok(())
            })?;
            _fwd = Some(fwd);
        }
        "bluegreen" => {
            let agent = bluegreen_agent(&lab)?;
            // Let the lb resolve blue once, so the fast path is in use.
            std::thread::sleep(std::time::Duration::from_millis(300));
            _agent = Some(agent);
        }
        "nftables" => {
            // No XDP on the lb: frames from the generator's XDP_TX need NAPI
            // on the receiving veth, which GRO provides.
            lab.lb.run("ethtool", &["-K", &lab.lb_if, "gro", "on"])?;
            let rules = lab.path("dnat.nft");
            std::fs::write(
                &rules,
                "table ip bgbench {\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n    udp dport 514 dnat to 198.18.1.2:514\n  }\n}\n",
            )?;
            lab.lb
                .run("nft", &["-f", rules.to_str().context("path")?])?;
        }
        "relay" => {
            // A userspace syslog relay on the lb: HAProxy's log-forward.
            lab.lb.run("ethtool", &["-K", &lab.lb_if, "gro", "on"])?;
            let conf = lab.path("haproxy.cfg");
            std::fs::write(
                &conf,
                "global\n  maxconn 1000\n\nlog-forward syslog\n  dgram-bind 198.18.0.1:514\n  log 198.18.1.2:514 local0\n",
            )?;
            let child = lab
                .lb
                .command("haproxy")
                .args(["-f", conf.to_str().context("path")?, "-db"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::from(std::fs::File::create(
                    lab.path("haproxy.err"),
                )?))
                .spawn()
                .context(
                    "starting haproxy (Debian package haproxy; `cargo xtask setup` installs it)",
                )?;
            _relay = Some(KillOnDrop(child));
            let bound = bg_tests::wait_for(std::time::Duration::from_secs(5), || {
                let out = lab.lb.run("ss", &["-Hlun"]).ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains("198.18.0.1:514")
                    .then_some(())
            });
            if bound.is_none() {
                bail!(
                    "haproxy did not bind 198.18.0.1:514: {}",
                    std::fs::read_to_string(lab.path("haproxy.err")).unwrap_or_default()
                );
            }
        }
        other => bail!("unknown scenario {other:?}; accepted: limit, bluegreen, nftables, relay"),
    }
    let frame = syslog_frame(mac(&lab.lb, &lab.lb_if)?, mac(&lab.client, "c0")?);
    // Warm up: resolve neighbours, fill caches; not counted.
    generate(&lab.client, "c0", frame.clone(), 1000)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = count(&blue)? + count(&green)?;
    let cpu_before = cpu_busy_seconds();
    let (sent, seconds) = generate(&lab.client, "c0", frame, total)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let cpu_seconds = cpu_busy_seconds() - cpu_before;
    let delivered = count(&blue)? + count(&green)? - before;
    if let Some(agent) = &_agent {
        println!("  data path counters: {}", agent.status()["counters"]);
    }
    Ok(Outcome {
        scenario,
        sent,
        delivered,
        seconds,
        cpu_seconds,
    })
}

/// What a run with flips during it delivered.
pub struct FlipOutcome {
    /// (seconds since start, frames at blue, frames at green), cumulative,
    /// sampled every 50 ms during the run.
    pub timeline: Vec<(f64, u64, u64)>,
    pub rate: u32,
    pub sent: u64,
    pub blue: u64,
    pub green: u64,
    pub flips: u32,
    pub seconds: f64,
}

/// Flip-under-load: the generator offers a steady `rate` while the agent is
/// flipped `flips` times through its control socket. Every frame must
/// arrive at blue or green. (Flips are forced: the probes, which would be
/// counted by the sinks, are slowed out of the run.)
pub fn flips(total: u32, flips: u32, rate: u32) -> Result<FlipOutcome> {
    let (lab, blue, green) = lab_with_sinks()?;
    let agent = bluegreen_agent(&lab)?;
    let frame = syslog_frame(mac(&lab.lb, &lab.lb_if)?, mac(&lab.client, "c0")?);
    // Warm up both colours' next hops.
    for colour in ["green", "blue"] {
        let out = agent.ctl(&["flip", colour, "--force"]);
        if !out.status.success() {
            bail!("flip: {}", String::from_utf8_lossy(&out.stderr));
        }
        generate(&lab.client, "c0", frame.clone(), 1000)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = (count(&blue)?, count(&green)?);
    let socket = agent.socket.clone();
    let flipper = std::thread::spawn(move || -> Result<u32> {
        use bluegreen::{colour::Colour, control::Request};
        let mut done = 0;
        for i in 0..flips {
            let colour = if i % 2 == 0 {
                Colour::Green
            } else {
                Colour::Blue
            };
            bluegreen::client::request(
                &socket,
                &Request::Flip {
                    colour,
                    force: true,
                },
            )?;
            done += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(done)
    });
    // Sample both sinks while the generator runs on its own thread.
    let started = Instant::now();
    let mut timeline = Vec::new();
    let (sent, seconds) = std::thread::scope(|scope| -> Result<(u64, f64)> {
        let run = scope.spawn(|| generate_at(&lab.client, "c0", frame, total, Some(rate)));
        while !run.is_finished() {
            timeline.push((
                started.elapsed().as_secs_f64(),
                count(&blue)? - before.0,
                count(&green)? - before.1,
            ));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        run.join()
            .map_err(|_| anyhow::anyhow!("generator panicked"))?
    })?;
    let flips_done = flipper
        .join()
        .map_err(|_| anyhow::anyhow!("flipper panicked"))??;
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok(FlipOutcome {
        timeline,
        rate,
        sent,
        blue: count(&blue)? - before.0,
        green: count(&green)? - before.1,
        flips: flips_done,
        seconds,
    })
}
