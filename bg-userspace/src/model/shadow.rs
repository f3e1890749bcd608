//! Shadow copies (issue 15): what the data path counted, what a running
//! shadow reports, and the shadow phase's verdict per service.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::model::Colour;

/// One service's copy counters (`bg_common::shadow::ShadowStats`), summed
/// over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowCounts {
    /// Copies sent towards the shadow target.
    pub copied: u64,
    pub bytes: u64,
    /// The kernel refused the clone, or the rewrite failed.
    pub copy_failed: u64,
    /// No route or no neighbour towards the target.
    pub no_route: u64,
    /// XDP steering: datagrams handed to the kernel for their copy.
    pub handed_to_tc: u64,
    /// XDP steering: datagrams sent by devmap broadcast (to blue, and to
    /// the target as a copy).
    #[serde(default)]
    pub broadcast: u64,
    /// XDP steering: no room for the metadata; sent on without a copy.
    pub no_metadata: u64,
    /// XDP steering: past the budget of copies (`shadow_max_pps`);
    /// sent on by XDP without a copy.
    #[serde(default)]
    pub over_budget: u64,
}

impl ShadowCounts {
    /// Sampled datagrams whose copy did not leave, whatever the reason.
    pub fn lost(&self) -> u64 {
        self.copy_failed + self.no_route + self.no_metadata + self.over_budget
    }

    pub fn since(&self, start: &ShadowCounts) -> ShadowCounts {
        ShadowCounts {
            copied: self.copied.saturating_sub(start.copied),
            bytes: self.bytes.saturating_sub(start.bytes),
            copy_failed: self.copy_failed.saturating_sub(start.copy_failed),
            no_route: self.no_route.saturating_sub(start.no_route),
            handed_to_tc: self.handed_to_tc.saturating_sub(start.handed_to_tc),
            broadcast: self.broadcast.saturating_sub(start.broadcast),
            no_metadata: self.no_metadata.saturating_sub(start.no_metadata),
            over_budget: self.over_budget.saturating_sub(start.over_budget),
        }
    }
}

/// A running shadow, in `bgctl status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowStatus {
    /// The colour the copies go to.
    pub colour: Colour,
    /// The share of senders copied, in basis points.
    pub share_bp: u32,
    /// How copies are made: "xdp-broadcast" (devmap broadcast, a devmap
    /// program rewrites the copy), "kernel" (XDP hands the datagram to
    /// `bg_shadow_tc`, within `shadow_max_pps`) or "tc" (TC steering
    /// copies inline); and why not broadcast, when it is not.
    #[serde(default)]
    pub mechanism: String,
    pub started_unix_ms: u64,
    pub services: Vec<ShadowLook>,
}

/// One service's copies since the shadow started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowLook {
    pub service: String,
    /// The shadow listener.
    pub target: SocketAddr,
    /// The steering host's address and port the copies come from.
    pub source: SocketAddr,
    pub counts: ShadowCounts,
    /// ICMP errors the target answered copies with (port unreachable...).
    pub icmp_errors: u64,
}

/// The shadow phase's verdict for one UDP service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowResult {
    pub look: ShadowLook,
    /// How much the target's own count of accepted messages grew
    /// (`[deploy] shadow_count`); None without a count command.
    pub accepted: Option<u64>,
    pub passed: bool,
    /// Why it failed, or what it could not know.
    pub detail: String,
    /// How the copies were made (`ShadowStatus::mechanism`).
    #[serde(default)]
    pub mechanism: String,
}
