//! Throughput and flip-under-load on the gen -> lb -> blue/green topology,
//! with the built-in live-frames generator (this kernel has no pktgen) and
//! counting XDP sinks on the backends.
//!
//! Scenarios: `limit` (lb redirects every frame to blue without parsing:
//! the ceiling), `bluegreen` (the real agent and program), `nftables` (no
//! XDP: a DNAT rule in prerouting and kernel forwarding; a flip is an
//! atomic `nft -f`) and `relay` (HAProxy `log-forward`; a flip is a reload).
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aya::maps::DevMap;
use bg_tests::{
    agent::Agent,
    lab::{Backends, Family, Lab},
};

use crate::topology::{
    Gen, Generator, Sink, SinkCount, Traffic, attach_in, batch, ifindex, mac, syslog_frame,
};

pub const SCENARIOS: [&str; 4] = ["limit", "bluegreen", "nftables", "relay"];

pub struct Outcome {
    pub scenario: &'static str,
    pub traffic: Traffic,
    /// Offered rate in frames per second; None for maximum load.
    pub rate: Option<u32>,
    pub sent: u64,
    pub delivered: u64,
    pub seconds: f64,
    /// CPU seconds (user + system + irq + softirq, all CPUs) during the run.
    /// System-wide: the generator's share is included in every scenario.
    pub cpu_seconds: f64,
    pub generator: Gen,
    /// Longest run of frames the generator sent back to back.
    pub max_burst: u64,
}

impl Outcome {
    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
    pub fn loss_pct(&self) -> f64 {
        100.0 * self.sent.saturating_sub(self.delivered) as f64 / self.sent.max(1) as f64
    }
}

/// Busy CPU time so far, in seconds, from /proc/stat.
pub(crate) fn cpu_busy_seconds() -> f64 {
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

/// HAProxy in master-worker mode, one per address family (HAProxy 2.6
/// sends every log target of a process through one socket per thread,
/// opened in the first target's family), killed when the scenario ends.
struct Relay {
    children: Vec<std::process::Child>,
    configs: Vec<std::path::PathBuf>,
}

impl Relay {
    fn config_text(family: Family, colour_net: u8) -> String {
        let (bind, target) = match family {
            Family::V4 => (
                "198.18.0.1:514".to_owned(),
                format!("198.18.{colour_net}.2:514"),
            ),
            Family::V6 => (
                "[2001:db8::1]:514".to_owned(),
                format!("[2001:db8:{colour_net}::2]:514"),
            ),
        };
        format!(
            "global\n  maxconn 1000\n\nlog-forward syslog\n  dgram-bind {bind}\n  log {target} local0\n"
        )
    }

    fn start(lab: &Lab) -> Result<Self> {
        let mut relay = Relay {
            children: Vec::new(),
            configs: Vec::new(),
        };
        for (family, name) in [(Family::V4, "haproxy4"), (Family::V6, "haproxy6")] {
            let config = lab.path(&format!("{name}.cfg"));
            std::fs::write(&config, Relay::config_text(family, 1))?;
            let child = lab
                .lb
                .command("haproxy")
                .args(["-W", "-db", "-f", config.to_str().context("path")?])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::from(std::fs::File::create(
                    lab.path(&format!("{name}.err")),
                )?))
                .spawn()
                .context(
                    "starting haproxy (Debian package haproxy; `cargo xtask setup` installs it)",
                )?;
            relay.children.push(child);
            relay.configs.push(config);
        }
        let bound = bg_tests::wait_for(Duration::from_secs(5), || {
            let out = lab.lb.run("ss", &["-Hlun"]).ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("198.18.0.1:514") && text.contains("[2001:db8::1]:514")).then_some(())
        });
        if bound.is_none() {
            bail!(
                "haproxy did not bind 198.18.0.1:514 and [2001:db8::1]:514: {}{}",
                std::fs::read_to_string(lab.path("haproxy4.err")).unwrap_or_default(),
                std::fs::read_to_string(lab.path("haproxy6.err")).unwrap_or_default()
            );
        }
        Ok(relay)
    }

    /// Points both relays at a colour: new configs, then a reload (SIGUSR2
    /// to the master), as an operator would.
    fn point_to(&self, colour_net: u8) -> Result<()> {
        for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            std::fs::write(&self.configs[i], Relay::config_text(family, colour_net))?;
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.children[i].id() as i32, libc::SIGUSR2) };
        }
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One scenario's topology, set up once for all its runs.
pub struct Bench {
    pub scenario: &'static str,
    pub(crate) lab: Lab,
    pub(crate) blue: Sink,
    pub(crate) green: Sink,
    pub(crate) generator: Generator,
    agent: Option<Agent>,
    relay: Option<Relay>,
    _fwd: Option<crate::topology::Loaded>,
}

