//! Fleet mode's records, as they sit in etcd and in answers: the desired
//! state every node applies, what each node publishes of itself, and what a
//! fleet flip and `bgctl fleet status` report.
use serde::{Deserialize, Serialize};

use crate::model::{Colour, FlipRecordKind, PerColour, Steering, Weight};

/// `/bluegreen/<cluster>/desired`: what every node must steer to. Only a
/// compare-and-swap on its revision changes it, so two flips cannot both
/// win.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Raised by one on every change; a node never applies a lower one.
    pub generation: u64,
    pub colour: Colour,
    pub kind: FlipRecordKind,
    /// The node whose agent wrote it, and when (Unix ms).
    pub by: String,
    pub at_unix_ms: u64,
    /// The flip went through although a node saw the colour unhealthy, or
    /// a node's config differed.
    #[serde(default)]
    pub forced: bool,
    /// Backends deployments put in place of the config's, on every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendOverride>,
    /// Green's share of new senders while split (`bgctl shift`), starting
    /// from `colour`; None: every sender on `colour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<Weight>,
    /// The key of the split's hash, the same on every node so that every
    /// node puts a sender on the same side. Set by the first shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
}

impl DesiredState {
    /// The steering every node must apply.
    pub fn steering(&self) -> Steering {
        match self.green {
            Some(green) => Steering::split(self.colour, green),
            None => Steering::plain(self.colour),
        }
    }
}

/// A backend a deployment put in place of the config file's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendOverride {
    pub service: String,
    pub colour: Colour,
    pub backend: std::net::SocketAddr,
}

/// `/bluegreen/<cluster>/nodes/<node>`, on the node's own lease: gone soon
/// after its agent is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub node: String,
    /// The desired state's generation this node applied last (0: none).
    pub generation: u64,
    /// The colour its data path steers to.
    pub colour: Colour,
    /// Its config's digest (`Config::digest`).
    pub config_digest: String,
    /// Per colour: why this node sees it unhealthy (empty when healthy).
    pub health_problems: PerColour<Vec<String>>,
    /// Per colour: its backends this node's probes found down (a subset of
    /// `health_problems`: not yet probed is no failure). A fleet bake
    /// rolls back on these.
    #[serde(default)]
    pub health_failures: PerColour<Vec<String>>,
    /// Redirects that failed on this node so far.
    #[serde(default)]
    pub failed_redirects: u64,
    /// Packets steered per colour since its maps were made.
    pub packets: PerColour<u64>,
    pub agent_version: String,
    pub at_unix_ms: u64,
}

/// One node's part in a fleet flip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeConvergence {
    pub node: String,
    /// From the etcd write to the node publishing the new generation; None
    /// when it did not within the deadline.
    pub after_ms: Option<u64>,
}

/// What a fleet flip did across the fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetFlip {
    pub generation: u64,
    /// Every node alive at the write, in name order.
    pub nodes: Vec<NodeConvergence>,
    /// From the write to the last node's apply; None when one did not.
    pub converged_ms: Option<u64>,
}

impl FleetFlip {
    /// The nodes that did not apply it in time.
    pub fn missing(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.after_ms.is_none())
            .map(|n| n.node.as_str())
            .collect()
    }
}

/// `bgctl fleet status`: this agent's view of the fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    pub cluster: String,
    pub node: String,
    /// Whether this agent talks to etcd now.
    pub connected: bool,
    /// True while it cannot be sure it has the fleet's latest state: it
    /// keeps steering on the last colour it applied.
    pub stale: bool,
    /// Why it is not connected, when it is not.
    pub error: Option<String>,
    pub desired: Option<DesiredState>,
    /// The generation this node applied last.
    pub applied_generation: u64,
    pub config_digest: String,
    /// Every node alive (its lease held), in name order.
    pub nodes: Vec<NodeView>,
}

/// One node as `fleet status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub state: NodeState,
    /// Its config differs from this node's.
    pub drift: bool,
}
