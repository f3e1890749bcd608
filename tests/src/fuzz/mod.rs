//! The differential fuzzer of `bg_steer`: random map states and random
//! frames through the real program (BPF_PROG_TEST_RUN), each answer held
//! against the oracle's (`oracle.rs`), checksums verified by an
//! independent parser (etherparse), and every counter accounted for.
//!
//! A run is a sequence of epochs of `EPOCH` frames. Epoch `k` of a run with
//! seed `s` has seed `s + k` and starts from fresh maps, so any failure is
//! replayed by a run that starts at that epoch's seed
//! (`cargo xtask fuzz --seed S --frames N`).
pub mod checksums;
pub mod oracle;
pub mod spec;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use arbitrary::{Arbitrary as _, Unstructured};
use bluegreen::model::{Colour, Steering, Weight};
use oracle::{Fate, Model, Service};
use spec::{FrameSpec, Universe};

use crate::prog::{Harness, TCX_NEXT, XDP_PASS};

/// Frames per epoch (one map state, its flows, its steering changes).
pub const EPOCH: u64 = 1000;
/// Frames between two changes of the colour or the split.
const STEERING_EVERY: u64 = 97;

/// The counters a steered frame may end in here: the namespace has only
/// loopback, so the FIB hands every one to the kernel.
const STEERED_EXITS: [&str; 4] = [
    "pass_kernel_route",
    "pass_fwd_disabled",
    "pass_local",
    "pass_no_neigh",
];

/// One frame where the program and the oracle disagree.
#[derive(Debug)]
pub struct Disagreement {
    pub epoch_seed: u64,
    /// The frame's index in its epoch: replaying that epoch's first
    /// `index + 1` frames reproduces it.
    pub index: u64,
    pub what: String,
    pub frame: Vec<u8>,
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut hex = String::new();
        for b in &self.frame {
            let _ = write!(hex, "{b:02x}");
        }
        write!(
            f,
            "epoch seed {}, frame {}: {}\n  frame {hex}\n  replay: cargo xtask fuzz --seed {} --frames {}",
            self.epoch_seed,
            self.index,
            self.what,
            self.epoch_seed,
            self.index + 1
        )
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub frames: u64,
    pub steered: u64,
    /// Of those, to a direct server return colour.
    pub steered_dsr: u64,
    /// Untouched frames by the counter they were counted under.
    pub untouched: BTreeMap<&'static str, u64>,
    /// Rewritten frames whose checksums etherparse verified.
    pub checksums_verified: u64,
    /// Frames the kernel would not run through TC (`ip_header_cut`).
    pub tc_not_runnable: u64,
    pub tcp_events: BTreeMap<&'static str, u64>,
    pub disagreements: Vec<Disagreement>,
    pub elapsed: Duration,
}

impl Report {
    pub fn frames_per_second(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// What ran and what came out, for people.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} frames in {:.1} s ({:.0} frames/s): {} steered ({} to DSR colours; {} with checksums verified by etherparse), {} disagreements\n",
            self.frames,
            self.elapsed.as_secs_f64(),
            self.frames_per_second(),
            self.steered,
            self.steered_dsr,
            self.checksums_verified,
            self.disagreements.len()
        );
        let _ = writeln!(
            s,
            "  each through bg_steer and bg_steer_tc ({} cut inside the IP header, which the kernel runs through XDP only)",
            self.tc_not_runnable
        );
        for (name, n) in &self.untouched {
            let _ = writeln!(s, "  untouched, {name}: {n}");
        }
        for (name, n) in &self.tcp_events {
            let _ = writeln!(s, "  TCP event {name}: {n}");
        }
        s
    }
}

/// Runs `frames` frames from `seed`, stopping early after `max_failures`
/// disagreements. Call inside a fresh namespace (`prog::in_netns`).
pub fn run(seed: u64, frames: u64, max_failures: usize) -> Report {
    let start = Instant::now();
    let mut report = Report::default();
    let mut epoch = 0;
    while report.frames < frames && report.disagreements.len() < max_failures {
        let n = EPOCH.min(frames - report.frames);
        run_epoch(seed.wrapping_add(epoch), n, &mut report);
        epoch += 1;
    }
    report.elapsed = start.elapsed();
    report
}

