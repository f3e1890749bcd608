//! Everything the data path and the agent's state say, written from one
//! status snapshot per scrape (taken without walking the flow table): the
//! per-colour traffic and health, the data path's counters by reason, the
//! drops split into lost and harmless, the shadow and the fleet.
use std::{
    fmt,
    sync::{Arc, Mutex},
};

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::emit::{counter, counters, gauge, gauges};
use crate::model::{BackendState, Colour, FleetStatus, Phase, Protocol, StatusReport};

/// What one scrape reports.
#[derive(Debug)]
pub struct Scrape {
    pub status: StatusReport,
    /// The current or last deployment's phase.
    pub phase: Option<Phase>,
    pub fleet: Option<FleetStatus>,
}

/// The snapshot of the scrape in progress, which the collector writes out.
#[derive(Clone, Debug, Default)]
pub(super) struct Slot(pub(super) Arc<Mutex<Option<Scrape>>>);

#[derive(Debug)]
pub(super) struct StatusCollector(pub(super) Slot);

impl Collector for StatusCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let slot = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(scrape) = slot.as_ref() else {
            return Ok(());
        };
        traffic(&mut enc, &scrape.status)?;
        data_path(&mut enc, &scrape.status)?;
        drops(&mut enc, &scrape.status)?;
        phases(&mut enc, scrape.phase)?;
        shadow(&mut enc, &scrape.status)?;
        if let Some(f) = &scrape.fleet {
            fleet(&mut enc, f)?;
        }
        Ok(())
    }
}

/// Per service and colour: packets, bytes, health; the colour and split.
fn traffic(enc: &mut DescriptorEncoder, status: &StatusReport) -> fmt::Result {
    let per_backend = |f: &dyn Fn(&crate::model::ServiceReport, Colour) -> u64| {
        status
            .services
            .iter()
            .flat_map(move |s| Colour::ALL.map(|c| (s, c)))
            .map(move |(s, c)| {
                (
                    [("service", s.name.as_str()), ("colour", c.as_str())],
                    f(s, c),
                )
            })
            .collect::<Vec<_>>()
    };
    counters(
        enc,
        "packets",
        "Packets steered to a colour, per service",
        per_backend(&|s, c| s.traffic.get(c).packets),
    )?;
    counters(
        enc,
        "bytes",
        "Bytes (from the Ethernet header) steered to a colour, per service",
        per_backend(&|s, c| s.traffic.get(c).bytes),
    )?;
    let up = per_backend(&|s, c| u64::from(s.health.get(c).state == BackendState::Up));
    gauges(
        enc,
        "backend_up",
        "1 when the backend's health probe says up",
        up.into_iter().map(|(l, v)| (l, v as i64)),
    )?;
    gauges(
        enc,
        "active_colour",
        "1 for the colour new traffic goes to, 0 for the other",
        Colour::ALL.map(|c| ([("colour", c.as_str())], i64::from(status.active == c))),
    )?;
    gauge(
        enc,
        "green_weight",
        "Green's share of new senders, 0 to 1: 0 while blue takes all, 1 while green does, between while split (bgctl shift)",
        f64::from(status.steering().green.bp()) / 10_000.0,
    )?;
    gauge(
        enc,
        "data_path_attached",
        "1 while the steering link is attached; 0 once its pins were removed or its interface went away (bgctl status says why)",
        i64::from(status.detached.is_none()),
    )?;
    let live = status.tcp.live_connections;
    gauges(
        enc,
        "tcp_connections",
        "Live TCP connections per colour (a flow-table walk, reused for 2 s)",
        Colour::ALL.map(|c| ([("colour", c.as_str())], *live.get(c) as i64)),
    )
}

/// The data path's own counters: each by name, and the two operators ask
/// for most on their own.
fn data_path(enc: &mut DescriptorEncoder, status: &StatusReport) -> fmt::Result {
    let available = |name: &str| !status.unavailable.contains_key(name);
    let value = |name: &str| status.counters.get(name).copied().unwrap_or(0);
    let flow_misses: u64 = status
        .services
        .iter()
        .flat_map(|s| Colour::ALL.map(|c| s.traffic.get(c).tcp_flow_miss))
        .sum();
    counter(
        enc,
        "flow_misses",
        "TCP segments with no flow entry, sent to the active colour",
        flow_misses,
    )?;
    counter(
        enc,
        "malformed_packets",
        "Truncated or malformed packets, passed untouched",
        value(steering(bg_common::counter::PASS_MALFORMED)),
    )?;
    // A counter that cannot count is no sample at all, not a 0.
    counters(
        enc,
        "data_path_packets",
        "Packets by what the data path did with them (the counters of `bgctl status`: pass_* reasons, tx, redirect, drops, tcp_* table events, dsr_* direct server return)",
        status
            .counters
            .iter()
            .filter(|(n, _)| available(n))
            .map(|(n, v)| ([("counter", n.as_str())], *v)),
    )?;
    gauges(
        enc,
        "counter_available",
        "1 when a data-path counter counts on this host, 0 when it cannot (`bgctl status` says why); its samples are then left out",
        status
            .counters
            .keys()
            .map(|n| ([("counter", n.as_str())], i64::from(available(n)))),
    )?;
    // Harmless: not in the devmap, so the kernel forwarded the packet.
    // Lost: refused by the kernel after XDP.
    let refused = kernel(bg_common::kernel_drop::REDIRECT_ERR);
    let mut redirect = vec![(
        [("outcome", "passed")],
        value(steering(bg_common::counter::REDIRECT_FAILED)),
    )];
    if available(refused) {
        redirect.push(([("outcome", "lost")], value(refused)));
    }
    counters(
        enc,
        "redirect_errors",
        "Steered packets whose redirect failed, by outcome: passed (not in the devmap: the kernel forwarded them, nothing lost) or lost (refused by the kernel after XDP)",
        redirect,
    )?;
    counters(
        enc,
        "transmit_drops",
        "Steered frames the egress device did not take after XDP (ring full, or a veth peer without NAPI): lost",
        [
            ("redirect", kernel(bg_common::kernel_drop::XMIT_DROPS)),
            ("tx", kernel(bg_common::kernel_drop::TX_DROPS)),
        ]
        .into_iter()
        .filter(|(_, n)| available(n))
        .map(|(path, n)| ([("path", path)], value(n))),
    )
}

