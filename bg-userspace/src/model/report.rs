//! What the agent reports: a flip's outcome, the status of every service
//! and colour, and the data path's attach mode and traffic counts.
use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::model::{
    BackendHealth, Colour, FleetFlip, FlipRecord, Protocol, ShadowCounts, ShadowStatus, Steering,
    Weight,
};

/// What a flip or rollback did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlipReport {
    pub from: Colour,
    pub to: Colour,
    /// False when `to` was already active: nothing was written.
    pub changed: bool,
    /// How long the single map write took, in nanoseconds.
    pub write_ns: u64,
    /// Fleet mode: every node's part in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetFlip>,
    /// Set when the flip is live but its record (`state.json`) could not
    /// be written: why. An agent that starts afresh would not know of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unrecorded: Option<String>,
}

impl FlipReport {
    /// `to` was already active: nothing was written.
    pub fn unchanged(to: Colour) -> Self {
        Self {
            from: to,
            to,
            changed: false,
            write_ns: 0,
            fleet: None,
            unrecorded: None,
        }
    }
}

/// What a shift did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShiftReport {
    pub from: Steering,
    pub to: Steering,
    /// False when the split already was `to`: nothing was written.
    pub changed: bool,
    pub write_ns: u64,
    /// Fleet mode: every node's part in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetFlip>,
}

impl ShiftReport {
    /// The split already was `to`: nothing was written.
    pub fn unchanged(to: Steering) -> Self {
        Self {
            from: to,
            to,
            changed: false,
            write_ns: 0,
            fleet: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PerColour<T> {
    pub blue: T,
    pub green: T,
}

impl<T> PerColour<T> {
    pub fn get(&self, c: Colour) -> &T {
        match c {
            Colour::Blue => &self.blue,
            Colour::Green => &self.green,
        }
    }
    pub fn get_mut(&mut self, c: Colour) -> &mut T {
        match c {
            Colour::Blue => &mut self.blue,
            Colour::Green => &mut self.green,
        }
    }
}

/// Totals and rates of one colour across all services.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ColourRate {
    pub packets: u64,
    pub bytes: u64,
    /// Packets per second over the agent's last one-second sample.
    pub pps: f64,
    /// Bits per second over the same sample.
    pub bps: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceReport {
    pub name: String,
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub blue: SocketAddr,
    pub green: SocketAddr,
    pub traffic: PerColour<Traffic>,
    /// Probe state of each backend: state, last latency and error, history.
    pub health: PerColour<BackendHealth>,
    /// What this service's probe can and cannot tell, when that matters
    /// (a `udp` probe, whose only evidence is silence).
    #[serde(default)]
    pub probe_note: Option<String>,
    /// Shadow copies of this service since the maps were made, and the
    /// ICMP errors their targets answered since the agent started.
    #[serde(default)]
    pub shadow: ShadowCounts,
    #[serde(default)]
    pub shadow_icmp_errors: u64,
}

/// What a drop cost.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    /// A sender's message is gone.
    Lost,
    /// The packet went on through the kernel, or only a shadow copy was
    /// skipped.
    Harmless,
}

impl Impact {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Harmless => "harmless",
        }
    }
}

/// One reason frames or copies were not sent as meant, and how many.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DropCount {
    pub reason: String,
    pub impact: Impact,
    pub count: u64,
}

impl StatusReport {
    /// Every frame or shadow copy the data path meant to send and did not,
    /// by reason, each marked lost or harmless: the one classification the
    /// metrics and the dashboard both show. Reasons that cannot count on
    /// this host are left out.
    pub fn drops(&self) -> Vec<DropCount> {
        let value = |name: &str| self.counters.get(name).copied().unwrap_or(0);
        let mut out: Vec<DropCount> = bg_common::kernel_drop::NAMES
            .iter()
            .filter(|n| !self.unavailable.contains_key(**n))
            .map(|n| DropCount {
                reason: (*n).to_owned(),
                impact: Impact::Lost,
                count: value(n),
            })
            .collect();
        let passed = bg_common::counter::NAMES[bg_common::counter::REDIRECT_FAILED as usize];
        let udp = || self.services.iter().filter(|s| s.protocol == Protocol::Udp);
        let sum = |f: fn(&ShadowCounts) -> u64| udp().map(|s| f(&s.shadow)).sum::<u64>();
        for (reason, count) in [
            (passed, value(passed)),
            ("shadow_clone_refused", sum(|c| c.copy_failed)),
            ("shadow_no_route", sum(|c| c.no_route)),
            ("shadow_no_metadata", sum(|c| c.no_metadata)),
            ("shadow_over_budget", sum(|c| c.over_budget)),
        ] {
            out.push(DropCount {
                reason: reason.to_owned(),
                impact: Impact::Harmless,
                count,
            });
        }
        out
    }