fn run_epoch(epoch_seed: u64, frames: u64, report: &mut Report) {
    let mut rng = fastrand::Rng::with_seed(epoch_seed);
    let (services, config) = random_services(&mut rng);
    let universe = universe(&services, &mut rng);
    let mut h = Harness::new(&config, false);
    // No idle timeout and no close grace: the oracle has no clock.
    h.dp.set_tcp_timeouts(0, 0).expect("tcp settings");
    let split_seed = rng.u32(..);
    h.dp.set_split_seed(split_seed).expect("split seed");
    let mut model = Model::new(services, split_seed);
    let mut fail = |index, what: String, frame: &[u8]| {
        report.disagreements.push(Disagreement {
            epoch_seed,
            index,
            what,
            frame: frame.to_vec(),
        });
    };
    let mut before = h.counters();
    let mut steered = vec![[(0u64, 0u64); 2]; model.services.len()];
    let mut bytes = [0u8; 512];
    for index in 0..frames {
        if index % STEERING_EVERY == 0 {
            change_steering(&mut h, &mut model, &mut rng);
        }
        rng.fill(&mut bytes);
        let Ok(spec) = FrameSpec::arbitrary(&mut Unstructured::new(&bytes)) else {
            continue;
        };
        let frame = spec.build(&universe);
        let want = model.predict(&frame);
        report.frames += 1;
        // Both programs, XDP and TC ingress, on the same frame and the
        // same maps: the TC one must decide alike.
        let mut outs = Vec::new();
        for program in [Program::Xdp, Program::Tc] {
            let (action, out) = match program {
                Program::Xdp => h.run(&frame),
                Program::Tc => match h.try_run_steer_tc(&frame) {
                    Ok(r) => r,
                    // The kernel builds no socket buffer for an IP frame
                    // cut inside its IP header (EINVAL): no such frame
                    // reaches TC there either.
                    Err(_) if ip_header_cut(&frame) => {
                        report.tc_not_runnable += 1;
                        continue;
                    }
                    Err(e) => {
                        fail(
                            index,
                            format!("TC: the kernel would not run it: {e}"),
                            &frame,
                        );
                        continue;
                    }
                },
            };
            let after = h.counters();
            let moved: Vec<(&'static str, u64)> = after
                .iter()
                .filter_map(|(k, v)| {
                    let d = v - before.get(k).copied().unwrap_or(0);
                    (d != 0).then_some((*k, d))
                })
                .collect();
            before = after;
            let counted: Vec<&str> = moved.iter().map(|(k, _)| *k).collect();
            // The second run is the same frame arriving again: the model
            // moves on as the tables do (a SYN again is a retransmission,
            // a segment that began probation finds its flow).
            let want = match program {
                Program::Xdp => want.clone(),
                Program::Tc => model.predict(&frame),
            };
            for p in judge(program, &want, action, &frame, &out, &moved) {
                fail(
                    index,
                    format!("{program:?}: {p} (counted {counted:?})"),
                    &frame,
                );
            }
            outs.push(out);
        }
        if let Some(e) = want.tcp_event {
            *report.tcp_events.entry(e).or_default() += 1;
        }
        match want.fate {
            Fate::Untouched(name) => *report.untouched.entry(name).or_default() += 1,
            Fate::Steered {
                service,
                colour,
                dsr,
            } => {
                report.steered += 1;
                if dsr {
                    report.steered_dsr += 1;
                }
                let s = &mut steered[service][colour];
                // Counted once by each program; TC does not steer DSR.
                let programs = if dsr { 1 } else { 2 };
                s.0 += programs;
                s.1 += programs * frame.len() as u64;
                if checksums::valid(&frame) {
                    if outs.iter().all(|o| checksums::valid(o)) {
                        report.checksums_verified += 1;
                    } else {
                        fail(index, "rewritten with a bad checksum".into(), &frame);
                    }
                }
            }
        }
    }
    // Per service and colour, the packets and bytes the oracle steered.
    for (i, want) in steered.iter().enumerate() {
        let got = h.traffic(i);
        for c in 0..2 {
            if (got[c].packets, got[c].bytes) != want[c] {
                fail(
                    frames,
                    format!(
                        "service {i} colour {c}: STATS say {} packets {} bytes, the oracle {:?}",
                        got[c].packets, got[c].bytes, want[c]
                    ),
                    &[],
                );
            }
        }
    }
    assert!(
        model.flows() < 512,
        "epoch {epoch_seed} made {} flows: the tables could evict",
        model.flows()
    );
}

/// An untagged IPv4 or IPv6 frame that ends inside its fixed IP header.
fn ip_header_cut(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.len() < 14 + 20,
        Some([0x86, 0xdd]) => frame.len() < 14 + 40,
        _ => false,
    }
}

