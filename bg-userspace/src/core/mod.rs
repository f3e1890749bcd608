//! The agent's core: its state and every decision about the data path.
//! The control socket, HTTP and the deployment controller change it only
//! through `Core`'s methods; its fields are private to this module.
//!
//! - `mod.rs`: `Core`, how it is made, what it answers;
//! - `flip.rs`: the flip (health gate -> one map write -> record);
//! - `shift.rs`: the split of new senders between the colours;
//! - `shadow.rs`: copies of live UDP to the idle colour;
//! - `status.rs`: the status report and live-connection counts;
//! - `sampler.rs`: per-colour rates, detach detection, devmap refresh;
//! - `error.rs`: the error kinds every operation reports.
use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use tokio::sync::Notify;

mod error;
mod flip;
mod preview;
mod sampler;
mod shadow;
mod shift;
mod status;

pub use error::{ErrorKind, OpError, OpResult};
pub use flip::FlipKind;
pub use shift::ShiftBy;

use crate::{
    config::{Config, Service},
    dataplane::{Dataplane, FlowTable, TableSizes, backend_path::PathJudge},
    health::{HealthBoard, PathCheck},
    metrics::Metrics,
    model::{
        Colour, ColourRate, Event, NodeState, PerColour, Protocol, TrafficSample, now_unix_ms,
    },
    store::{
        history::History,
        state::{AgentState, BackendOverride, StateStore},
    },
};

/// What the core is made of; the agent builds the parts at start.
pub struct Parts {
    pub dp: Dataplane,
    pub config: Config,
    /// Each service's id in the maps, in the config's order.
    pub ids: Vec<u32>,
    /// What the pinned TCP tables really hold (may differ from the config).
    pub tables: TableSizes,
    /// The kernel's HZ, to turn the idle timeout into jiffies.
    pub hz: u64,
    pub state: AgentState,
    pub store: StateStore,
    pub history: Arc<History>,
    pub metrics: Arc<Metrics>,
}

pub struct Core {
    dp: Mutex<Dataplane>,
    /// A separate handle for walking the flow table outside the `dp` lock.
    flows: Mutex<FlowTable>,
    health: Arc<HealthBoard>,
    history: Arc<History>,
    metrics: Arc<Metrics>,
    config: Config,
    ids: Vec<u32>,
    tables: TableSizes,
    hz: u64,
    state: Mutex<AgentState>,
    store: StateStore,
    rates: Mutex<PerColour<ColourRate>>,
    traffic_history: Mutex<VecDeque<TrafficSample>>,
    /// Live TCP connections per colour at the last walk, and when.
    tcp_live: Mutex<Option<(Instant, PerColour<u64>)>>,
    /// Judges backends' paths through the data path, for probes and gates.
    paths: PathJudge,
    /// Why the steering link is gone, once the agent noticed it is.
    detached: Mutex<Option<String>>,
    started: Instant,
    stop: Notify,
    /// `Config::digest`, what a fleet's nodes must share.
    config_digest: String,
    /// The shadow running now, if any.
    shadow: Mutex<Option<shadow::Session>>,
    /// ICMP errors shadow targets answered, per service, since the start.
    shadow_icmp: Mutex<std::collections::HashMap<String, u64>>,
}