/// The `bluegreen` scenario's services in a direct-server-return `mode`:
/// the same backends, the service address kept (the sinks take frames by
/// MAC), dsr-ipip's outer header from the lb's own address.
fn dsr_config(lab: &Lab, mode: &str) -> String {
    let mut text =
        String::from("[dataplane]\nattach = \"xdp\"\n\n[health]\ninterval_ms = 3600000\n\n");
    for (family, suffix) in [(Family::V4, ""), (Family::V6, "6")] {
        let listen = bg_tests::lab::service_addr(family);
        let tunnel = if mode == "dsr-ipip" {
            format!("tunnel_source = \"{}\"\n", listen.ip())
        } else {
            String::new()
        };
        text.push_str(&bg_tests::fixtures::service(
            &format!("syslog-udp{suffix}-514"),
            "udp",
            listen,
            lab.backend_for("blue", family, 514),
            lab.backend_for("green", family, 514),
            // The sinks drop at XDP what the probe through the service
            // address would need answered.
            &format!("mode = \"{mode}\"\nprobe_service_address = false\n{tunnel}"),
        ));
    }
    text
}

/// Second octet group of a colour's backend network: 198.18.N.2, 2001:db8:N::2.
fn colour_net(letter: u8) -> u8 {
    if letter == b'G' { 2 } else { 1 }
}

