//! The agent's control surfaces: the control socket (`socket.rs`, speaking
//! `protocol.rs`), HTTP with the dashboard (`http.rs`, guarded by
//! `http_guard.rs`), and Prometheus metrics. Both surfaces dispatch the
//! same requests (`dispatch.rs`) to the core and the deployment
//! controller, through their methods only.
use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::{core::Core, deploy::Deployer, fleet::Fleet, metrics::Scrape};

mod dispatch;
pub mod http;
pub mod http_guard;
pub mod protocol;
pub mod reload;
pub mod socket;

/// What the control surfaces act on.
pub struct Api {
    core: Arc<Core>,
    deploy: Arc<Deployer>,
    /// Fleet mode: flips and rollbacks go through etcd.
    fleet: Option<Arc<Fleet>>,
    /// Bearer token for the HTTP API's mutations.
    token: String,
    /// `bgctl reload`: re-reads the config the agent started with.
    reloader: Arc<reload::Reloader>,
    /// Places for `/api/events` streams, set when the HTTP server starts.
    event_streams: OnceLock<Arc<Semaphore>>,
    /// Control-socket connections accepted and not yet closed.
    connections: AtomicUsize,
}

impl Api {
    pub fn new(
        core: Arc<Core>,
        deploy: Arc<Deployer>,
        fleet: Option<Arc<Fleet>>,
        token: String,
        reloader: Arc<reload::Reloader>,
    ) -> Arc<Self> {
        Arc::new(Self {
            core,
            deploy,
            fleet,
            token,
            reloader,
            event_streams: OnceLock::new(),
            connections: AtomicUsize::new(0),
        })
    }

    /// Waits, at most `max`, until every control-socket connection taken
    /// has closed, once the accept loop has stopped: a stop or a reload
    /// ends the agent right after the request that asked for it, whose
    /// caller must still hear "done", and a reload must not cut the
    /// callers it took meanwhile (those it did not take wait in the
    /// listener's backlog for the next image).
    pub async fn settle(&self, max: Duration) {
        let start = Instant::now();
        while self.connections.load(Ordering::Acquire) > 0 && start.elapsed() < max {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `/api/status`: the status (TCP counts at most 2 s old), the
    /// current or last deployment, five minutes of per-colour rates, and
    /// in fleet mode this agent's view of the fleet.
    fn http_status(&self) -> anyhow::Result<serde_json::Value> {
        let status = self.core.status(false)?;
        let drops = status.drops();
        let mut v = serde_json::to_value(status)?;
        v["drops"] = serde_json::to_value(drops)?;
        v["deployment"] = serde_json::to_value(self.deploy.snapshot())?;
        v["traffic_history"] = serde_json::to_value(self.core.traffic_history())?;
        if let Some(fleet) = &self.fleet {
            v["fleet"] = serde_json::to_value(fleet.status())?;
        }
        Ok(v)
    }

    /// `/metrics`, from the maps and the agent's own counters.
    fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self.core.metrics().render(Scrape {
            status: self.core.status(false)?,
            phase: self.deploy.snapshot().map(|d| d.phase),
            fleet: self.fleet.as_ref().map(|f| f.status()),
        }))
    }
}
