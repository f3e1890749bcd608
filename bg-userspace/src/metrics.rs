//! Prometheus metrics (prometheus-client, OpenMetrics text).
//!
//! Counters the agent itself keeps (flips, rollbacks, probe durations) live
//! here for its lifetime. Everything the data path counts is read from the
//! maps at scrape time and summed over CPUs: a scrape costs a few map
//! lookups per service and never touches packets.
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::{
    model::{BackendState, FleetStatus, PerColour, Phase, StatusReport},
    model::{Colour, RollbackReason},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub service: String,
    pub colour: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ColourLabel {
    colour: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabel {
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceReasonLabel {
    service: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

type ProbeHistograms = Family<BackendLabels, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 100 µs to about 3.3 s: loopback probes to timeouts.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The agent's own counters, kept across scrapes.
pub struct Metrics {
    pub flips: Counter,
    pub shifts: Counter,
    rollbacks: Family<ReasonLabel, Counter>,
    probe_duration: ProbeHistograms,
}

impl Default for Metrics {
    fn default() -> Self {
        let rollbacks = Family::<ReasonLabel, Counter>::default();
        // Every reason from the start, so a rate() over them is defined.
        for r in RollbackReason::ALL {
            drop(rollbacks.get_or_create(&ReasonLabel {
                reason: r.as_str().to_owned(),
            }));
        }
        Self {
            flips: Counter::default(),
            shifts: Counter::default(),
            rollbacks,
            probe_duration: Family::new_with_constructor(probe_histogram),
        }
    }
}

impl Metrics {
    pub(crate) fn rollback(&self, reason: RollbackReason) {
        self.rollbacks
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    pub fn observe_probe(&self, service: &str, colour: Colour, seconds: f64) {
        self.probe_duration
            .get_or_create(&BackendLabels {
                service: service.to_owned(),
                colour: colour.to_string(),
            })
            .observe(seconds);
    }

    /// The text exposition of everything, from a status snapshot (taken
    /// without walking the flow table) and the current deployment phase.
    pub fn render(
        &self,
        status: &StatusReport,
        phase: Option<Phase>,
        fleet: Option<&FleetStatus>,
    ) -> String {
        let mut registry = Registry::with_prefix("bluegreen");
        let packets = Family::<BackendLabels, Counter>::default();
        let bytes = Family::<BackendLabels, Counter>::default();
        let up = Family::<BackendLabels, Gauge>::default();
        let mut flow_misses = 0;
        for svc in &status.services {
            for c in Colour::ALL {
                let labels = BackendLabels {
                    service: svc.name.clone(),
                    colour: c.to_string(),
                };
                let t = svc.traffic.get(c);
                packets.get_or_create(&labels).inc_by(t.packets);
                bytes.get_or_create(&labels).inc_by(t.bytes);
                flow_misses += t.tcp_flow_miss;
                let is_up = svc.health.get(c).state == BackendState::Up;
                up.get_or_create(&labels).set(i64::from(is_up));
            }
        }
        registry.register(
            "packets",
            "Packets steered to a colour, per service",
            packets,
        );
        registry.register(
            "bytes",
            "Bytes (from the Ethernet header) steered to a colour, per service",
            bytes,
        );
        let active = Family::<ColourLabel, Gauge>::default();
        for c in Colour::ALL {
            active
                .get_or_create(&ColourLabel {
                    colour: c.to_string(),
                })
                .set(i64::from(status.active == c));
        }
        registry.register(
            "active_colour",
            "1 for the colour new traffic goes to, 0 for the other",
            active,
        );
        registry.register(
            "flips",
            "Operator flips since the agent started",
            self.flips.clone(),
        );
        let weight = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        weight.set(f64::from(status.steering().green.bp()) / 10_000.0);
        registry.register(
            "green_weight",
            "Green's share of new senders, 0 to 1: 0 while blue takes all, 1 while green does, between while split (bgctl shift)",
            weight,
        );
        registry.register(
            "shifts",
            "Changes of the split between the colours since the agent started (bgctl shift, deployment steps)",
            self.shifts.clone(),
        );
        let attached = Gauge::<i64>::default();
        attached.set(i64::from(status.detached.is_none()));
        registry.register(
            "data_path_attached",
            "1 while the steering link is attached; 0 once its pins were removed or its interface went away (bgctl status says why)",
            attached,
        );
        registry.register(
            "rollbacks",
            "Rollbacks since the agent started, by reason",
            self.rollbacks.clone(),
        );
        registry.register(
            "backend_up",
            "1 when the backend's health probe says up",
            up,
        );
        registry.register_with_unit(
            "probe_duration",
            "Health probe duration, successful or not",
            Unit::Seconds,
            self.probe_duration.clone(),
        );
        let tcp = Family::<ColourLabel, Gauge>::default();
        let live: PerColour<u64> = status.tcp.live_connections;
        for c in Colour::ALL {
            tcp.get_or_create(&ColourLabel {
                colour: c.to_string(),
            })
            .set(*live.get(c) as i64);
        }
        registry.register(
            "tcp_connections",
            "Live TCP connections per colour (a flow-table walk, reused for 2 s)",
            tcp,
        );
        // By bg_common's index constants: a renamed counter is a compile
        // error here, not a silent 0.
        let steering = |i: u32| bg_common::counter::NAMES[i as usize];
        let kernel = |i: u32| bg_common::kernel_drop::NAMES[i as usize];
        let data_path = |name: &str| status.counters.get(name).copied().unwrap_or(0);
        // A counter that cannot count is no sample at all, not a 0.
        let available = |name: &str| !status.unavailable.contains_key(name);
        for (name, help, value) in [
            (
                "flow_misses",
                "TCP segments with no flow entry, sent to the active colour",
                flow_misses,
            ),
            (
                "malformed_packets",
                "Truncated or malformed packets, passed untouched",
                data_path(steering(bg_common::counter::PASS_MALFORMED)),
            ),
        ] {
            let total = Counter::<u64>::default();
            total.inc_by(value);
            registry.register(name, help, total);
        }
        // Harmless: not in the devmap, so the kernel forwarded the packet.
        // Lost: refused by the kernel after XDP.
        let redirect_errors = Family::<OutcomeLabel, Counter>::default();
        redirect_errors
            .get_or_create(&OutcomeLabel {
                outcome: "passed".into(),
            })
            .inc_by(data_path(steering(bg_common::counter::REDIRECT_FAILED)));
        if available(kernel(bg_common::kernel_drop::REDIRECT_ERR)) {
            redirect_errors
                .get_or_create(&OutcomeLabel {
                    outcome: "lost".into(),
                })
                .inc_by(data_path(kernel(bg_common::kernel_drop::REDIRECT_ERR)));
        }
        registry.register(
            "redirect_errors",
            "Steered packets whose redirect failed, by outcome: passed (not in the devmap: the kernel forwarded them, nothing lost) or lost (refused by the kernel after XDP)",
            redirect_errors,
        );
        // Every counter of the data path, each by its own name: the pass
        // reasons, the delivery paths, the drops and the TCP table events.
        let each = Family::<CounterLabel, Counter>::default();
        for (name, value) in &status.counters {
            if available(name) {
                each.get_or_create(&CounterLabel {
                    counter: name.clone(),
                })
                .inc_by(*value);
            }
        }
        registry.register(
            "data_path_packets",
            "Packets by what the data path did with them (the counters of `bgctl status`: pass_* reasons, tx, redirect, drops, tcp_* table events)",
            each,
        );
        let transmit = Family::<PathLabel, Counter>::default();
        for (path, name) in [
            ("redirect", kernel(bg_common::kernel_drop::XMIT_DROPS)),
            ("tx", kernel(bg_common::kernel_drop::TX_DROPS)),
        ] {
            if available(name) {
                transmit
                    .get_or_create(&PathLabel { path: path.into() })
                    .inc_by(data_path(name));
            }
        }
        let counting = Family::<CounterLabel, Gauge>::default();
        for name in status.counters.keys() {
            counting
                .get_or_create(&CounterLabel {
                    counter: name.clone(),
                })
                .set(i64::from(available(name)));
        }
        registry.register(
            "counter_available",
            "1 when a data-path counter counts on this host, 0 when it cannot (`bgctl status` says why); its samples are then left out",
            counting,
        );
        registry.register(
            "transmit_drops",
            "Steered frames the egress device did not take after XDP (ring full, or a veth peer without NAPI): lost",
            transmit,
        );
        let phases = Family::<PhaseLabel, Gauge>::default();
        for p in Phase::ALL {
            phases
                .get_or_create(&PhaseLabel {
                    phase: p.as_str().to_owned(),
                })
                .set(i64::from(phase == Some(p)));
        }
        registry.register(
            "deployment_phase",
            "1 for the phase the current or last deployment is in",
            phases,
        );
        Self::shadow(&mut registry, status);
        if let Some(f) = fleet {
            Self::fleet(&mut registry, f);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }

    /// Shadow copies: the share copied now, and per service the copies
    /// sent, those that could not be, and the targets' ICMP errors.
    fn shadow(registry: &mut Registry, status: &StatusReport) {
        let share = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        share.set(
            status
                .shadow
                .as_ref()
                .map_or(0.0, |s| f64::from(s.share_bp) / 10_000.0),
        );
        registry.register(
            "shadow_share",
            "The share of senders whose UDP is copied to the idle colour now, 0 to 1 (a deployment's shadow phase); 0 when no shadow runs",
            share,
        );
        let copies = Family::<ServiceLabel, Counter>::default();
        let failures = Family::<ServiceReasonLabel, Counter>::default();
        let icmp = Family::<ServiceLabel, Counter>::default();
        for svc in status
            .services
            .iter()
            .filter(|s| s.protocol == crate::model::Protocol::Udp)
        {
            let service = || ServiceLabel {
                service: svc.name.clone(),
            };
            copies.get_or_create(&service()).inc_by(svc.shadow.copied);
            icmp.get_or_create(&service())
                .inc_by(svc.shadow_icmp_errors);
            for (reason, n) in [
                ("clone_refused", svc.shadow.copy_failed),
                ("no_route", svc.shadow.no_route),
                ("no_metadata", svc.shadow.no_metadata),
                ("over_budget", svc.shadow.over_budget),
            ] {
                failures
                    .get_or_create(&ServiceReasonLabel {
                        service: svc.name.clone(),
                        reason: reason.into(),
                    })
                    .inc_by(n);
            }
        }
        registry.register(
            "shadow_copies",
            "Shadow copies of live UDP sent to the idle colour, per service",
            copies,
        );
        registry.register(
            "shadow_copy_failures",
            "Sampled datagrams that got no shadow copy, by reason (their originals went on untouched): clone_refused, no_route (no route or neighbour towards the target), no_metadata (the driver had no room to hand the datagram over), over_budget (past shadow_max_pps)",
            failures,
        );
        registry.register(
            "shadow_icmp_errors",
            "ICMP errors shadow targets answered copies with, collected by the agent (never passed to the real sender), per service",
            icmp,
        );
    }

    /// Fleet mode: whether this node is connected or stale, the generations,
    /// the live nodes and those whose config drifted.
    fn fleet(registry: &mut Registry, f: &FleetStatus) {
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
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
            registry.register(name, help, gauge(value));
        }
    }
}
