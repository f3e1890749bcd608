//! Fleet mode: one colour across many steering nodes, kept consistent by
//! etcd. etcd holds the desired state (`/bluegreen/<cluster>/desired`);
//! every agent follows it with the same one map write as a local flip
//! (`follower.rs`) and publishes what it applied on a key bound to its own
//! lease (`nodes/<node>`). A fleet flip is one compare-and-swap on the
//! desired state's revision, then a wait for every live node (`flip.rs`).
//! A deployment is run by one agent at a time and taken over when that
//! agent dies (`deployment.rs`).
//! Losing etcd slows how state spreads; it never stops the data path: a
//! node keeps the colour it applied last and says it is stale.
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

use crate::{
    config::FleetSettings,
    core::Core,
    deploy::Deployer,
    model::{DesiredState, FleetStatus, NodeState, NodeView},
};

mod deployment;
mod etcd;
mod flip;
mod follower;
mod shift;

/// A fleet member: its settings, the core it applies to, and its view of
/// the fleet.
pub struct Fleet {
    settings: FleetSettings,
    core: Arc<Core>,
    view: Mutex<View>,
    /// Woken when this node applied a generation, so it publishes at once.
    applied: Notify,
    /// The deployment controller, acting on the fleet through this.
    deployer: OnceLock<Arc<Deployer>>,
}

/// What the follower last learnt.
#[derive(Default)]
struct View {
    connected: bool,
    error: Option<String>,
    desired: Option<DesiredState>,
    nodes: Vec<NodeState>,
    /// The lease this node's key is bound to, while a session holds one.
    lease: Option<i64>,
    /// The session's client, for reads outside the follower (a fleet
    /// deployment's fresh look at every node).
    client: Option<etcd_client::Client>,
}

impl Fleet {
    /// Joins the fleet in the background: the agent starts and steers
    /// whether or not etcd answers.
    /// `deployer` from then on deploys onto the whole fleet.
    pub fn start(core: Arc<Core>, settings: FleetSettings, deployer: Arc<Deployer>) -> Arc<Self> {
        let fleet = Arc::new(Self {
            settings,
            core,
            view: Mutex::new(View::default()),
            applied: Notify::new(),
            deployer: OnceLock::new(),
        });
        deployer.join_fleet(fleet.clone());
        let _ = fleet.deployer.set(deployer);
        tokio::spawn(follower::run(fleet.clone()));
        fleet
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    /// This agent's view of the fleet: connected or stale, the desired
    /// state, and every live node with its drift.
    pub fn status(&self) -> FleetStatus {
        let view = self.view.lock().expect("poisoned");
        let ours = self.core.config_digest();
        let applied = self.core.applied_generation();
        FleetStatus {
            cluster: self.settings.cluster.clone(),
            node: self.settings.node.clone(),
            connected: view.connected,
            stale: !view.connected
                || view
                    .desired
                    .as_ref()
                    .is_some_and(|d| d.generation > applied),
            error: view.error.clone(),
            desired: view.desired.clone(),
            applied_generation: applied,
            config_digest: ours.to_owned(),
            nodes: view
                .nodes
                .iter()
                .map(|n| NodeView {
                    drift: n.config_digest != ours,
                    state: n.clone(),
                })
                .collect(),
        }
    }

    /// Leaves the fleet on a clean stop: revokes this node's lease, so its
    /// key goes now instead of after `lease_ttl_s` and flips stop waiting
    /// for it. Bounded: a stop never hangs on etcd.
    pub async fn leave(&self) {
        let Some(lease) = self.view.lock().expect("poisoned").lease else {
            return;
        };
        let revoke = async {
            let mut client = etcd::connect(&self.settings).await?;
            client
                .lease_revoke(lease)
                .await
                .map_err(|e| format!("lease revoke: {e}"))
        };
        match tokio::time::timeout(etcd::REQUEST_TIMEOUT, revoke).await {
            Ok(Ok(_)) => log::info!(
                "fleet {}: node {} left",
                self.settings.cluster,
                self.settings.node
            ),
            Ok(Err(e)) => log::warn!(
                "fleet {}: leaving: {e}; the node's key expires with its lease",
                self.settings.cluster
            ),
            Err(_) => log::warn!(
                "fleet {}: leaving timed out; the node's key expires with its lease",
                self.settings.cluster
            ),
        }
    }

    fn set_view(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.view.lock().expect("poisoned"));
    }
}
