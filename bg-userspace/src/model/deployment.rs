//! A deployment: its phases, its gate's verdicts, and the record the
//! controller keeps of it.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Colour, PerColour, Protocol, ShadowResult, Weight};

/// In order: a later phase never runs before an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Prepare,
    WaitHealthy,
    /// Live UDP copied to the new colour while the old one serves it all
    /// (`[deploy] shadow_s`).
    Shadow,
    Validate,
    /// A progressive deployment's steps: green takes a growing share of
    /// senders, watched at each step (`--steps`).
    Shift,
    Switch,
    Bake,
    /// Switched and baked; the old colour is kept warm for a while.
    Complete,
    /// Finished: the old colour is idle.
    Done,
    /// Failed during bake (or aborted after the switch): flipped back.
    RolledBack,
    /// Stopped before any traffic moved.
    Failed,
    /// Stopped by `bgctl abort` before the switch.
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 12] = [
        Phase::Prepare,
        Phase::WaitHealthy,
        Phase::Shadow,
        Phase::Validate,
        Phase::Shift,
        Phase::Switch,
        Phase::Bake,
        Phase::Complete,
        Phase::Done,
        Phase::RolledBack,
        Phase::Failed,
        Phase::Aborted,
    ];

    /// The name used on the wire, in the history and in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::WaitHealthy => "wait-healthy",
            Phase::Shadow => "shadow",
            Phase::Validate => "validate",
            Phase::Shift => "shift",
            Phase::Switch => "switch",
            Phase::Bake => "bake",
            Phase::Complete => "complete",
            Phase::Done => "done",
            Phase::RolledBack => "rolled-back",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }

    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Done | Self::RolledBack | Self::Failed | Self::Aborted
        )
    }
}

/// The performance gate's verdict for one service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub service: String,
    pub backend: SocketAddr,
    pub protocol: Protocol,
    pub sent: u64,
    /// TCP: messages the backend's TCP acknowledged. UDP has no receipt:
    /// None.
    pub delivered: Option<u64>,
    /// UDP: datagrams refused by an ICMP port-unreachable. None for TCP.
    #[serde(default)]
    pub refused: Option<u64>,
    /// The share of `sent` acknowledged (TCP) or not refused (UDP).
    #[serde(alias = "delivered_ratio")]
    pub ratio: f64,
    /// TCP: 99th percentile from write to acknowledgement, in ms.
    pub p99_ms: Option<f64>,
    /// Acknowledged (TCP) or not refused (UDP) messages per second.
    pub throughput: f64,
    pub passed: bool,
    /// Which threshold failed, if any.
    pub detail: String,
    /// What the gate could and could not know about this backend.
    #[serde(default)]
    pub evidence: String,
}

/// What a UDP gate (and a UDP probe) can know, said wherever it passes.
pub const UDP_EVIDENCE: &str = "not refused (no ICMP port-unreachable), and the data path reaches the host; UDP has no receipt, so it cannot confirm that the collector received or stored anything. An http or exec probe can";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub colour: Colour,
    pub from: Colour,
    pub version: Option<String>,
    pub phase: Phase,
    pub started_unix_ms: u64,
    pub phase_started_unix_ms: u64,
    /// Why it failed, rolled back or was aborted.
    pub reason: Option<String>,
    pub gate: Vec<GateResult>,
    /// Backends this deployment puts in place (service name, address).
    #[serde(default)]
    pub backends: Vec<(String, SocketAddr)>,
    /// Started with `--force`: past the UDP evidence check and, in fleet
    /// mode, config drift (never past health).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// Fleet mode: the node whose agent runs it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// A progressive deployment's steps; None: all senders at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive: Option<Progressive>,
    /// The shadow phase's verdicts (live while it runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<ShadowResult>,
}

/// How long each step of a progressive deployment is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pause {
    /// This many seconds, then the next step by itself.
    Seconds(u64),
    /// Until `bgctl promote` (or `bgctl abort`).
    Indefinite,
}

impl std::fmt::Display for Pause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pause::Seconds(s) => write!(f, "{s}s"),
            Pause::Indefinite => f.write_str("indefinite"),
        }
    }
}

/// `--steps` and `--pause`: green's share of senders grows step by step
/// before the switch, each step watched before the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progressive {
    /// Green's weight at each step, rising, each under 100 %; the switch
    /// to all senders follows the last.
    pub steps: Vec<Weight>,
    pub pause: Pause,
    /// The step in force (an index into `steps`), once one was taken.
    #[serde(default)]
    pub step: Option<usize>,
    /// What each step saw, in order.
    #[serde(default)]
    pub looks: Vec<StepLook>,
}

/// What one step of a progressive deployment saw of real traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLook {
    pub weight: Weight,
    /// Packets steered to each colour during the step.
    pub packets: PerColour<u64>,
    /// How long it was watched, in seconds.
    pub watched_s: u64,
    /// Ended by `bgctl promote` before its pause was over.
    #[serde(default)]
    pub promoted: bool,
}

impl Deployment {
    /// A deployment onto `colour`, started at `now` (Unix ms).
    pub fn new(colour: Colour, version: Option<String>, now: u64) -> Self {
        Self {
            id: format!("d{now}"),
            colour,
            from: colour.other(),
            version,
            phase: Phase::Prepare,
            started_unix_ms: now,
            phase_started_unix_ms: now,
            reason: None,
            gate: Vec::new(),
            backends: Vec::new(),
            forced: false,
            controller: None,
            progressive: None,
            shadow: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_match_the_wire_format() {
        for p in Phase::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }
}
