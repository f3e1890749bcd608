//! The follower: keeps a session with etcd, applies every new desired
//! state, and publishes this node's state on its own lease. When etcd is
//! gone it keeps trying with a growing pause; the data path keeps the
//! colour applied last all the while.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions};

use super::{Fleet, etcd};
use crate::model::{DesiredState, NodeState};

/// How often the node republishes itself and rereads the node list.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(super) async fn run(fleet: Arc<Fleet>) {
    let mut backoff = BACKOFF_MIN;
    let mut last_log: Option<Instant> = None;
    loop {
        let Err(e) = session(&fleet).await;
        // A session that got as far as joining was healthy: start the
        // pauses over, so a leader election costs a fraction of a second.
        let joined = fleet.view.lock().expect("poisoned").connected;
        fleet.set_view(|v| {
            v.connected = false;
            v.error = Some(e.clone());
            v.client = None;
        });
        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            log::warn!(
                "fleet {}: {e}; steering stays on {} until etcd answers again",
                fleet.settings.cluster,
                fleet
                    .core
                    .active()
                    .map_or_else(|e| format!("? ({e})"), |c| c.to_string())
            );
            last_log = Some(Instant::now());
        }
        if joined {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One session with etcd; returns why it ended.
async fn session(fleet: &Fleet) -> Result<std::convert::Infallible, String> {
    let s = &fleet.settings;
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: etcd_client::Error| format!("etcd {what}: {err}")
    };
    let mut client = etcd::connect(s).await?;
    let lease = client
        .lease_grant(s.lease_ttl_s, None)
        .await
        .map_err(e("lease grant"))?
        .id();
    fleet.set_view(|v| v.lease = Some(lease));
    let (mut keeper, mut keep_stream) = client
        .lease_keep_alive(lease)
        .await
        .map_err(e("lease keep-alive"))?;
    let desired_key = etcd::desired_key(s);
    let got = client
        .get(desired_key.as_str(), None)
        .await
        .map_err(e("read of the desired state"))?;
    let revision = got.header().map_or(0, |h| h.revision());
    if let Some(kv) = got.kvs().first() {
        apply(fleet, kv.value());
    }
    // Every change after the read, none missed in between.
    let mut watch = client
        .watch(
            desired_key.as_str(),
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        )
        .await
        .map_err(e("watch of the desired state"))?;
    publish(fleet, &mut client, lease).await?;
    refresh_nodes(fleet, &mut client).await?;
    fleet.set_view(|v| {
        v.connected = true;
        v.error = None;
        v.client = Some(client.clone());
    });
    log::info!(
        "fleet {}: node {} joined (lease {lease:x})",
        s.cluster,
        s.node
    );
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    // A probe's verdict is published at once: a fleet deployment waits on
    // every node's health.
    let mut health = fleet.core.health().subscribe();
    let mut keep_tick =
        tokio::time::interval(Duration::from_secs((s.lease_ttl_s as u64 / 3).max(1)));
    loop {
        tokio::select! {
            msg = watch.message() => {
                let resp = msg
                    .map_err(e("watch of the desired state"))?
                    .ok_or("etcd ended the watch of the desired state")?;
                if resp.canceled() {
                    return Err(format!("etcd cancelled the watch: {}", resp.cancel_reason()));
                }
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        apply(fleet, kv.value());
                    }
                }
                publish(fleet, &mut client, lease).await?;
            }
            _ = keep_tick.tick() => {
                keeper.keep_alive().await.map_err(e("lease keep-alive"))?;
                match keep_stream.message().await.map_err(e("lease keep-alive"))? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err("this node's lease expired (etcd was out of reach longer than lease_ttl_s)".into()),
                }
            }
            _ = fleet.applied.notified() => publish(fleet, &mut client, lease).await?,
            _ = health.changed() => publish(fleet, &mut client, lease).await?,
            _ = tick.tick() => {
                // The watch is the fast path; this read is the safety net
                // should a watch ever go quiet without an error.
                let got = client
                    .get(desired_key.as_str(), None)
                    .await
                    .map_err(e("read of the desired state"))?;
                match got.kvs().first() {
                    Some(kv) => apply(fleet, kv.value()),
                    None => retry_apply(fleet),
                }
                publish(fleet, &mut client, lease).await?;
                refresh_nodes(fleet, &mut client).await?;
                super::deployment::tend(fleet, &mut client, lease).await?;
            }
        }
    }
}

/// Applies a desired state read from etcd, if it is newer than the one
/// applied. A value that does not parse is logged and left: it changes
/// nothing on this node.
fn apply(fleet: &Fleet, value: &[u8]) {
    let d: DesiredState = match serde_json::from_slice(value) {
        Ok(d) => d,
        Err(err) => {
            log::error!(
                "fleet {}: the desired state in etcd does not parse ({err}); this node keeps its colour",
                fleet.settings.cluster
            );
            return;
        }
    };
    fleet.set_view(|v| v.desired = Some(d.clone()));
    apply_desired(fleet, &d);
}

/// A desired state this node could not apply yet (a detached data path,
/// say) is tried again on every tick.
fn retry_apply(fleet: &Fleet) {
    let desired = fleet.view.lock().expect("poisoned").desired.clone();
    if let Some(d) = desired {
        apply_desired(fleet, &d);
    }
}

fn apply_desired(fleet: &Fleet, d: &DesiredState) {
    match tokio::task::block_in_place(|| fleet.core.apply_desired(d)) {
        Ok(Some(r)) => {
            log::info!(
                "fleet {}: generation {} applied: {} -> {} ({} by {})",
                fleet.settings.cluster,
                d.generation,
                r.from,
                r.to,
                d.kind,
                d.by
            );
            fleet.applied.notify_one();
        }
        Ok(None) => {}
        Err(err) => log::warn!(
            "fleet {}: generation {} ({}) not applied: {err}",
            fleet.settings.cluster,
            d.generation,
            d.colour
        ),
    }
}

/// Puts this node's state on its lease.
async fn publish(fleet: &Fleet, client: &mut Client, lease: i64) -> Result<(), String> {
    let state = tokio::task::block_in_place(|| fleet.core.node_state(&fleet.settings.node))
        .map_err(|e| format!("reading this node's state: {e}"))?;
    let value = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
    client
        .put(
            etcd::node_key(&fleet.settings),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .map_err(|e| format!("etcd put of this node's state: {e}"))?;
    Ok(())
}

/// Rereads every live node's state.
async fn refresh_nodes(fleet: &Fleet, client: &mut Client) -> Result<(), String> {
    let nodes = read_nodes(&fleet.settings, client).await?;
    fleet.set_view(|v| v.nodes = nodes);
    Ok(())
}

/// Every live node's published state, in name order; one that does not
/// parse is left out (and logged).
pub(super) async fn read_nodes(
    s: &crate::config::FleetSettings,
    client: &mut Client,
) -> Result<Vec<NodeState>, String> {
    let got = client
        .get(etcd::nodes_prefix(s), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| format!("etcd read of the nodes: {e}"))?;
    let mut nodes: Vec<NodeState> = got
        .kvs()
        .iter()
        .filter_map(|kv| match serde_json::from_slice(kv.value()) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("fleet {}: a node's state does not parse: {e}", s.cluster);
                None
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(nodes)
}