/// Every frame or copy the data path meant to send and did not, by
/// reason and what it cost (`StatusReport::drops`).
fn drops(enc: &mut DescriptorEncoder, status: &StatusReport) -> fmt::Result {
    let drops = status.drops();
    counters(
        enc,
        "drops",
        "Frames or shadow copies the data path meant to send and did not, by reason; impact=lost: a sender's message was lost (alert on it), impact=harmless: the packet went on through the kernel, or only a shadow copy was skipped",
        drops.iter().map(|d| {
            (
                [("reason", d.reason.as_str()), ("impact", d.impact.as_str())],
                d.count,
            )
        }),
    )
}

fn phases(enc: &mut DescriptorEncoder, phase: Option<Phase>) -> fmt::Result {
    gauges(
        enc,
        "deployment_phase",
        "1 for the phase the current or last deployment is in",
        Phase::ALL.map(|p| ([("phase", p.as_str())], i64::from(phase == Some(p)))),
    )
}

/// Shadow copies: the share copied now, and per service the copies sent,
/// those that could not be, and the targets' ICMP errors.
fn shadow(enc: &mut DescriptorEncoder, status: &StatusReport) -> fmt::Result {
    gauge(
        enc,
        "shadow_share",
        "The share of senders whose UDP is copied to the idle colour now, 0 to 1 (a deployment's shadow phase); 0 when no shadow runs",
        status
            .shadow
            .as_ref()
            .map_or(0.0, |s| f64::from(s.share_bp) / 10_000.0),
    )?;
    let udp = || {
        status
            .services
            .iter()
            .filter(|s| s.protocol == Protocol::Udp)
    };
    counters(
        enc,
        "shadow_copies",
        "Shadow copies of live UDP sent to the idle colour, per service",
        udp().map(|s| ([("service", s.name.as_str())], s.shadow.copied)),
    )?;
    counters(
        enc,
        "shadow_copy_failures",
        "Sampled datagrams that got no shadow copy, by reason (their originals went on untouched): clone_refused, no_route (no route or neighbour towards the target), no_metadata (the driver had no room to hand the datagram over), over_budget (past shadow_max_pps)",
        udp().flat_map(|s| {
            [
                ("clone_refused", s.shadow.copy_failed),
                ("no_route", s.shadow.no_route),
                ("no_metadata", s.shadow.no_metadata),
                ("over_budget", s.shadow.over_budget),
            ]
            .map(|(reason, n)| ([("service", s.name.as_str()), ("reason", reason)], n))
        }),
    )?;
    counters(
        enc,
        "shadow_icmp_errors",
        "ICMP errors shadow targets answered copies with, collected by the agent (never passed to the real sender), per service",
        udp().map(|s| ([("service", s.name.as_str())], s.shadow_icmp_errors)),
    )
}

/// Fleet mode: whether this node is connected or stale, the generations,
/// the live nodes and those whose config drifted.
fn fleet(enc: &mut DescriptorEncoder, f: &FleetStatus) -> fmt::Result {
    let drifted = f.nodes.iter().filter(|n| n.drift).count() as i64;
    for (name, help, value) in [
        (
            "fleet_connected",
            "1 while this agent talks to the fleet's etcd",
            i64::from(f.connected),
        ),
        (
            "fleet_stale",
            "1 while this node may not have the fleet's latest state (it steers on the colour it applied last)",
            i64::from(f.stale),
        ),
        (
            "fleet_applied_generation",
            "The fleet generation this node applied last",
            f.applied_generation as i64,
        ),
        (
            "fleet_desired_generation",
            "The fleet's desired generation as this node last read it",
            f.desired.as_ref().map_or(0, |d| d.generation as i64),
        ),
        (
            "fleet_nodes",
            "Live nodes of the fleet (their lease held)",
            f.nodes.len() as i64,
        ),
        (
            "fleet_drifted_nodes",
            "Live nodes whose config differs from this node's; flips are refused unless forced",
            drifted,
        ),
    ] {
        gauge(enc, name, help, value)?;
    }
    Ok(())
}

/// By bg_common's index constants: a renamed counter is a compile error
/// here, not a silent 0.
fn steering(i: u32) -> &'static str {
    bg_common::counter::NAMES[i as usize]
}

fn kernel(i: u32) -> &'static str {
    bg_common::kernel_drop::NAMES[i as usize]
}
