//! Shadow copies (issue 15): while the active colour serves every UDP
//! datagram, the data path copies the sampled senders' datagrams to the
//! other colour's shadow target. Copies come from this host's own address
//! and a port of a socket the agent holds, so the target's ICMP errors
//! come back here, counted against it, and never reach a real sender.
use std::{collections::BTreeSet, net::SocketAddr};

use super::{Core, OpError, OpResult};
use crate::{
    config::Service,
    dataplane::{
        Dataplane,
        backend_path::Route,
        shadow::{Broadcast, ShadowRoute},
    },
    model::{Colour, Mode, Protocol, ShadowCounts, ShadowLook, ShadowStatus, now_unix_ms},
    transport::icmp_errors::IcmpErrors,
};

/// A running shadow.
pub(super) struct Session {
    colour: Colour,
    share_bp: u32,
    mechanism: String,
    started_unix_ms: u64,
    services: Vec<Copied>,
}

/// One service's copies.
struct Copied {
    service: String,
    id: u32,
    /// The active colour's backend, and how it is sent there.
    blue: SocketAddr,
    mode: Mode,
    target: SocketAddr,
    source: SocketAddr,
    errors: IcmpErrors,
    start: ShadowCounts,
    icmp_errors: u64,
    dmac: [u8; 6],
    smac: [u8; 6],
}

impl Core {
    /// Where `svc`'s copies to `colour` go: its shadow listener, else the
    /// colour's backend (a deployed one included).
    pub fn shadow_target(&self, svc: &Service, colour: Colour) -> SocketAddr {
        svc.shadow[colour.index() as usize].unwrap_or_else(|| self.backend(svc, colour))
    }

    /// Starts copying `share_bp` basis points of senders of every UDP
    /// service to `colour`. Refused while a shadow runs, towards the
    /// active colour, or where the data path cannot copy.
    pub fn start_shadow(
        &self,
        colour: Colour,
        share_bp: u32,
        max_pps: u32,
    ) -> OpResult<ShadowStatus> {
        let mut slot = self.shadow.lock().expect("poisoned");
        if let Some(s) = slot.as_ref() {
            return Err(OpError::refused(format!(
                "a shadow to {} is already running",
                s.colour
            )));
        }
        let mut dp = self.dp();
        if dp.active()? == colour {
            return Err(OpError::refused(format!(
                "{colour} is the active colour: it already has the traffic; shadow the idle colour, {}",
                colour.other()
            )));
        }
        dp.can_shadow().map_err(OpError::refused)?;
        let mut services = Vec::new();
        for (svc, &id) in self.config.services.iter().zip(&self.ids) {
            if svc.protocol != Protocol::Udp {
                continue;
            }
            let target = self.shadow_target(svc, colour);
            let errors = IcmpErrors::towards(target).map_err(|e| {
                OpError::failed(format!(
                    "service {}: no socket on this host towards the shadow target {target}: {e}",
                    svc.name
                ))
            })?;
            services.push(Copied {
                service: svc.name.clone(),
                id,
                mode: svc.mode(colour.other()),
                blue: self.backend(svc, colour.other()),
                target,
                source: errors.local_addr()?,
                errors,
                start: dp.shadow_counts(id)?,
                icmp_errors: 0,
                dmac: [0; 6],
                smac: [0; 6],
            });
        }
        if services.is_empty() {
            return Err(OpError::refused(
                "no UDP service: shadow copies are UDP only",
            ));
        }
        let (broadcast, mechanism) = self.copier(&mut dp, colour, &mut services);
        let routes: Vec<ShadowRoute> = services
            .iter()
            .map(|c| ShadowRoute {
                id: c.id,
                blue: c.blue,
                to: c.target,
                from: c.source,
                dmac: c.dmac,
                smac: c.smac,
            })
            .collect();
        dp.start_shadow(&routes, share_bp, max_pps, broadcast)?;
        log::info!("shadow to {colour}: {mechanism}");
        for c in &services {
            log::info!(
                "shadow: {} copies of {:.2} % of senders go to {colour}'s {} from {}",
                c.service,
                f64::from(share_bp) / 100.0,
                c.target,
                c.source
            );
        }
        let session = Session {
            colour,
            share_bp,
            mechanism,
            started_unix_ms: now_unix_ms(),
            services,
        };
        let status = self.look(&session, &dp)?;
        *slot = Some(session);
        Ok(status)
    }

    /// Ends the shadow, if one runs: the share to 0, then the targets
    /// emptied. Returns its last look.
    pub fn stop_shadow(&self) -> OpResult<Option<ShadowStatus>> {
        let mut slot = self.shadow.lock().expect("poisoned");
        let mut dp = self.dp();
        let last = match slot.as_mut() {
            Some(s) => {
                self.collect_errors(s);
                Some(self.look(s, &dp)?)
            }
            None => None,
        };
        dp.stop_shadow()?;
        *slot = None;
        if let Some(s) = &last {
            log::info!("shadow to {} ended", s.colour);
        }
        Ok(last)
    }