impl Core {
    /// The core over an opened data path. It puts back the backends
    /// deployments left (the state file's), records the start and, when the
    /// maps were made afresh, the colour it restored.
    pub fn new(parts: Parts) -> anyhow::Result<Arc<Self>> {
        let Parts {
            mut dp,
            config,
            ids,
            tables,
            hz,
            mut state,
            store,
            history,
            metrics,
        } = parts;
        let seed_known = state.split_seed;
        shift::settle_seed(&mut dp, &mut state)?;
        if state.split_seed != seed_known {
            store.save(&state)?;
        }
        let restored = flip::restore_colour(&mut dp, &state)?;
        // Copies outlive a crashed agent's deployment; the one that resumes
        // it ends its shadow phase, so end the copies too.
        if dp.shadow_weight()? != 0 {
            log::warn!("a shadow an earlier agent started is still copying; ending it");
            dp.stop_shadow()?;
        }
        let active = dp.active()?;
        history.append(&Event::AgentStarted {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            active,
        });
        if let Some(event) = restored {
            history.append(&event);
        }
        let config_digest = config.digest();
        let core = Arc::new(Self {
            flows: Mutex::new(FlowTable::open(&dp.pin_dir)?),
            dp: Mutex::new(dp),
            health: Arc::new(HealthBoard::new(&config)),
            history,
            metrics,
            config,
            ids,
            tables,
            hz,
            state: Mutex::new(state),
            store,
            rates: Mutex::default(),
            traffic_history: Mutex::default(),
            tcp_live: Mutex::default(),
            paths: PathJudge::default(),
            detached: Mutex::default(),
            started: Instant::now(),
            stop: Notify::new(),
            config_digest,
            shadow: Mutex::default(),
            shadow_icmp: Mutex::default(),
        });
        core.restore_backends()?;
        Ok(core)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn health(&self) -> &Arc<HealthBoard> {
        &self.health
    }

    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The colour the data path steers to now.
    pub fn active(&self) -> OpResult<Colour> {
        Ok(self.dp().active()?)
    }

    /// The interface the data path steers on.
    pub fn iface(&self) -> String {
        self.dp().iface.clone()
    }

    fn dp(&self) -> std::sync::MutexGuard<'_, Dataplane> {
        self.dp.lock().expect("poisoned")
    }

    /// The backend `svc` has on `colour`: a deployed one, else the config's.
    pub fn backend(&self, svc: &Service, colour: Colour) -> SocketAddr {
        self.health
            .backend(&svc.name, colour)
            .unwrap_or(match colour {
                Colour::Blue => svc.blue,
                Colour::Green => svc.green,
            })
    }

    /// Puts `addr` in place as `service`'s backend on `colour`: in the maps,
    /// on the board (its probes follow) and in the state file, so a restart
    /// keeps it.
    pub fn put_backend(&self, service: &str, colour: Colour, addr: SocketAddr) -> OpResult<()> {
        let (id, svc) = self
            .id_of(service)
            .zip(self.config.service(service))
            .map(|(id, (_, svc))| (id, svc))
            .ok_or_else(|| OpError::not_found(format!("no service {service:?}")))?;
        if let Some(problem) = svc.port_problem(colour, addr) {
            return Err(OpError::refused(format!("{service}: {problem}")));
        }
        self.dp()
            .set_backend(id, colour, addr, svc.mode(colour).wire())?;
        self.health.set_backend(service, colour, addr);
        let mut state = self.state.lock().expect("poisoned");
        state
            .backend_overrides
            .retain(|o| !(o.service == service && o.colour == colour));
        state.backend_overrides.push(BackendOverride {
            service: service.to_owned(),
            colour,
            backend: addr,
        });
        self.store.save(&state)?;
        Ok(())
    }

    fn id_of(&self, service: &str) -> Option<u32> {
        let (i, _) = self.config.service(service)?;
        self.ids.get(i).copied()
    }

    /// Backends deployed in place of the config's stay in place across
    /// restarts; one whose service is gone or changed family is ignored.
    fn restore_backends(&self) -> anyhow::Result<()> {
        let overrides = self
            .state
            .lock()
            .expect("poisoned")
            .backend_overrides
            .clone();
        for o in overrides {
            let (Some((_, svc)), Some(id)) =
                (self.config.service(&o.service), self.id_of(&o.service))
            else {
                log::warn!(
                    "deployed backend for {} ignored: the service is no longer configured",
                    o.service
                );
                continue;
            };
            if svc.listen.is_ipv4() != o.backend.is_ipv4() {
                log::warn!(
                    "deployed backend {} for {} ignored: family differs from listen",
                    o.backend,
                    o.service
                );
                continue;
            }
            if let Some(problem) = svc.port_problem(o.colour, o.backend) {
                log::warn!(
                    "deployed backend {} for {} ignored: {problem}",
                    o.backend,
                    o.service
                );
                continue;
            }
            self.dp()
                .set_backend(id, o.colour, o.backend, svc.mode(o.colour).wire())?;
            self.health.set_backend(&o.service, o.colour, o.backend);
            log::info!(
                "{} {}: backend {} (deployed; overrides the config file)",
                o.service,
                o.colour,
                o.backend
            );
        }
        Ok(())
    }