impl Bench {
    pub fn new(scenario: &'static str) -> Result<Self> {
        let lab = Lab::new(Backends::Namespaces)?;
        let blue = Sink::attach(lab.blue.as_ref().context("blue")?, b'B')?;
        let green = Sink::attach(lab.green.as_ref().context("green")?, b'G')?;
        let generator = Generator::new(&lab.client, "c0")?;
        let mut bench = Self {
            scenario,
            lab,
            blue,
            green,
            generator,
            agent: None,
            relay: None,
            _fwd: None,
        };
        let lab = &bench.lab;
        match scenario {
            "limit" => {
                let to = ifindex(&lab.lb, &format!("bg{}l1", lab.id))?;
                bench._fwd = Some(attach_in(&lab.lb, "bg_fwd", lab.lb_if.clone(), move |e| {
                    let mut devmap: DevMap<_> =
                        DevMap::try_from(e.map_mut("FWD_TO").context("FWD_TO")?)?;
                    devmap.set(0, to, None, 0)?;
                    Ok(())
                })?);
            }
            "bluegreen" => {
                // The real agent steering UDP 514 in both families. Probes
                // would reach the sinks: one runs at start, then none.
                let config = lab.write_config_for(
                    &[("udp", 514)],
                    &[Family::V4, Family::V6],
                    "[health]\ninterval_ms = 3600000\n",
                )?;
                bench.agent = Some(Agent::start(lab, &config)?);
            }
            "bluegreen-dsr-l2" | "bluegreen-dsr-ipip" => {
                let config = lab.path("bluegreen.toml");
                let mode = scenario.trim_start_matches("bluegreen-");
                std::fs::write(&config, dsr_config(lab, mode))?;
                bench.agent = Some(Agent::start(lab, &config)?);
            }
            "nftables" => {
                // No XDP on the lb: frames from the generator's XDP_TX need
                // NAPI on the receiving veth, which GRO provides.
                lab.lb.run("ethtool", &["-K", &lab.lb_if, "gro", "on"])?;
                bench.nft_point_to(b'B')?;
            }
            "relay" => {
                lab.lb.run("ethtool", &["-K", &lab.lb_if, "gro", "on"])?;
                bench.relay = Some(Relay::start(lab)?);
            }
            other => bail!(
                "unknown scenario {other:?}; accepted: {}",
                SCENARIOS.join(", ")
            ),
        }
        // Resolve neighbours and fill caches in both families; not counted.
        for traffic in [Traffic::BASE, Traffic::new(Family::V6, 100)] {
            bench.generator.expect(b'?')?;
            let frame = bench.frame(traffic)?;
            bench
                .generator
                .send(&bench.lab.client, &frame, 1000, None)?;
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(bench)
    }

    pub(crate) fn frame(&self, traffic: Traffic) -> Result<Vec<u8>> {
        Ok(syslog_frame(
            traffic,
            mac(&self.lab.lb, &self.lab.lb_if)?,
            mac(&self.lab.client, "c0")?,
        ))
    }

    fn counts(&self) -> Result<(SinkCount, SinkCount)> {
        Ok((self.blue.count()?, self.green.count()?))
    }

    /// Replaces the DNAT ruleset atomically (one `nft -f` transaction).
    fn nft_point_to(&self, letter: u8) -> Result<()> {
        let n = colour_net(letter);
        let rules = self.lab.path("dnat.nft");
        std::fs::write(
            &rules,
            format!(
                "table ip bgbench\ndelete table ip bgbench\ntable ip bgbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    udp dport 514 dnat to 198.18.{n}.2:514\n  }}\n}}\n\
                 table ip6 bgbench\ndelete table ip6 bgbench\ntable ip6 bgbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    udp dport 514 dnat to [2001:db8:{n}::2]:514\n  }}\n}}\n"
            ),
        )?;
        self.lab
            .lb
            .run("nft", &["-f", rules.to_str().context("path")?])?;
        Ok(())
    }

    /// Points the scenario at a colour the way its operator would.
    fn flip(&self, letter: u8) -> Result<()> {
        match self.scenario {
            "bluegreen" => {
                use bluegreen::{api::protocol::Request, model::Colour};
                let colour = if letter == b'G' {
                    Colour::Green
                } else {
                    Colour::Blue
                };
                let agent = self.agent.as_ref().context("agent")?;
                bluegreen::cli::client::request(
                    &agent.socket,
                    &Request::Flip {
                        colour,
                        force: true,
                    },
                )?;
            }
            "nftables" => self.nft_point_to(letter)?,
            "relay" => self
                .relay
                .as_ref()
                .context("relay")?
                .point_to(colour_net(letter))?,
            other => bail!("scenario {other} has no flip"),
        }
        Ok(())
    }

    /// One run of the live-frames generator: `total` frames of `traffic`,
    /// at `rate` or maximum load.
    pub fn measure(&self, traffic: Traffic, total: u32, rate: Option<u32>) -> Result<Outcome> {
        let frame = self.frame(traffic)?;
        self.generator.expect(b'?')?;
        self.counted(Gen::LiveFrames, traffic, rate, || {
            let (sent, seconds) = self.generator.send(&self.lab.client, &frame, total, rate)?;
            Ok((sent, seconds, u64::from(batch(total, rate))))
        })
    }

    /// Runs `send` (which returns sent, seconds and its longest burst) and
    /// counts what the sinks received meanwhile.
    pub(crate) fn counted(
        &self,
        generator: Gen,
        traffic: Traffic,
        rate: Option<u32>,
        send: impl FnOnce() -> Result<(u64, f64, u64)>,
    ) -> Result<Outcome> {
        let before = self.counts()?;
        let cpu_before = cpu_busy_seconds();
        let (sent, seconds, max_burst) = send()?;
        std::thread::sleep(Duration::from_millis(200));
        let cpu_seconds = cpu_busy_seconds() - cpu_before;
        let after = self.counts()?;
        let delivered = (after.0 - before.0).frames + (after.1 - before.1).frames;
        let untagged = (after.0 - before.0).untagged + (after.1 - before.1).untagged;
        if untagged > 0 {
            println!("  {untagged} UDP frames without the generator's tag reached the sinks");
        }
        Ok(Outcome {
            scenario: self.scenario,
            traffic,
            rate,
            sent,
            delivered,
            seconds,
            cpu_seconds,
            generator,
            max_burst,
        })
    }

    /// What a Prometheus scrape of the agent costs: the median time of one
    /// `/metrics` request, and the delivered rate at maximum load without
    /// and with a scraper polling 10 times a second (the same traffic).
    pub fn scrape_cost(&self, total: u32) -> Result<ScrapeCost> {
        let alone = self.scrape_alone()?;
        let quiet = self.measure(Traffic::BASE, total, None)?;
        let done = std::sync::atomic::AtomicBool::new(false);
        let (scraped, busy) = std::thread::scope(|scope| -> Result<(u32, Outcome)> {
            let scraper = scope.spawn(|| {
                let mut n = 0u32;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if bg_tests::http::get(&self.lab.lb, "/metrics").is_ok() {
                        n += 1;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                n
            });
            let busy = self.measure(Traffic::BASE, total, None);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let n = scraper
                .join()
                .map_err(|_| anyhow::anyhow!("scraper panicked"))?;
            Ok((n, busy?))
        })?;
        Ok(ScrapeCost {
            alone,
            quiet_pps: quiet.delivered_pps(),
            scraped_pps: busy.delivered_pps(),
            scrapes: scraped,
        })
    }

    /// Scrapes with no traffic: the median time of one, the agent's CPU
    /// per scrape (its CPU over 200 scrapes, less its CPU over as long
    /// without any: the probes run meanwhile) and the exposition's size.
    pub fn scrape_alone(&self) -> Result<ScrapeAlone> {
        const N: usize = 200;
        let pid = self
            .agent
            .as_ref()
            .and_then(|a| a.status()["agent_pid"].as_u64())
            .context("the scrape cost needs the real agent")?;
        let cpu = || -> Result<f64> {
            bluegreen::host::process::read_pid(pid as u32)
                .cpu_seconds
                .context("the agent's CPU time (/proc/PID/stat)")
        };
        let (mut times, mut bytes) = (Vec::with_capacity(N), 0);
        let (c0, t0) = (cpu()?, Instant::now());
        for _ in 0..N {
            let t = Instant::now();
            let a = bg_tests::http::get(&self.lab.lb, "/metrics")?;
            anyhow::ensure!(a.status == 200, "GET /metrics: {}", a.status);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = a.body.len();
        }
        let (busy, wall) = (cpu()? - c0, t0.elapsed());
        let c1 = cpu()?;
        std::thread::sleep(wall);
        let idle = cpu()? - c1;
        times.sort_by(f64::total_cmp);
        Ok(ScrapeAlone {
            median_ms: times[N / 2],
            cpu_us: ((busy - idle).max(0.0) / N as f64) * 1e6,
            bytes,
        })
    }

    /// Data-path counters, when the real agent runs.
    pub fn agent_counters(&self) -> Option<serde_json::Value> {
        self.agent.as_ref().map(|a| a.status()["counters"].clone())
    }

    /// Flip-under-load: a steady `rate` while the scenario is flipped
    /// `flips` times, `gap` apart. Before each flip the generator tags
    /// frames "either"; once the flip is done, with the new colour. A frame
    /// tagged with a colour that reaches the other one is misrouted.
    pub fn flips(&self, total: u32, flips: u32, rate: u32, gap: Duration) -> Result<FlipOutcome> {
        let traffic = Traffic::BASE;
        let frame = self.frame(traffic)?;
        self.flip(b'B')?;
        std::thread::sleep(Duration::from_millis(200));
        self.generator.expect(b'B')?;
        let before = self.counts()?;
        let started = Instant::now();
        let mut timeline = Vec::new();
        let mut flip_times = Vec::new();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (sent, seconds) = std::thread::scope(|scope| -> Result<(u64, f64)> {
            let run = scope.spawn(|| {
                let r = self
                    .generator
                    .send(&self.lab.client, &frame, total, Some(rate));
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                r
            });
            let flipper = scope.spawn(|| -> Result<Vec<f64>> {
                let mut times = Vec::new();
                // Start after a little traffic, stop before the end.
                std::thread::sleep(Duration::from_millis(100));
                for i in 0..flips {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let letter = if i % 2 == 0 { b'G' } else { b'B' };
                    self.generator.expect(b'?')?;
                    self.flip(letter)?;
                    self.generator.expect(letter)?;
                    times.push(started.elapsed().as_secs_f64());
                    std::thread::sleep(gap);
                }
                Ok(times)
            });
            while !run.is_finished() {
                let (b, g) = self.counts()?;
                let (b, g) = (b - before.0, g - before.1);
                timeline.push(Sample {
                    t: started.elapsed().as_secs_f64(),
                    blue: b.frames,
                    green: g.frames,
                    wrong: b.wrong + g.wrong,
                });
                std::thread::sleep(Duration::from_millis(50));
            }
            flip_times = flipper
                .join()
                .map_err(|_| anyhow::anyhow!("flipper panicked"))??;
            run.join()
                .map_err(|_| anyhow::anyhow!("generator panicked"))?
        })?;
        std::thread::sleep(Duration::from_millis(200));
        let (b, g) = self.counts()?;
        let (b, g) = (b - before.0, g - before.1);
        Ok(FlipOutcome {
            scenario: self.scenario,
            timeline,
            rate,
            sent,
            blue: b.frames,
            green: g.frames,
            wrong: b.wrong + g.wrong,
            flip_times,
            seconds,
            baseline_lost: None,
        })
    }
}

/// Scrapes of `/metrics` with no traffic.
pub struct ScrapeAlone {
    /// Median time of one request, HTTP included.
    pub median_ms: f64,
    /// The agent's CPU per scrape, in microseconds (10 ms clock ticks
    /// over 200 scrapes: about 50 µs resolution).
    pub cpu_us: f64,
    /// The exposition's size.
    pub bytes: usize,
}

impl ScrapeAlone {
    pub fn line(&self) -> String {
        format!(
            "One `/metrics` scrape takes {:.2} ms (median of 200) and {:.0} µs of the agent's CPU, for {} bytes.",
            self.median_ms, self.cpu_us, self.bytes
        )
    }
}

/// The cost of scraping `/metrics`.
pub struct ScrapeCost {
    pub alone: ScrapeAlone,
    pub quiet_pps: f64,
    pub scraped_pps: f64,
    /// Scrapes during the loaded run.
    pub scrapes: u32,
}

impl ScrapeCost {
    pub fn section(&self) -> String {
        format!(
            "## Scrape cost\n\n{} At maximum load ({}), bluegreen delivered {:.2} Mpps without scrapes and {:.2} Mpps with a scrape every 100 ms ({} scrapes during the run): {:.2}x.\n",
            self.alone.line(),
            Traffic::BASE.label(),
            self.quiet_pps / 1e6,
            self.scraped_pps / 1e6,
            self.scrapes,
            self.scraped_pps / self.quiet_pps.max(1.0)
        )
    }
}

/// Cumulative counts at one moment of a flip run.
pub struct Sample {
    pub t: f64,
    pub blue: u64,
    pub green: u64,
    pub wrong: u64,
}

/// What a run with flips during it delivered.
pub struct FlipOutcome {
    pub scenario: &'static str,
    /// Sampled every 50 ms during the run.
    pub timeline: Vec<Sample>,
    pub rate: u32,
    pub sent: u64,
    pub blue: u64,
    pub green: u64,
    /// Frames tagged for one colour (generated after a flip completed)
    /// that reached the other.
    pub wrong: u64,
    /// When each flip completed, in seconds since the start.
    pub flip_times: Vec<f64>,
    pub seconds: f64,
    /// Lost by the same run without flips, when measured: the loss a
    /// scenario has anyway at this rate, apart from its flips.
    pub baseline_lost: Option<u64>,
}

impl FlipOutcome {
    pub fn flips(&self) -> usize {
        self.flip_times.len()
    }

    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.blue + self.green)
    }

    /// The longest time after a flip during which misrouted frames kept
    /// arriving (to 50 ms sampling), and whether after some flip they still
    /// arrived in the last interval before the next flip or the end: then
    /// misrouting had not ended, and the time is a lower bound.
    pub fn misrouting(&self) -> (f64, bool) {
        let mut longest: f64 = 0.0;
        let mut unended = false;
        for (i, &t) in self.flip_times.iter().enumerate() {
            let until = self.flip_times.get(i + 1).copied().unwrap_or(f64::MAX);
            // From the last sample before the flip to the next flip.
            let first = self.timeline.iter().rposition(|s| s.t < t).unwrap_or(0);
            let window: Vec<&Sample> = self.timeline[first..]
                .iter()
                .take_while(|s| s.t < until)
                .collect();
            let rises: Vec<usize> = window
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w[1].wrong > w[0].wrong)
                .map(|(i, _)| i + 1)
                .collect();
            if let Some(&last) = rises.last() {
                longest = longest.max(window[last].t - t);
                unended |= last + 1 == window.len();
            }
        }
        (longest, unended)
    }
}