    /// The running shadow's counts since it started, its ICMP errors
    /// collected first.
    pub fn shadow_status(&self) -> OpResult<Option<ShadowStatus>> {
        let mut slot = self.shadow.lock().expect("poisoned");
        let Some(s) = slot.as_mut() else {
            return Ok(None);
        };
        self.collect_errors(s);
        let dp = self.dp();
        Ok(Some(self.look(s, &dp)?))
    }

    /// ICMP errors the agent collected for `service`'s copies since it
    /// started.
    pub(super) fn shadow_icmp_errors(&self, service: &str) -> u64 {
        self.shadow_icmp
            .lock()
            .expect("poisoned")
            .get(service)
            .copied()
            .unwrap_or(0)
    }

    /// How XDP copies: by devmap broadcast where every service's blue
    /// backend leaves by one interface and every target by another (the
    /// broadcast tells its copies apart by interface only), else through
    /// the kernel's path. The targets' next hops fill in `services`.
    fn copier(
        &self,
        dp: &mut Dataplane,
        colour: Colour,
        services: &mut [Copied],
    ) -> (Option<Broadcast>, String) {
        if dp.mode.is_tc() {
            return (None, "tc: TC steering copies inline".to_owned());
        }
        let kernel = |why: String| {
            (
                None,
                format!(
                    "kernel: XDP hands sampled datagrams to bg_shadow_tc, within shadow_max_pps; not by devmap broadcast because {why}"
                ),
            )
        };
        if !self.config.deploy.shadow_broadcast {
            return kernel("[deploy] shadow_broadcast is off".into());
        }
        if !dp.can_broadcast() {
            return kernel("bg_shadow_copy did not load (see the agent's log at start)".into());
        }
        // The broadcast copier rewrites NAT's frame; a DSR one keeps the
        // service address (or has an outer header), and TC sends it on.
        if let Some(c) = services.iter().find(|c| c.mode.is_dsr()) {
            return kernel(format!(
                "{}: {} is sent by {}, which the broadcast copier does not take",
                c.service,
                colour.other(),
                c.mode
            ));
        }
        let (mut blue_out, mut target_out) = (BTreeSet::new(), BTreeSet::new());
        for c in services.iter_mut() {
            let blue = c.blue;
            match dp.route(blue, Protocol::Udp) {
                Ok(Route::Forward { egress }) if egress != dp.ifindex => {
                    blue_out.insert(egress);
                }
                _ => {
                    return kernel(format!(
                        "{}: {} ({blue}) is not reached by an XDP redirect",
                        c.service,
                        colour.other()
                    ));
                }
            }
            match dp.next_hop(c.target, Protocol::Udp) {
                Ok(Some(hop)) if hop.egress != dp.ifindex => {
                    target_out.insert(hop.egress);
                    (c.dmac, c.smac) = (hop.dmac, hop.smac);
                }
                _ => {
                    return kernel(format!(
                        "{}: no resolved next hop towards {} on another interface",
                        c.service, c.target
                    ));
                }
            }
        }
        match (
            blue_out.len(),
            target_out.len(),
            blue_out.first(),
            target_out.first(),
        ) {
            (1, 1, Some(&blue), Some(&target)) if blue != target => (
                Some(Broadcast { blue, target }),
                format!(
                    "xdp-broadcast: devmap broadcast out of ifindex {blue} (to {}) and {target} (the copies)",
                    colour.other()
                ),
            ),
            (1, 1, _, _) => kernel(format!(
                "{} and the shadow targets leave by the same interface",
                colour.other()
            )),
            _ => kernel("the services leave by more than one interface".into()),
        }
    }

    fn collect_errors(&self, s: &mut Session) {
        let mut totals = self.shadow_icmp.lock().expect("poisoned");
        for c in &mut s.services {
            let n = c.errors.drain().iter().filter(|e| e.to == c.target).count() as u64;
            if n > 0 {
                log::warn!(
                    "shadow: {} ICMP error(s) from {}'s shadow target {}",
                    n,
                    c.service,
                    c.target
                );
            }
            c.icmp_errors += n;
            *totals.entry(c.service.clone()).or_default() += n;
        }
    }

    fn look(&self, s: &Session, dp: &crate::dataplane::Dataplane) -> OpResult<ShadowStatus> {
        let mut services = Vec::with_capacity(s.services.len());
        for c in &s.services {
            services.push(ShadowLook {
                service: c.service.clone(),
                target: c.target,
                source: c.source,
                counts: dp.shadow_counts(c.id)?.since(&c.start),
                icmp_errors: c.icmp_errors,
            });
        }
        Ok(ShadowStatus {
            colour: s.colour,
            share_bp: s.share_bp,
            mechanism: s.mechanism.clone(),
            started_unix_ms: s.started_unix_ms,
            services,
        })
    }
}