    /// The active colour and the split together.
    pub fn steering(&self) -> Steering {
        match self.split {
            Some(green) => Steering::split(self.active, green),
            None => Steering::plain(self.active),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: AttachMode,
    pub agent_pid: u32,
    pub agent_version: String,
    pub uptime_s: u64,
    pub active: Colour,
    /// Green's share of new senders while they are split (`bgctl shift`);
    /// None while every sender goes to `active`.
    #[serde(default)]
    pub split: Option<Weight>,
    /// The key of the split's hash: with `bg_common::split::colour` it
    /// tells which colour a sender takes under a split.
    #[serde(default)]
    pub split_seed: u32,
    pub last_flip: Option<FlipRecord>,
    pub services: Vec<ServiceReport>,
    pub colours: PerColour<ColourRate>,
    /// Per colour: why it is not healthy (empty when every backend is up).
    pub health_problems: PerColour<Vec<String>>,
    /// Data-path counters: passes by reason, TX, redirects, failed redirects.
    pub counters: BTreeMap<String, u64>,
    /// Counters that cannot count on this host, and why: their value in
    /// `counters` means nothing.
    #[serde(default)]
    pub unavailable: BTreeMap<String, String>,
    /// Why the data path is no longer attached (its pins were removed, or
    /// its interface went away); None while it steers.
    #[serde(default)]
    pub detached: Option<String>,
    pub tcp: TcpStatus,
    /// The shadow running now (a deployment's shadow phase), if any.
    #[serde(default)]
    pub shadow: Option<ShadowStatus>,
}

/// TCP connections the flow table holds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TcpStatus {
    /// Open flows per colour whose client sent a segment within the idle timeout.
    pub live_connections: PerColour<u64>,
    pub idle_timeout_s: u64,
    pub flow_table_size: u32,
    /// Entries of the table of handshakes in progress and flows on probation.
    #[serde(default)]
    pub pending_table_size: u32,
}

/// How the steering program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// Native (driver) XDP.
    Driver,
    /// Generic (skb) XDP, the fallback for drivers without XDP support.
    Generic,
    /// Adopted a pinned XDP link left by an earlier agent; the program was
    /// swapped in place.
    Adopted,
    /// TC ingress (tcx).
    Tc,
    /// Adopted a pinned TC ingress link; the program was swapped in place.
    AdoptedTc,
}

impl AttachMode {
    pub const fn is_tc(self) -> bool {
        matches!(self, Self::Tc | Self::AdoptedTc)
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Generic => "generic",
            Self::Adopted => "adopted",
            Self::Tc => "tc",
            Self::AdoptedTc => "adopted-tc",
        })
    }
}

/// Counters of one colour of one service, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    /// TCP: connections opened (SYN) on this colour.
    #[serde(default)]
    pub tcp_new: u64,
    /// TCP: segments of established connections kept on this colour.
    #[serde(default)]
    pub tcp_established: u64,
    /// TCP: mid-stream segments without a flow entry, sent to the active colour.
    #[serde(default)]
    pub tcp_flow_miss: u64,
    /// TCP: connections seen closing (FIN or RST).
    #[serde(default)]
    pub tcp_closing: u64,
}

/// Per-colour rates at one second, for the dashboard's chart.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample {
    pub at_unix_ms: u64,
    pub pps: PerColour<f64>,
    pub bps: PerColour<f64>,
}
