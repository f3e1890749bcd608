//! How `bgctl` prints the agent's answers for people (`--json` prints them
//! as they are): flips, deployments, history and status.
use crate::model::{Colour, FleetStatus, StatusReport, now_unix_ms};

pub use super::deployment::format_deployment;
pub use super::flip_text::{flip_warning, format_flip};

/// A shift for people.
pub fn format_shift(r: &crate::model::ShiftReport) -> String {
    let mut out = if !r.changed {
        format!("already {}; nothing changed", r.to)
    } else if r.write_ns > 0 || r.fleet.is_none() {
        format!(
            "{} -> {} (map write took {:.1} µs); TCP connections keep their colour until they close",
            r.from,
            r.to,
            r.write_ns as f64 / 1000.0
        )
    } else {
        format!("{} -> {}", r.from, r.to)
    };
    if let Some(f) = &r.fleet {
        out.push_str(&format!(
            "; fleet generation {}: {}",
            f.generation,
            match f.converged_ms {
                Some(_) if f.nodes.is_empty() => "no live node was there to apply it".to_owned(),
                Some(ms) => format!("every node applied it within {ms} ms"),
                None => format!("NOT applied by {}", f.missing().join(", ")),
            }
        ));
    }
    out
}

/// One line per history entry, oldest first.
pub fn format_history(entries: &[crate::model::Entry]) -> String {
    use crate::model::Event;
    let mut o = String::new();
    for e in entries {
        let when = super::time::local(e.at_unix_ms);
        let line = match &e.event {
            Event::Flip {
                from,
                to,
                write_ns,
                forced,
                problems,
            } => format!(
                "flip {from} -> {to} ({:.1} µs){}",
                *write_ns as f64 / 1000.0,
                if *forced {
                    format!(", FORCED past: {}", problems.join("; "))
                } else {
                    String::new()
                }
            ),
            Event::Rollback {
                from,
                to,
                write_ns,
                reason,
                ..
            } => {
                format!(
                    "rollback {from} -> {to} ({:.1} µs{})",
                    *write_ns as f64 / 1000.0,
                    reason.map(|r| format!(", {r}")).unwrap_or_default()
                )
            }
            Event::Shift {
                from,
                to,
                write_ns,
                forced,
                problems,
                by,
            } => format!(
                "shift {from} -> {to} ({:.1} µs{}){}",
                *write_ns as f64 / 1000.0,
                if by.is_empty() {
                    String::new()
                } else {
                    format!(", by {by}")
                },
                if *forced {
                    format!(", FORCED past: {}", problems.join("; "))
                } else {
                    String::new()
                }
            ),
            Event::FlipRefused { to, problems } => {
                format!("flip to {to} refused: {}", problems.join("; "))
            }
            Event::Probe {
                service,
                colour,
                backend,
                state,
                error,
            } => format!(
                "{service} {colour} backend {backend} is now {state:?}{}",
                error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
            Event::AgentStarted { version, active } => {
                format!("agent v{version} started, {active} active")
            }
            Event::Reload {
                applied,
                by,
                detail,
            } => format!(
                "config reload ({by}) {}: {detail}",
                if *applied { "applied" } else { "REFUSED" }
            ),
            Event::ColourRestored { colour, reason } => {
                format!("{colour} restored as the active colour: {reason}")
            }
            Event::Deploy {
                id,
                colour,
                version,
                phase,
                reason,
            } => format!(
                "deployment {id} to {colour}{}: {phase:?}{}",
                version
                    .as_deref()
                    .map(|v| format!(" ({v})"))
                    .unwrap_or_default(),
                reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        };
        match e.actor {
            Some(by) => o.push_str(&format!("{when}  {line}  [by {by}]\n")),
            None => o.push_str(&format!("{when}  {line}\n")),
        }
    }
    if entries.is_empty() {
        o.push_str("no events yet\n");
    }
    o
}

fn health_tag(h: &crate::model::BackendHealth) -> String {
    use crate::model::BackendState;
    let latency = h
        .last_latency_us
        .map(|us| format!(" {:.1}ms", us as f64 / 1000.0))
        .unwrap_or_default();
    match h.state {
        BackendState::Up => format!("[up{latency}]"),
        BackendState::Down => format!("[DOWN{latency}]"),
        BackendState::Unknown => "[?]".to_owned(),
    }
}

fn human_rate(v: f64, unit: &str) -> String {
    if v >= 1e9 {
        format!("{:.2} G{unit}", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M{unit}", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k{unit}", v / 1e3)
    } else {
        format!("{v:.0} {unit}")
    }
}

fn mark(c: Colour, active: Colour) -> &'static str {
    if c == active { " *" } else { "" }
}

/// One line on the fleet for `bgctl status`: connected or stale, the
/// generation, the live nodes and any drift.
pub fn fleet_line(f: &FleetStatus) -> String {
    let drift: Vec<&str> = f
        .nodes
        .iter()
        .filter(|n| n.drift)
        .map(|n| n.state.node.as_str())
        .collect();
    format!(
        "fleet {} (node {}): {}, generation {} applied{}, {} live node(s){}",
        f.cluster,
        f.node,
        match (f.connected, f.stale) {
            (true, false) => "connected".to_owned(),
            (true, true) => "STALE (behind the desired state)".to_owned(),
            (false, _) =>
                "STALE (cut off etcd; steering stays on the colour applied last)".to_owned(),
        },
        f.applied_generation,
        match &f.desired {
            Some(d) if d.generation != f.applied_generation =>
                format!(" of {} desired", d.generation),
            _ => String::new(),
        },
        f.nodes.len(),
        if drift.is_empty() {
            String::new()
        } else {
            format!("; CONFIG DRIFT on {}", drift.join(", "))
        }
    )
}

pub fn format_status(s: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bluegreen on {} (ifindex {}, attached: {}), agent pid {} v{}, up {}s",
        s.iface, s.ifindex, s.xdp_mode, s.agent_pid, s.agent_version, s.uptime_s
    );
    if let Some(why) = &s.detached {
        let _ = writeln!(
            o,
            "DATA PATH DETACHED: {why}. Nothing steers; flips are refused. Restart the agent."
        );
    }
    let _ = write!(o, "active colour: {}", s.active.to_string().to_uppercase());
    if let Some(f) = &s.last_flip {
        let ago = now_unix_ms().saturating_sub(f.at_unix_ms) / 1000;
        let _ = write!(
            o,
            "   (last {}: {} -> {}, {} ago, {})",
            f.kind,
            f.from,
            f.to,
            super::time::duration(ago),
            super::time::local(f.at_unix_ms)
        );
    }
    if let Some(green) = s.split {
        let _ = write!(
            o,
            "\nsplit: new senders blue {} / green {} (by source address; `bgctl flip` or a shift to 100% ends it)",
            green.rest(),
            green
        );
    }
    if let Some(sh) = &s.shadow {
        let _ = write!(
            o,
            "\nshadow: {:.2} % of UDP senders copied to {} (a deployment's shadow phase)\n  how: {}",
            f64::from(sh.share_bp) / 100.0,
            sh.colour,
            sh.mechanism
        );
        for l in &sh.services {
            let _ = write!(
                o,
                "\n  {} -> {} from {}: {} copied, {} not copied, {} ICMP errors",
                l.service,
                l.target,
                l.source,
                l.counts.copied,
                l.counts.lost(),
                l.icmp_errors
            );
        }
    }
    o.push_str("\n\n");
    let _ = writeln!(
        o,
        "{:<20} {:<5} {:<24} {:<28} {:<28}",
        "SERVICE", "PROTO", "LISTEN", "BLUE", "GREEN"
    );
    for svc in &s.services {
        let b = format!(
            "{}{} {}",
            svc.blue,
            mark(Colour::Blue, s.active),
            health_tag(&svc.health.blue)
        );
        let g = format!(
            "{}{} {}",
            svc.green,
            mark(Colour::Green, s.active),
            health_tag(&svc.health.green)
        );
        let _ = writeln!(
            o,
            "{:<20} {:<5} {:<24} {:<28} {:<28}",
            svc.name,
            svc.protocol.to_string(),
            svc.listen.to_string(),
            b,
            g
        );
        let _ = writeln!(
            o,
            "{:<20} {:<5} {:<24} {:<28} {:<28}",
            "",
            "",
            "  packets / bytes",
            format!("{} / {}", svc.traffic.blue.packets, svc.traffic.blue.bytes),
            format!(
                "{} / {}",
                svc.traffic.green.packets, svc.traffic.green.bytes
            )
        );
        if let Some(note) = &svc.probe_note {
            let _ = writeln!(o, "{:<20}   note: {note}", "");
        }
    }
    let _ = writeln!(
        o,
        "\n{:<8} {:>14} {:>16} {:>12} {:>14}",
        "COLOUR", "PACKETS", "BYTES", "RATE", "BITRATE"
    );
    for c in Colour::ALL {
        let r = s.colours.get(c);
        let _ = writeln!(
            o,
            "{:<8} {:>14} {:>16} {:>12} {:>14}",
            format!("{c}{}", mark(c, s.active)),
            r.packets,
            r.bytes,
            human_rate(r.pps, "pps"),
            human_rate(r.bps, "bit/s")
        );
    }
    for c in Colour::ALL {
        let problems = s.health_problems.get(c);
        if !problems.is_empty() {
            let _ = writeln!(
                o,
                "\n{c} is NOT healthy (flips to it are refused without --force):"
            );
            for p in problems {
                let _ = writeln!(o, "  {p}");
            }
        }
    }
    let _ = writeln!(
        o,
        "\nTCP connections (live = open, active within {}s): blue {}, green {}   (tables: {} established, {} pending)",
        s.tcp.idle_timeout_s,
        s.tcp.live_connections.blue,
        s.tcp.live_connections.green,
        s.tcp.flow_table_size,
        s.tcp.pending_table_size
    );
    for svc in s
        .services
        .iter()
        .filter(|v| v.protocol == crate::model::Protocol::Tcp)
    {
        for c in Colour::ALL {
            let t = svc.traffic.get(c);
            let _ = writeln!(
                o,
                "  {:<20} {:<6} new {}  established segs {}  flow misses {}  closing {}",
                svc.name,
                c.to_string(),
                t.tcp_new,
                t.tcp_established,
                t.tcp_flow_miss,
                t.tcp_closing
            );
        }
    }
    let _ = writeln!(o, "\ndata path counters:");
    for (k, v) in &s.counters {
        match s.unavailable.get(k) {
            Some(why) => {
                let _ = writeln!(o, "  {k:<22} unavailable: {why}");
            }
            None => {
                let _ = writeln!(o, "  {k:<22} {v}");
            }
        }
    }
    o
}

