//! The soak: the lab with real rsyslog on both colours, a bounded stream
//! of UDP and TCP syslog with unique ids at a fixed rate, and chaos on a
//! seeded schedule: a flip every second, and every `EPISODE_EVERY` one of
//! an agent `kill -9` and restart, a deploy whose new colour dies in bake
//! and is rolled back, a backend restarted, the state directory filled up.
//! At the end every message is looked up in both colours' files.
mod account;
mod chaos;
mod senders;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

pub use account::Report;
use chaos::Episode;
pub use chaos::{TmpfsMount, fill};

use crate::{
    agent::Agent,
    lab::{Backends, Family, Lab},
    rsyslog::Rsyslog,
};

/// Between two chaos episodes, flips only.
pub const EPISODE_EVERY: Duration = Duration::from_secs(10);

pub struct Options {
    pub duration: Duration,
    pub seed: u64,
    /// UDP messages per second.
    pub udp_rate: u32,
    /// TCP connections open at once, each sending `tcp_rate` messages a
    /// second for 2 to 4 s, then closing and opening a new one.
    pub tcp_connections: usize,
    pub tcp_rate: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            seed: 1,
            udp_rate: 400,
            tcp_connections: 2,
            tcp_rate: 40,
        }
    }
}

/// What the colour was when: each change with the window in which it
/// happened (a flip command's run, a deployment from start to rollback).
/// Messages sent inside a window may land on either colour.
pub struct Timeline {
    /// When the soak started: problems say how far into it they were.
    pub origin: Instant,
    /// (window start, window end, colour from the end on: 0 blue, 1 green)
    pub changes: Vec<(Instant, Instant, usize)>,
    /// Windows in which messages to `colour` may be lost, as the docs say
    /// (a backend killed in bake, until the rollback): (start, end, colour).
    pub loss_windows: Vec<(Instant, Instant, usize)>,
    /// What chaos did when: (start, end, what), episodes and the backend
    /// stops inside them.
    pub events: Vec<(Instant, Instant, String)>,
}

impl Timeline {
    /// The colour at `t`, or `None` inside a change's window (widened by
    /// `MARGIN`: a datagram meets XDP a little after `send` returns).
    pub fn colour_at(&self, t: Instant) -> Option<usize> {
        const MARGIN: Duration = Duration::from_millis(20);
        let mut colour = 0;
        for &(start, end, c) in &self.changes {
            if t + MARGIN >= start && t <= end + MARGIN {
                return None;
            }
            if end <= t {
                colour = c;
            }
        }
        Some(colour)
    }

    /// `t` as seconds into the soak, and how far from the nearest death
    /// of a colour in bake.
    pub fn describe(&self, t: Instant) -> String {
        let secs = t.duration_since(self.origin).as_secs_f64();
        let nearest = self
            .loss_windows
            .iter()
            .map(|&(start, _, c)| {
                let killed = start + chaos::HELD;
                let ms = if t >= killed {
                    t.duration_since(killed).as_secs_f64() * 1e3
                } else {
                    -killed.duration_since(t).as_secs_f64() * 1e3
                };
                (ms, c)
            })
            .min_by(|a, b| a.0.abs().total_cmp(&b.0.abs()));
        let mut out = match nearest {
            Some((ms, c)) => format!("at {secs:.3} s, {ms:+.0} ms from {} dying", COLOURS[c]),
            None => format!("at {secs:.3} s"),
        };
        // The chaos closest in time: inside it, or how far before or after.
        let gap = |ev: &&(Instant, Instant, String)| {
            let (s, e) = (ev.0, ev.1);
            if t < s {
                s.duration_since(t)
            } else {
                t.saturating_duration_since(e)
            }
        };
        if let Some(ev) = self.events.iter().min_by_key(gap) {
            let (s, e, what) = ev;
            if t >= *s && t <= *e {
                out.push_str(&format!(", during {what}"));
            } else if t < *s {
                out.push_str(&format!(", {} ms before {what}", gap(&ev).as_millis()));
            } else {
                out.push_str(&format!(", {} ms after {what}", gap(&ev).as_millis()));
            }
        }
        out
    }

    pub fn may_lose(&self, t: Instant, colour: usize) -> bool {
        self.loss_windows
            .iter()
            .any(|&(s, e, c)| c == colour && t >= s && t <= e)
    }
}

/// The parts the episodes act on.
// Fields drop in order: the agent and servers first, the lab last.
pub struct Soak {
    pub agent: Agent,
    /// Blue's and green's rsyslogd; `None` while one is down.
    pub servers: [Option<Rsyslog>; 2],
    pub timeline: Arc<Mutex<Timeline>>,
    pub state_dir: PathBuf,
    pub report: Report,
    _state_mount: chaos::TmpfsMount,
    pub lab: Lab,
}

pub const COLOURS: [&str; 2] = ["blue", "green"];
pub const UDP_PORT: u16 = 514;
pub const TCP_PORT: u16 = 601;

/// How deploys run here: fast gates and a bake long enough to kill green
/// inside it.
const DEPLOY: &str = "[deploy]\nhealthy_timeout_s = 10\nbake_s = 6\nkeep_warm_s = 0\nvalidate_messages = 100\nvalidate_rate = 2000\n";