    /// Whether the data path reaches `addr` as `service`'s `colour` backend
    /// (`sent`: this host just sent it packets, so its neighbour is known).
    pub fn judge_path(
        &self,
        service: &str,
        colour: Colour,
        addr: SocketAddr,
        protocol: Protocol,
        sent: bool,
    ) -> Result<(), String> {
        let mut dp = self.dp();
        self.paths
            .judge(&mut dp, service, colour, addr, protocol, sent)?;
        // Direct server return: the backend must hold the service address
        // too. Asked without the data path's lock: the probe waits.
        let Some((_, svc)) = self.config.service(service) else {
            return Ok(());
        };
        let mode = svc.mode(colour);
        if !mode.is_dsr() || !svc.probe_service_address {
            return Ok(());
        }
        let hop = dp.next_hop(addr, protocol).map_err(|e| e.to_string())?;
        drop(dp);
        let Some(hop) = hop else {
            return Err(format!(
                "no next hop towards {addr} for the service-address probe"
            ));
        };
        crate::probe::through_service::ServiceProbe {
            service: svc.listen,
            backend: addr.ip(),
            mode,
            tunnel_source: svc.tunnel_source,
            egress: hop.egress,
            dmac: hop.dmac,
            smac: hop.smac,
            timeout: svc.health.timeout,
        }
        .run()
    }

    /// The probes' path check, bound to this core; once the core is gone
    /// it passes.
    pub fn path_check(self: &Arc<Self>) -> PathCheck {
        let weak = Arc::downgrade(self);
        Arc::new(
            move |service, colour, addr, protocol, sent| match weak.upgrade() {
                Some(core) => core.judge_path(service, colour, addr, protocol, sent),
                None => Ok(()),
            },
        )
    }

    /// Redirects that failed so far (see `Counters::failed_redirects`); 0
    /// when the counters cannot be read.
    pub fn failed_redirects(&self) -> u64 {
        self.dp()
            .counters()
            .map(|c| c.failed_redirects())
            .unwrap_or(0)
    }

    /// Asks the agent to stop when it serves `iface`; says whether it does.
    pub fn request_stop(&self, iface: &str) -> bool {
        let ours = self.dp().iface == iface;
        if ours {
            self.stop.notify_one();
        }
        ours
    }

    /// Returns once a stop was requested.
    pub async fn stop_requested(&self) {
        self.stop.notified().await
    }

    /// The last five minutes of per-colour rates, oldest first.
    pub fn traffic_history(&self) -> Vec<TrafficSample> {
        self.traffic_history
            .lock()
            .expect("poisoned")
            .iter()
            .copied()
            .collect()
    }

    pub fn config_digest(&self) -> &str {
        &self.config_digest
    }

    /// Packets steered to each colour since the maps were made, as of the
    /// last one-second sample.
    pub fn packets(&self) -> PerColour<u64> {
        let rates = *self.rates.lock().expect("poisoned");
        PerColour {
            blue: rates.blue.packets,
            green: rates.green.packets,
        }
    }

    /// What this node publishes of itself in fleet mode.
    pub fn node_state(&self, node: &str) -> OpResult<NodeState> {
        let rates = *self.rates.lock().expect("poisoned");
        Ok(NodeState {
            node: node.to_owned(),
            generation: self.applied_generation(),
            colour: self.active()?,
            config_digest: self.config_digest.clone(),
            health_problems: PerColour {
                blue: self.health.problems(Colour::Blue),
                green: self.health.problems(Colour::Green),
            },
            health_failures: PerColour {
                blue: self.health.failures(Colour::Blue),
                green: self.health.failures(Colour::Green),
            },
            failed_redirects: self.failed_redirects(),
            packets: PerColour {
                blue: rates.blue.packets,
                green: rates.green.packets,
            },
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            at_unix_ms: now_unix_ms(),
        })
    }

    /// Starts the sampler (rates, detach detection, devmap refresh).
    pub fn spawn_sampler(self: &Arc<Self>) {
        tokio::spawn(sampler::run(self.clone()));
    }
}