#[derive(Clone, Copy, Debug)]
enum Program {
    /// `bg_steer`.
    Xdp,
    /// `bg_steer_tc`, which hands every steered packet to the kernel.
    Tc,
}

/// What is wrong with the program's answer, if anything.
fn judge(
    program: Program,
    want: &oracle::Prediction,
    action: u32,
    frame: &[u8],
    out: &[u8],
    moved: &[(&'static str, u64)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let pass = match program {
        Program::Xdp => XDP_PASS,
        Program::Tc => TCX_NEXT,
    };
    if action != pass {
        problems.push(format!("verdict {action}, the oracle {pass} (pass)"));
    }
    // Exactly one data-path counter per frame, plus a TCP event and the
    // direct server return events, if any.
    let (tcp, rest): (Vec<_>, Vec<_>) = moved.iter().partition(|(k, _)| k.starts_with("tcp_"));
    let (dsr, path): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(k, _)| k.starts_with("dsr_"));
    let path_ok = match (&want.fate, path.as_slice()) {
        (Fate::Untouched(name), [(k, 1)]) => k == name,
        (Fate::Steered { dsr, .. }, [(k, 1)]) => match (program, dsr) {
            (Program::Xdp, _) => STEERED_EXITS.contains(k),
            (Program::Tc, false) => *k == "tc_to_kernel",
            (Program::Tc, true) => *k == "pass_no_backend",
        },
        _ => false,
    };
    if !path_ok {
        problems.push(format!("counters {path:?}, the oracle {:?}", want.fate));
    }
    let tcp_ok = match (want.tcp_event, tcp.as_slice()) {
        (None, []) => true,
        (Some(e), [(k, 1)]) => *k == e,
        _ => false,
    };
    if !tcp_ok {
        problems.push(format!(
            "TCP events {tcp:?}, the oracle {:?}",
            want.tcp_event
        ));
    }
    let want_dsr = want.dsr_events(matches!(program, Program::Tc));
    let mut got_dsr: Vec<&str> = dsr
        .iter()
        .filter(|(_, n)| *n == 1)
        .map(|(k, _)| *k)
        .collect();
    got_dsr.sort_unstable();
    if got_dsr != want_dsr || dsr.iter().any(|(_, n)| *n != 1) {
        problems.push(format!("DSR events {dsr:?}, the oracle {want_dsr:?}"));
    }
    if out != want.frame.as_slice() {
        let at = out
            .iter()
            .zip(&want.frame)
            .position(|(a, b)| a != b)
            .unwrap_or(out.len().min(want.frame.len()));
        let what = if matches!(want.fate, Fate::Untouched(_)) {
            "touched a frame it should pass as is"
        } else {
            "rewrote it otherwise"
        };
        problems.push(format!(
            "{what}: first difference at byte {at} of {} (out {} bytes, in {})",
            want.frame.len(),
            out.len(),
            frame.len()
        ));
    }
    problems
}

fn change_steering(h: &mut Harness, model: &mut Model, rng: &mut fastrand::Rng) {
    let active = if rng.bool() {
        Colour::Green
    } else {
        Colour::Blue
    };
    let steering = match rng.u8(..4) {
        0 => Steering::split(active, Weight::new(rng.u32(1..10_000)).expect("weight")),
        _ => Steering::plain(active),
    };
    h.dp.set_steering(steering).expect("steering");
    model.green_bp = u32::from(u16::from(steering.green));
    model.active = usize::from(active == Colour::Green);
}