impl Soak {
    fn start() -> Result<Self> {
        let lab = Lab::new(Backends::Namespaces)?;
        // The state directory on its own small tmpfs, to fill up.
        let state_dir = lab.path("state");
        let mount = chaos::TmpfsMount::new(&state_dir, "2m")?;
        let config =
            lab.write_test_config(&[("udp", UDP_PORT), ("tcp", TCP_PORT)], Family::V4, DEPLOY)?;
        bluegreen::dataplane::bpffs::ensure_mounted(&lab.pin_root)?;
        let servers = [0, 1].map(|c| start_server(&lab, c).ok());
        anyhow::ensure!(
            servers.iter().all(Option::is_some),
            "rsyslogd did not start"
        );
        let agent = Agent::start(&lab, &config)?;
        agent.wait_healthy(&COLOURS, Duration::from_secs(15));
        Ok(Self {
            lab,
            agent,
            servers,
            timeline: Arc::new(Mutex::new(Timeline {
                origin: Instant::now(),
                changes: Vec::new(),
                loss_windows: Vec::new(),
                events: Vec::new(),
            })),
            state_dir,
            report: Report::default(),
            _state_mount: mount,
        })
    }

    /// The colour the agent says is active.
    pub fn active(&self) -> Option<usize> {
        let out = self.agent.ctl(&["--json", "status"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        COLOURS.iter().position(|c| s["active"] == *c)
    }

    /// A flip to the other colour, recorded with its window and outcome.
    /// Flips to the other colour; the CLI's answer, None when the active
    /// colour could not be read.
    pub fn flip(&mut self) -> Option<std::process::Output> {
        let Some(now) = self.active() else {
            self.report.flips_refused += 1;
            return None;
        };
        let start = Instant::now();
        let out = self.agent.ctl(&["flip", COLOURS[1 - now]]);
        let after = self.active().unwrap_or(now);
        let end = Instant::now();
        self.timeline
            .lock()
            .unwrap()
            .changes
            .push((start, end, after));
        if out.status.success() {
            self.report.flips_ok += 1;
        } else {
            self.report.flips_refused += 1;
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            self.report.note(format!("flip refused: {why}"));
        }
        Some(out)
    }
}

pub fn start_server(lab: &Lab, colour: usize) -> Result<Rsyslog> {
    let c = COLOURS[colour];
    let udp: SocketAddr = lab.backend_for(c, Family::V4, UDP_PORT);
    let tcp: SocketAddr = lab.backend_for(c, Family::V4, TCP_PORT);
    Rsyslog::start(lab.backend_ns(c), &lab.dir, c, &[udp], &[tcp])
        .with_context(|| format!("rsyslogd {c}"))
}

/// Runs the soak; the report says what was lost, where and why.
pub fn run(opts: &Options) -> Result<Report> {
    let mut soak = Soak::start()?;
    let pid = soak.agent.pid();
    soak.report.footprint_start = pid.and_then(chaos::footprint);
    let deadline = Instant::now() + opts.duration;
    let senders = senders::start(&soak.lab, opts, deadline)?;
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let mut order: Vec<Episode> = Vec::new();
    let mut next_episode = Instant::now() + EPISODE_EVERY;
    // Leave the last seconds quiet, so every message sent has landed.
    let chaos_until = deadline - Duration::from_secs(2);
    while Instant::now() < chaos_until {
        let tick = Instant::now() + Duration::from_secs(1);
        if Instant::now() >= next_episode && Instant::now() + Duration::from_secs(12) < chaos_until
        {
            if order.is_empty() {
                order = Episode::ALL.to_vec();
                rng.shuffle(&mut order);
            }
            let episode = order.pop().expect("refilled");
            // Deploy onto either colour, not the one the flips' parity gives.
            if matches!(episode, Episode::DeployRolledBack) && rng.bool() {
                soak.flip();
            }
            let started = Instant::now();
            if let Err(e) = episode.run(&mut soak) {
                let at = soak.timeline.lock().unwrap().describe(started);
                soak.report
                    .problems
                    .push(format!("{episode:?} failed: {e:#}, {at}"));
                soak.report.episodes_failed += 1;
            }
            soak.report.note(format!(
                "{episode:?} took {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            soak.timeline.lock().unwrap().events.push((
                started,
                Instant::now(),
                format!("{episode:?}"),
            ));
            next_episode = Instant::now() + EPISODE_EVERY;
        } else {
            soak.flip();
        }
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let sent = senders.finish();
    // The last datagrams reach rsyslog and its file within this.
    std::thread::sleep(Duration::from_secs(2));
    soak.report.footprint_end = soak.agent.pid().and_then(chaos::footprint);
    let lines: [Vec<String>; 2] = [0, 1].map(|c| {
        soak.servers[c]
            .as_ref()
            .map(Rsyslog::lines)
            .unwrap_or_default()
    });
    let timeline = soak.timeline.lock().unwrap();
    account::tally(&mut soak.report, &sent, &lines, &timeline);
    drop(timeline);
    Ok(std::mem::take(&mut soak.report))
}
