//! A fleet flip or rollback: checks every live node's view of the target
//! colour and config, writes the new desired state with one
//! compare-and-swap on its revision (two racing operators cannot both
//! win), then waits for every live node to apply it.
use std::{collections::BTreeMap, time::Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp, WatchOptions};

use super::{Fleet, etcd, follower::read_nodes};
use crate::{
    core::{OpError, OpResult},
    model::{
        Colour, DesiredState, FleetFlip, FlipRecordKind, FlipReport, NodeConvergence, NodeState,
        now_unix_ms,
    },
};

/// What a fleet flip checks before it writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Every live node healthy on the target colour, and no drift.
    Full,
    /// Health only: a deployment forced past drift at its start.
    HealthOnly,
    /// Nothing: `--force`, and every rollback.
    Forced,
}

impl Fleet {
    /// Flips the whole fleet to `to`. Refused, unless `force`, while a live
    /// node sees `to` unhealthy or runs a config that differs from this
    /// node's.
    pub async fn flip(&self, to: Colour, force: bool) -> OpResult<FlipReport> {
        let gate = if force { Gate::Forced } else { Gate::Full };
        self.change(Some(to), FlipRecordKind::Flip, gate).await
    }

    /// Back to the colour before the fleet's current one: never refused
    /// for health, it is the way out.
    pub async fn rollback(&self) -> OpResult<FlipReport> {
        self.change(None, FlipRecordKind::Rollback, Gate::Forced)
            .await
    }

    pub(super) async fn change(
        &self,
        to: Option<Colour>,
        kind: FlipRecordKind,
        gate: Gate,
    ) -> OpResult<FlipReport> {
        let s = &self.settings;
        let mut client = etcd::connect(s).await.map_err(unreachable)?;
        let (current, revision) = read_desired(s, &mut client).await?;
        let from = match &current {
            Some(d) => d.colour,
            // No fleet flip yet: the fleet starts from this node's colour.
            None => self.core.active()?,
        };
        let to = match (to, &current) {
            (Some(c), _) => c,
            (None, Some(d)) => d.colour.other(),
            (None, None) => {
                return Err(OpError::refused(
                    "no fleet flip is recorded, so there is no previous colour; use `bgctl flip <colour>`",
                ));
            }
        };
        let nodes = read_nodes(s, &mut client).await.map_err(unreachable)?;
        // A flip ends a split, even onto the colour it started from.
        if from == to && current.as_ref().is_some_and(|d| d.green.is_none()) {
            return Ok(FlipReport::unchanged(to));
        }
        let forced = self.gate(&nodes, to, gate, &format!("flip the fleet to {to}"))?;
        let desired = DesiredState {
            generation: current.as_ref().map_or(0, |d| d.generation) + 1,
            colour: to,
            kind,
            by: s.node.clone(),
            at_unix_ms: now_unix_ms(),
            forced: kind == FlipRecordKind::Flip && forced,
            // A flip ends a split; the split's key stays for the next one.
            green: None,
            seed: current.as_ref().and_then(|d| d.seed),
            // Deployed backends stay deployed across flips.
            backends: current.map(|d| d.backends).unwrap_or_default(),
        };
        log::info!(
            "fleet {}: generation {}: {kind} {from} -> {to}{}",
            s.cluster,
            desired.generation,
            if desired.forced { " (forced)" } else { "" }
        );
        let fleet = self
            .write_desired(&mut client, &desired, revision, &nodes)
            .await?;
        Ok(FlipReport {
            unrecorded: None,
            from,
            to,
            changed: true,
            write_ns: 0,
            fleet: Some(fleet),
        })
    }

    /// Writes `desired` if the desired state is still at `revision` (0:
    /// none yet), then waits for every node of `nodes` to apply it.
    pub(super) async fn write_desired(
        &self,
        client: &mut etcd_client::Client,
        desired: &DesiredState,
        revision: i64,
        nodes: &[NodeState],
    ) -> OpResult<FleetFlip> {
        let key = etcd::desired_key(&self.settings);
        let value = serde_json::to_vec(desired).map_err(|e| OpError::failed(e.to_string()))?;
        // Only if nobody changed it since the read: the compare-and-swap.
        let unchanged = if revision == 0 {
            Compare::version(key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.as_str(), CompareOp::Equal, revision)
        };
        let txn = Txn::new()
            .when([unchanged])
            .and_then([TxnOp::put(key.as_str(), value, None)]);
        let done = client
            .txn(txn)
            .await
            .map_err(|e| unreachable(format!("etcd write of the desired state: {e}")))?;
        if !done.succeeded() {
            return Err(OpError::refused(format!(
                "another flip changed the fleet's desired state first (after generation {}); nothing was written. Look with `bgctl fleet status`, then flip again if still wanted",
                desired.generation - 1
            )));
        }
        let written = Instant::now();
        let write_revision = done.header().map_or(0, |h| h.revision());
        let live: Vec<String> = nodes.iter().map(|n| n.node.clone()).collect();
        let arrived = self
            .wait_for(client, &live, desired.generation, write_revision, written)
            .await;
        let nodes: Vec<NodeConvergence> = live
            .iter()
            .map(|n| NodeConvergence {
                node: n.clone(),
                after_ms: arrived.get(n).copied(),
            })
            .collect();
        let converged_ms = nodes
            .iter()
            .map(|n| n.after_ms)
            .collect::<Option<Vec<u64>>>()
            .map(|all| all.into_iter().max().unwrap_or(0));
        Ok(FleetFlip {
            generation: desired.generation,
            nodes,
            converged_ms,
        })
    }

