//! What a deployment must pass before it starts: no config drift in the
//! fleet, evidence better than silence for UDP services, and backend
//! replacements that make sense and reset nothing. `--force` skips the
//! first two.
use super::Deployer;
use crate::{
    core::{OpError, OpResult},
    model::{Colour, Protocol},
    probe::ProbeKind,
};

impl Deployer {
    /// Refuses a deployment that would judge a UDP service by silence alone:
    /// a `udp` probe cannot tell a collector that keeps messages from a host
    /// that drops them. `--force` accepts that.
    pub(super) fn check_evidence(&self) -> OpResult<()> {
        let silent: Vec<&str> = self
            .core()
            .config()
            .services
            .iter()
            .filter(|s| s.protocol == Protocol::Udp && matches!(s.health.probe, ProbeKind::Udp(_)))
            .map(|s| s.name.as_str())
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        Err(OpError::refused(format!(
            "refusing to deploy: the UDP service(s) {} are probed by `kind = \"udp\"`, whose only evidence is silence: it sees a refused port, a missing route or an unanswered neighbour, but not whether the collector keeps what it gets. Give them an http or exec probe in [service.health] (e.g. kind = \"http\", port = 8686 for Vector's health endpoint), or deploy anyway with --force",
            silent.join(", ")
        )))
    }

    /// Fleet mode: refuses while a node runs a config that differs from
    /// this node's; `--force` accepts that (the switch then still checks
    /// every node's health).
    pub(super) fn check_drift(&self) -> OpResult<()> {
        let Some(fleet) = self.fleet() else {
            return Ok(());
        };
        let drifted = fleet.drifted();
        if drifted.is_empty() {
            return Ok(());
        }
        Err(OpError::refused(format!(
            "refusing to deploy: config drift: {} run a config that differs from this node's ({}); make them the same, or deploy anyway with --force",
            drifted.join(", "),
            self.core().config_digest()
        )))
    }

    /// Refuses backend replacements that name no service, change family, move
    /// a direct-server-return colour's port, point at the other colour's
    /// backend, or would reset live TCP connections.
    pub(super) fn check_backends(
        &self,
        colour: Colour,
        backends: &[(String, std::net::SocketAddr)],
    ) -> OpResult<()> {
        for (name, addr) in backends {
            let config = self.core().config();
            let Some((_, svc)) = config.service(name) else {
                return Err(OpError::not_found(format!(
                    "--backend {name}={addr}: no service {name:?}; accepted: one of {}",
                    config.service_names()
                )));
            };
            if addr.ip().is_unspecified()
                || addr.port() == 0
                || svc.listen.is_ipv4() != addr.is_ipv4()
            {
                return Err(OpError::refused(format!(
                    "--backend {name}={addr}: needs a specific address with a port, of the same family as the service's listen address {}",
                    svc.listen
                )));
            }
            if let Some(problem) = svc.port_problem(colour, *addr) {
                return Err(OpError::refused(format!(
                    "--backend {name}={addr}: {problem}; accepted: a backend on port {}",
                    svc.listen.port()
                )));
            }
            if self.core().backend(svc, colour.other()) == *addr {
                return Err(OpError::refused(format!(
                    "--backend {name}={addr}: that is {}'s backend; blue and green must differ",
                    colour.other()
                )));
            }
        }
        if !backends.is_empty() {
            let live = *self.core().live_connections()?.get(colour);
            if live > 0 {
                return Err(OpError::refused(format!(
                    "{colour} still holds {live} live TCP connection(s) that a new backend would reset; `bgctl drain {colour}` first"
                )));
            }
        }
        Ok(())
    }
}
