//! The shadow maps (`bg_common::shadow`): which services are copied where,
//! the share of senders copied, and what became of the copies.
use std::net::SocketAddr;

use aya::maps::{Array, MapData, PerCpuArray};
use bg_common::{
    names,
    shadow::{BUDGET_SLOT, SHARE_SLOT, ShadowStats, ShadowTarget},
};

use super::{Dataplane, DataplaneError, Result, keys::addr_words};
use crate::model::ShadowCounts;

/// The TC ingress link of `bg_shadow_tc`, beside XDP steering.
pub const SHADOW_LINK_PIN: &str = "shadow_tc_link";

/// One service's copies: `to` the shadow listener, `from` the steering
/// host's own address and the agent's error-collecting port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowRoute {
    pub id: u32,
    pub to: SocketAddr,
    pub from: SocketAddr,
}

fn target(route: &ShadowRoute) -> ShadowTarget {
    let (dst_be, family) = addr_words(route.to.ip());
    let (src_be, _) = addr_words(route.from.ip());
    ShadowTarget {
        dst_be,
        src_be,
        dst_port_be: route.to.port().to_be(),
        src_port_be: route.from.port().to_be(),
        family,
        _pad: [0; 3],
    }
}

impl Dataplane {
    /// Whether this data path can copy: the TC program that makes the
    /// copies is attached (XDP steering), or steering runs on TC itself.
    pub fn can_shadow(&self) -> std::result::Result<(), String> {
        if self.mode.is_tc() || self.pin_dir.join(SHADOW_LINK_PIN).exists() {
            Ok(())
        } else {
            Err(format!(
                "the TC ingress program that makes shadow copies is not attached to {} (see the agent's log at start)",
                self.iface
            ))
        }
    }

    /// The share copied now, in basis points (0: off).
    pub fn shadow_weight(&self) -> Result<u32> {
        let a: Array<&MapData, u32> = Array::try_from(self.map(names::SHADOW)?)
            .map_err(|e| DataplaneError::Map(names::SHADOW, e))?;
        a.get(&SHARE_SLOT, 0)
            .map_err(|e| DataplaneError::Map(names::SHADOW, e))
    }

    /// Targets and budget first, then the share: no datagram is sampled
    /// before its service knows where its copy goes. `max_pps` bounds
    /// XDP's hand-overs to the kernel per second on this host (shared out
    /// per CPU); 0: no bound.
    pub fn start_shadow(
        &mut self,
        routes: &[ShadowRoute],
        weight_bp: u32,
        max_pps: u32,
    ) -> Result<()> {
        {
            let mut t: Array<&mut MapData, ShadowTarget> =
                Array::try_from(self.map_mut(names::SHADOW_TARGETS)?)
                    .map_err(|e| DataplaneError::Map(names::SHADOW_TARGETS, e))?;
            for r in routes {
                t.set(r.id, target(r), 0)
                    .map_err(|e| DataplaneError::Map(names::SHADOW_TARGETS, e))?;
            }
        }
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u32;
        let per_cpu = if max_pps == 0 {
            0
        } else {
            max_pps.div_ceil(cpus)
        };
        self.set_shadow_slot(BUDGET_SLOT, per_cpu)?;
        self.set_shadow_weight(weight_bp)
    }

    /// The share to 0 first, then the targets emptied.
    pub fn stop_shadow(&mut self) -> Result<()> {
        self.set_shadow_weight(0)?;
        let mut t: Array<&mut MapData, ShadowTarget> =
            Array::try_from(self.map_mut(names::SHADOW_TARGETS)?)
                .map_err(|e| DataplaneError::Map(names::SHADOW_TARGETS, e))?;
        for id in 0..t.len() {
            t.set(id, ShadowTarget::default(), 0)
                .map_err(|e| DataplaneError::Map(names::SHADOW_TARGETS, e))?;
        }
        Ok(())
    }

    fn set_shadow_weight(&mut self, weight_bp: u32) -> Result<()> {
        self.set_shadow_slot(SHARE_SLOT, weight_bp)
    }

    fn set_shadow_slot(&mut self, slot: u32, value: u32) -> Result<()> {
        let mut a: Array<&mut MapData, u32> = Array::try_from(self.map_mut(names::SHADOW)?)
            .map_err(|e| DataplaneError::Map(names::SHADOW, e))?;
        a.set(slot, value, 0)
            .map_err(|e| DataplaneError::Map(names::SHADOW, e))
    }

    /// Service `id`'s copy counters, summed over CPUs (they only grow).
    pub fn shadow_counts(&self, id: u32) -> Result<ShadowCounts> {
        let stats: PerCpuArray<&MapData, ShadowStats> =
            PerCpuArray::try_from(self.map(names::SHADOW_STATS)?)
                .map_err(|e| DataplaneError::Map(names::SHADOW_STATS, e))?;
        let per_cpu = stats
            .get(&id, 0)
            .map_err(|e| DataplaneError::Map(names::SHADOW_STATS, e))?;
        let mut c = ShadowCounts::default();
        for s in per_cpu.iter() {
            c.copied += s.copied;
            c.bytes += s.bytes;
            c.copy_failed += s.copy_failed;
            c.no_route += s.no_route;
            c.handed_to_tc += s.handed_to_tc;
            c.no_metadata += s.no_metadata;
            c.over_budget += s.over_budget;
        }
        Ok(c)
    }
}