/// `bgctl fleet status` for people.
pub fn format_fleet(f: &FleetStatus) -> String {
    let mut out = format!(
        "fleet {} (this node: {}): {}; applied generation {}, desired {}\n",
        f.cluster,
        f.node,
        if f.connected && !f.stale {
            "connected".to_owned()
        } else {
            format!(
                "STALE, steering on the colour applied last{}",
                f.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )
        },
        f.applied_generation,
        f.desired
            .as_ref()
            .map_or("none yet".to_owned(), |d| format!(
                "{} ({}, by {})",
                d.generation, d.colour, d.by
            )),
    );
    let now = now_unix_ms();
    for n in &f.nodes {
        let s = &n.state;
        let unhealthy: Vec<String> = Colour::ALL
            .iter()
            .filter(|c| !s.health_problems.get(**c).is_empty())
            .map(|c| format!("{c} unhealthy: {}", s.health_problems.get(*c).join(", ")))
            .collect();
        out.push_str(&format!(
            "  {:<20} generation {:<4} {:<6} {}{} (seen {:.1} s ago)\n",
            s.node,
            s.generation,
            s.colour.to_string(),
            if n.drift {
                format!("CONFIG DRIFT ({}) ", s.config_digest)
            } else {
                String::new()
            },
            if unhealthy.is_empty() {
                "healthy".to_owned()
            } else {
                unhealthy.join("; ")
            },
            now.saturating_sub(s.at_unix_ms) as f64 / 1000.0
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_drifted_nodes_and_staleness() {
        use crate::model::{NodeState, NodeView, PerColour};
        let node = |name: &str, drift: bool| NodeView {
            state: NodeState {
                node: name.into(),
                generation: 3,
                colour: Colour::Green,
                config_digest: "d".into(),
                health_problems: PerColour::default(),
                health_failures: PerColour::default(),
                failed_redirects: 0,
                packets: PerColour::default(),
                agent_version: "0".into(),
                at_unix_ms: 0,
            },
            drift,
        };
        let mut f = FleetStatus {
            cluster: "logs".into(),
            node: "a".into(),
            connected: true,
            applied_generation: 3,
            nodes: vec![node("a", false), node("b", true)],
            ..FleetStatus::default()
        };
        assert_eq!(
            fleet_line(&f),
            "fleet logs (node a): connected, generation 3 applied, 2 live node(s); CONFIG DRIFT on b"
        );
        f.connected = false;
        f.stale = true;
        f.nodes.truncate(1);
        assert_eq!(
            fleet_line(&f),
            "fleet logs (node a): STALE (cut off etcd; steering stays on the colour applied last), generation 3 applied, 1 live node(s)"
        );
    }

    #[test]
    fn rates_use_si_prefixes() {
        assert_eq!(human_rate(950.0, "pps"), "950 pps");
        assert_eq!(human_rate(12_500.0, "pps"), "12.5 kpps");
        assert_eq!(human_rate(3_250_000.0, "bit/s"), "3.25 Mbit/s");
    }
}
