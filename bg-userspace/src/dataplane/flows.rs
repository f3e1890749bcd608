//! The TCP flow tables, walked for live connections on handles of their
//! own.
use std::path::Path;

use aya::maps::{HashMap, MapData};
use bg_common::names;

use super::error::{DataplaneError, Result};

/// Its own handles on the pinned TCP tables, so walking them (one syscall
/// pair per entry) never holds up a flip.
pub struct FlowTable {
    flows: aya::maps::Map,
    flows4: aya::maps::Map,
    pending: aya::maps::Map,
}

impl FlowTable {
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let open = |name: &'static str| {
            MapData::from_pin(pin_dir.join(name))
                .map(aya::maps::Map::LruHashMap)
                .map_err(|e| DataplaneError::Map(name, e))
        };
        Ok(Self {
            flows: open(names::FLOWS)?,
            flows4: open(names::FLOWS4)?,
            pending: open(names::PENDING_FLOWS)?,
        })
    }

    /// Live TCP connections per colour: flows not closing whose client sent
    /// a segment within `idle_jiffies` of `now`. Established flows (IPv4
    /// and IPv6 tables), and
    /// flows on probation (seen mid-stream); not handshakes in progress.
    pub fn live_connections(&self, now: u64, idle_jiffies: u64) -> Result<[u64; 2]> {
        let live_at = |last_seen: u64, state: u32| {
            state != bg_common::FLOW_CLOSING && now.saturating_sub(last_seen) < idle_jiffies
        };
        let mut live = [0u64; 2];
        let flows: HashMap<&MapData, bg_common::FlowKey, bg_common::FlowValue> =
            HashMap::try_from(&self.flows).map_err(|e| DataplaneError::Map(names::FLOWS, e))?;
        // Entries can vanish (LRU eviction) while we walk: skip those errors.
        for (_, flow) in flows.iter().filter_map(|r| r.ok()) {
            if live_at(flow.last_seen_jiffies, flow.state) {
                live[(flow.colour & 1) as usize] += 1;
            }
        }
        let flows4: HashMap<&MapData, bg_common::FlowKey4, bg_common::FlowValue> =
            HashMap::try_from(&self.flows4).map_err(|e| DataplaneError::Map(names::FLOWS4, e))?;
        for (_, flow) in flows4.iter().filter_map(|r| r.ok()) {
            if live_at(flow.last_seen_jiffies, flow.state) {
                live[(flow.colour & 1) as usize] += 1;
            }
        }
        let pending: HashMap<&MapData, bg_common::FlowKey, bg_common::PendingFlow> =
            HashMap::try_from(&self.pending)
                .map_err(|e| DataplaneError::Map(names::PENDING_FLOWS, e))?;
        for (_, flow) in pending.iter().filter_map(|r| r.ok()) {
            if flow.state == bg_common::FLOW_OPEN && live_at(flow.last_seen_jiffies, flow.state) {
                live[(flow.colour & 1) as usize] += 1;
            }
        }
        Ok(live)
    }
}