/// Listen ports the services draw from.
const PORTS: [u16; 4] = [514, 601, 6514, 5514];

/// One to six services on random protocols, families, addresses and
/// ports, no two on the same listener; the config that declares them.
fn random_services(rng: &mut fastrand::Rng) -> (Vec<Service>, String) {
    let mut services: Vec<Service> = Vec::new();
    let mut config = String::new();
    for i in 0..rng.usize(1..=6) {
        let (tcp, v6, any) = (rng.bool(), rng.u8(..3) == 0, rng.bool());
        let port = PORTS[rng.usize(..PORTS.len())];
        let host = rng.u8(10..14);
        let addr: Option<IpAddr> = (!any).then(|| {
            if v6 {
                format!("2001:db8::{host:x}").parse().unwrap()
            } else {
                format!("198.18.0.{host}").parse().unwrap()
            }
        });
        if services
            .iter()
            .any(|s| (s.tcp, s.v6, s.addr, s.port) == (tcp, v6, addr, port))
        {
            continue;
        }
        // A colour with a specific listen address may be direct server
        // return (which keeps the port): dsr-l2 or dsr-ipip.
        let modes: [&str; 2] = [(); 2].map(|_| match (addr, rng.u8(..4)) {
            (Some(_), 0) => "dsr-l2",
            (Some(_), 1) => "dsr-ipip",
            _ => "nat",
        });
        let mut backend = |colour: u8| -> SocketAddr {
            let port = if modes[usize::from(colour - 1)] == "nat" {
                1000 + rng.u16(..60_000)
            } else {
                port
            };
            let ip: IpAddr = if v6 {
                format!("2001:db8:{colour}::{}", i + 2).parse().unwrap()
            } else {
                format!("198.18.{colour}.{}", i + 2).parse().unwrap()
            };
            SocketAddr::new(ip, port)
        };
        let backends = [backend(1), backend(2)];
        let mut more = format!(
            "mode_blue = \"{}\"\nmode_green = \"{}\"\n",
            modes[0], modes[1]
        );
        if modes.contains(&"dsr-ipip") {
            let source = if v6 { "2001:db8::1" } else { "198.18.0.1" };
            more.push_str(&format!("tunnel_source = \"{source}\"\n"));
        }
        // Plain TCP probes: 6514 would otherwise ask for a CA.
        if tcp {
            more.push_str("app = \"syslog\"\n");
        }
        let listen = match (addr, v6) {
            (Some(a), _) => SocketAddr::new(a, port).to_string(),
            (None, false) => format!("0.0.0.0:{port}"),
            (None, true) => format!("[::]:{port}"),
        };
        config.push_str(&crate::fixtures::service(
            &format!("fuzz-{i}"),
            if tcp { "tcp" } else { "udp" },
            listen,
            backends[0],
            backends[1],
            &more,
        ));
        services.push(Service {
            tcp,
            v6,
            addr,
            port,
            backends,
            dsr: modes.map(|m| m != "nat"),
        });
    }
    (services, config)
}

fn universe(services: &[Service], rng: &mut fastrand::Rng) -> Universe {
    let others_v4: Vec<IpAddr> = (1..=4)
        .map(|h| format!("198.18.3.{h}").parse().unwrap())
        .collect();
    let others_v6: Vec<IpAddr> = (1..=4)
        .map(|h| format!("2001:db8:3::{h}").parse().unwrap())
        .collect();
    let (mut targets, mut near) = (Vec::new(), Vec::new());
    for s in services {
        let addr = s.addr.unwrap_or_else(|| {
            let pool = if s.v6 { &others_v6 } else { &others_v4 };
            pool[rng.usize(..pool.len())]
        });
        targets.push((addr, s.port, s.tcp));
        near.push((addr, s.port, !s.tcp));
    }
    Universe {
        targets,
        near,
        clients_v4: (2..18)
            .map(|h| format!("198.18.0.{}", 100 + h).parse().unwrap())
            .collect(),
        clients_v6: (2..18)
            .map(|h| format!("2001:db8::1:{h:x}").parse().unwrap())
            .collect(),
        others_v4,
        others_v6,
    }
}
