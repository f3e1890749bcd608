//! The shadow maps (`bg_common::shadow`): which services are copied where,
//! the share of senders copied, and what became of the copies.
use std::net::SocketAddr;

use aya::{
    maps::{Array, DevMapHash, HashMap, MapData, PerCpuArray},
    programs::Xdp,
};
use bg_common::{
    ServiceKey, names,
    shadow::{BROADCAST_SLOT, BUDGET_SLOT, SHARE_SLOT, ShadowStats, ShadowTarget},
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
    /// The active colour's backend: a broadcast copy leaves addressed to
    /// it, and is told by it.
    pub blue: SocketAddr,
    pub to: SocketAddr,
    pub from: SocketAddr,
    /// For broadcast copies: the next hop's MAC and the egress's own.
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// Devmap broadcast: blue's egress and the target's (they differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broadcast {
    pub blue: u32,
    pub target: u32,
}

/// The key a datagram to `addr` over UDP has in `SHADOW_BY_BLUE`.
fn udp_key(addr: SocketAddr) -> ServiceKey {
    let (addr_be, family) = addr_words(addr.ip());
    ServiceKey {
        addr_be,
        port_be: addr.port().to_be(),
        proto: bg_common::PROTO_UDP,
        family,
    }
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
        dmac: route.dmac,
        smac: route.smac,
        _pad2: [0; 4],
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
    /// XDP's copies per second on this host, by either copier (shared out
    /// per CPU); 0: no bound.
    pub fn start_shadow(
        &mut self,
        routes: &[ShadowRoute],
        weight_bp: u32,
        max_pps: u32,
        broadcast: Option<Broadcast>,
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
        if let Some(b) = broadcast {
            let mut by: HashMap<&mut MapData, ServiceKey, u32> =
                HashMap::try_from(self.map_mut(names::SHADOW_BY_BLUE)?)
                    .map_err(|e| DataplaneError::Map(names::SHADOW_BY_BLUE, e))?;
            for r in routes {
                by.insert(udp_key(r.blue), r.id, 0)
                    .map_err(|e| DataplaneError::Map(names::SHADOW_BY_BLUE, e))?;
            }
            self.arm_broadcast(b)?;
        }
        self.set_shadow_weight(weight_bp)
    }

    /// Whether XDP can copy by devmap broadcast here: `bg_shadow_copy`
    /// loaded (XDP steering only).
    pub fn can_broadcast(&self) -> bool {
        !self.mode.is_tc() && self.copy_prog_fd().is_some()
    }

    fn copy_prog_fd(&self) -> Option<&aya::programs::ProgramFd> {
        let p: &Xdp = self
            .ebpf
            .program(names::PROG_SHADOW_COPY)?
            .try_into()
            .ok()?;
        p.fd().ok()
    }

    /// The devmap entries first (blue's without a program, the target's
    /// with `bg_shadow_copy`), then the slot that sends copies through it.
    fn arm_broadcast(&mut self, b: Broadcast) -> Result<()> {
        let err = |e| DataplaneError::Map(names::SHADOW_DEVMAP, e);
        let fd = self
            .copy_prog_fd()
            .ok_or(DataplaneError::Program(
                names::PROG_SHADOW_COPY,
                aya::programs::ProgramError::NotLoaded,
            ))?
            .try_clone()
            .map_err(|e| DataplaneError::Io {
                path: self.pin_dir.clone(),
                source: e,
            })?;
        {
            let mut m: DevMapHash<&mut MapData> =
                DevMapHash::try_from(self.map_mut(names::SHADOW_DEVMAP)?).map_err(err)?;
            let xdp = |e| DataplaneError::XdpMap(names::SHADOW_DEVMAP, e);
            m.insert(0, b.blue, None, 0).map_err(xdp)?;
            m.insert(1, b.target, Some(&fd), 0).map_err(xdp)?;
        }
        self.set_shadow_slot(BROADCAST_SLOT, b.blue)
    }

    /// The share to 0 first, then the broadcast and the targets emptied.
    pub fn stop_shadow(&mut self) -> Result<()> {
        self.set_shadow_weight(0)?;
        self.set_shadow_slot(BROADCAST_SLOT, 0)?;
        {
            let mut m: DevMapHash<&mut MapData> =
                DevMapHash::try_from(self.map_mut(names::SHADOW_DEVMAP)?)
                    .map_err(|e| DataplaneError::Map(names::SHADOW_DEVMAP, e))?;
            for key in [0, 1] {
                let _ = m.remove(key);
            }
        }
        {
            let mut by: HashMap<&mut MapData, ServiceKey, u32> =
                HashMap::try_from(self.map_mut(names::SHADOW_BY_BLUE)?)
                    .map_err(|e| DataplaneError::Map(names::SHADOW_BY_BLUE, e))?;
            let keys: Vec<ServiceKey> = by.keys().filter_map(|k| k.ok()).collect();
            for k in keys {
                let _ = by.remove(&k);
            }
        }
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
            c.broadcast += s.broadcast;
        }
        Ok(c)
    }
}