    /// Refuses to `what` (a flip or shift towards `to`), by `gate`, while a
    /// node's config drifts or a node sees `to` unhealthy. Says whether it
    /// goes ahead past objections (forced).
    pub(super) fn gate(
        &self,
        nodes: &[NodeState],
        to: Colour,
        gate: Gate,
        what: &str,
    ) -> OpResult<bool> {
        let (mut drift, unhealthy) = self.objections(nodes, to);
        if gate == Gate::HealthOnly {
            drift.clear();
        }
        let objected = !drift.is_empty() || !unhealthy.is_empty();
        if gate != Gate::Forced && objected {
            let mut why: Vec<String> = Vec::new();
            if !drift.is_empty() {
                why.push(format!(
                    "config drift: {} run a config that differs from this node's ({}); make them the same",
                    drift.join(", "),
                    self.core.config_digest()
                ));
            }
            why.extend(unhealthy);
            return Err(OpError::refused(format!(
                "refusing to {what}: {}. Fix it, or go ahead anyway with --force",
                why.join("; ")
            )));
        }
        Ok(objected)
    }

    /// Why a flip to `to` should not go ahead: nodes whose config differs,
    /// and `node: problem` for each node that sees `to` unhealthy.
    fn objections(&self, nodes: &[NodeState], to: Colour) -> (Vec<String>, Vec<String>) {
        let ours = self.core.config_digest();
        let drift = nodes
            .iter()
            .filter(|n| n.config_digest != ours)
            .map(|n| n.node.clone())
            .collect();
        let unhealthy = nodes
            .iter()
            .filter(|n| !n.health_problems.get(to).is_empty())
            .map(|n| {
                format!(
                    "{} sees {to} unhealthy: {}",
                    n.node,
                    n.health_problems.get(to).join(", ")
                )
            })
            .collect();
        (drift, unhealthy)
    }

    /// Watches the node keys from the write on until each of `live` has
    /// published `generation` or the deadline passes; returns when each
    /// did, in ms after `written`.
    async fn wait_for(
        &self,
        client: &mut etcd_client::Client,
        live: &[String],
        generation: u64,
        write_revision: i64,
        written: Instant,
    ) -> BTreeMap<String, u64> {
        let mut arrived = BTreeMap::new();
        if live.is_empty() {
            return arrived;
        }
        let deadline = written + self.settings.converge_timeout;
        let watch = client
            .watch(
                etcd::nodes_prefix(&self.settings),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(write_revision + 1),
                ),
            )
            .await;
        let Ok(mut watch) = watch else {
            return arrived;
        };
        while arrived.len() < live.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let msg = match tokio::time::timeout(left, watch.message()).await {
                Ok(Ok(Some(m))) => m,
                _ => break,
            };
            let at = written.elapsed();
            for ev in msg.events() {
                let Some(n) = ev
                    .kv()
                    .and_then(|kv| serde_json::from_slice::<NodeState>(kv.value()).ok())
                else {
                    continue;
                };
                if n.generation >= generation && live.contains(&n.node) {
                    arrived
                        .entry(n.node)
                        .or_insert(at.as_millis().min(u128::from(u64::MAX)) as u64);
                }
            }
        }
        arrived
    }
}

/// An etcd failure as a fleet operation reports it.
pub(super) fn unreachable(e: String) -> OpError {
    OpError::failed(format!(
        "{e}. The fleet's state cannot change while etcd has no quorum or cannot be reached; every node keeps steering as it is"
    ))
}

/// The desired state and its revision (0: none written yet).
pub(super) async fn read_desired(
    s: &crate::config::FleetSettings,
    client: &mut etcd_client::Client,
) -> OpResult<(Option<DesiredState>, i64)> {
    let got = client
        .get(etcd::desired_key(s), None)
        .await
        .map_err(|e| unreachable(format!("etcd read of the desired state: {e}")))?;
    Ok(match got.kvs().first() {
        Some(kv) => (
            Some(
                serde_json::from_slice::<DesiredState>(kv.value()).map_err(|e| {
                    OpError::failed(format!("the desired state in etcd does not parse: {e}"))
                })?,
            ),
            kv.mod_revision(),
        ),
        None => (None, 0),
    })
}
