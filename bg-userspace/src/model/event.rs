//! What the history records: flips, rollbacks, refusals, probe changes,
//! agent starts and deployment phases, one `Entry` per line.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::{BackendState, Colour, Phase, RollbackReason, Steering};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Flip {
        from: Colour,
        to: Colour,
        write_ns: u64,
        /// Health gating was overridden with --force.
        forced: bool,
        /// Problems of the target colour at the time (empty when healthy).
        #[serde(default)]
        problems: Vec<String>,
    },
    Rollback {
        from: Colour,
        to: Colour,
        write_ns: u64,
        #[serde(default)]
        problems: Vec<String>,
        /// Why: `manual` (bgctl rollback), `health` or `redirect-errors`
        /// (a deployment's bake), `abort` (aborted after the switch).
        #[serde(default)]
        reason: Option<RollbackReason>,
    },
    /// The split of new senders changed (`bgctl shift`, a deployment's step,
    /// its abort): green's share went from `from.green` to `to.green`.
    Shift {
        from: Steering,
        to: Steering,
        write_ns: u64,
        /// Health gating was overridden with --force.
        forced: bool,
        /// Problems of the colour whose share rose (empty when healthy).
        #[serde(default)]
        problems: Vec<String>,
        /// Who asked: "operator", "deployment <id>", "fleet".
        #[serde(default)]
        by: String,
    },
    /// A flip was refused because the target colour was not healthy.
    FlipRefused {
        to: Colour,
        problems: Vec<String>,
    },
    Probe {
        service: String,
        colour: Colour,
        backend: SocketAddr,
        state: BackendState,
        error: Option<String>,
    },
    AgentStarted {
        version: String,
        active: Colour,
    },
    /// The config re-read (`bgctl reload` or SIGHUP, in `by`): applied
    /// (the agent re-executes itself with it) or refused, and why.
    Reload {
        applied: bool,
        by: String,
        detail: String,
    },
    /// The agent made the data path's maps afresh (its pins were gone) and
    /// set the active colour back to the one on record.
    ColourRestored {
        colour: Colour,
        reason: String,
    },
    /// A deployment entered a phase.
    Deploy {
        id: String,
        colour: Colour,
        version: Option<String>,
        phase: Phase,
        reason: Option<String>,
    },
}

/// One line of the history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at_unix_ms: u64,
    #[serde(flatten)]
    pub event: Event,
    /// Who asked, for entries a control request caused (the audit trail);
    /// None for the agent's own acts (probes, a deployment's later phases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// Who sent a control request: the control socket's peer, as the kernel
/// vouches for it (SO_PEERCRED), or the HTTP client's address (it held the
/// token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "lowercase")]
pub enum Actor {
    Socket { uid: u32, pid: Option<i32> },
    Http { client: SocketAddr },
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Socket {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} (pid {pid})"),
            Self::Socket { uid, pid: None } => write!(f, "uid {uid}"),
            Self::Http { client } => write!(f, "HTTP {client}"),
        }
    }
}

/// The last entries of the history, and how many lines on the way did not
/// parse (torn by a crash, or damaged) and were skipped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tail {
    pub entries: Vec<Entry>,
    pub skipped: u64,
}
