//! Deployments across the fleet. The record lives in etcd
//! (`deployment`); one agent at a time runs it, the one whose lease holds
//! `controller`. Each follower tick looks at both: an agent that is not
//! running it shows etcd's record; when the controller's lease is gone
//! (its agent died) with the deployment unfinished, the first agent to
//! win the key takes it over by the restart rules. The controller's own
//! saves only go through while it holds the key, so an agent that lost it
//! stops writing.
use std::net::SocketAddr;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::{
    Fleet, etcd,
    flip::{Gate, read_desired, unreachable},
    follower::read_nodes,
};
use crate::{
    core::{OpError, OpResult},
    deploy::{FleetScope, Lost},
    model::{
        BackendOverride, Colour, Deployment, DesiredState, FlipRecordKind, PerColour, Weight,
        now_unix_ms,
    },
};

/// Runs a fleet operation to its end from synchronous code on a runtime
/// worker.
fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn as_text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl Fleet {
    /// This node's lease while it is joined: what the controller key is
    /// bound to.
    fn joined_lease(&self) -> OpResult<i64> {
        let view = self.view.lock().expect("poisoned");
        match (view.connected, view.lease) {
            (true, Some(lease)) => Ok(lease),
            _ => Err(OpError::refused(format!(
                "this node is not joined to the fleet's etcd ({}); a fleet deployment is recorded there",
                view.error.as_deref().unwrap_or("not connected yet")
            ))),
        }
    }

    /// The other live nodes' published states: read now, or as this node
    /// last read them when etcd does not answer.
    fn others(&self) -> Vec<crate::model::NodeState> {
        let client = self.view.lock().expect("poisoned").client.clone();
        if let Some(mut client) = client {
            let read = tokio::time::timeout(
                etcd::REQUEST_TIMEOUT,
                read_nodes(&self.settings, &mut client),
            );
            if let Ok(Ok(nodes)) = block(read) {
                return nodes
                    .into_iter()
                    .filter(|n| n.node != self.settings.node)
                    .collect();
            }
        }
        let view = self.view.lock().expect("poisoned");
        view.nodes
            .iter()
            .filter(|n| n.node != self.settings.node)
            .cloned()
            .collect()
    }

    /// This node's `own` lines, then every other live node's `pick`ed ones
    /// as "node: line".
    fn with_others(
        &self,
        mut own: Vec<String>,
        pick: impl Fn(&crate::model::NodeState) -> &Vec<String>,
    ) -> Vec<String> {
        for n in self.others() {
            own.extend(pick(&n).iter().map(|p| format!("{}: {p}", n.node)));
        }
        own
    }

    async fn claim_async(&self, d: &Deployment) -> OpResult<()> {
        let s = &self.settings;
        let lease = self.joined_lease()?;
        let mut client = etcd::connect(s).await.map_err(unreachable)?;
        let (dkey, ckey) = (etcd::deployment_key(s), etcd::controller_key(s));
        let read = |e: etcd_client::Error| unreachable(format!("etcd read: {e}"));
        let got = client.get(dkey.as_str(), None).await.map_err(read)?;
        let deployment_unchanged = match got.kvs().first() {
            Some(kv) => {
                if let Ok(old) = serde_json::from_slice::<Deployment>(kv.value())
                    && !old.phase.is_terminal()
                {
                    return Err(OpError::refused(format!(
                        "deployment {} to {} is still in phase {:?}, run by {}; wait for it, or stop it with `bgctl abort`",
                        old.id,
                        old.colour,
                        old.phase,
                        old.controller.as_deref().unwrap_or("?")
                    )));
                }
                Compare::mod_revision(dkey.as_str(), CompareOp::Equal, kv.mod_revision())
            }
            None => Compare::version(dkey.as_str(), CompareOp::Equal, 0),
        };
        let got = client.get(ckey.as_str(), None).await.map_err(read)?;
        let controller_free = match got.kvs().first() {
            Some(kv) if kv.value() != s.node.as_bytes() => {
                return Err(OpError::refused(format!(
                    "{} still holds the fleet's deployment controller; wait for its deployment to end",
                    as_text(kv.value())
                )));
            }
            Some(_) => Compare::value(ckey.as_str(), CompareOp::Equal, s.node.as_str()),
            None => Compare::version(ckey.as_str(), CompareOp::Equal, 0),
        };
        let value = serde_json::to_vec(d).map_err(|e| OpError::failed(e.to_string()))?;
        let txn = Txn::new()
            .when([deployment_unchanged, controller_free])
            .and_then([
                TxnOp::put(dkey.as_str(), value, None),
                TxnOp::put(
                    ckey.as_str(),
                    s.node.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::delete(etcd::abort_key(s), None),
            ]);
        let done = client
            .txn(txn)
            .await
            .map_err(|e| unreachable(format!("etcd write of the deployment: {e}")))?;
        if !done.succeeded() {
            return Err(OpError::refused(
                "another deployment started first; look with `bgctl deploy --status`",
            ));
        }
        Ok(())
    }

    async fn save_async(&self, d: &Deployment) -> Result<(), Lost> {
        let s = &self.settings;
        let ckey = etcd::controller_key(s);
        let attempt = async {
            let mut client = etcd::connect(s).await?;
            let value = serde_json::to_vec(d).map_err(|e| e.to_string())?;
            let txn = Txn::new()
                .when([Compare::value(
                    ckey.as_str(),
                    CompareOp::Equal,
                    s.node.as_str(),
                )])
                .and_then([TxnOp::put(etcd::deployment_key(s), value, None)]);
            let done = client.txn(txn).await.map_err(|e| e.to_string())?;
            if done.succeeded() {
                return Ok(None);
            }
            let holder = client
                .get(ckey.as_str(), None)
                .await
                .map_err(|e| e.to_string())?
                .kvs()
                .first()
                .map_or_else(|| "no agent".to_owned(), |kv| as_text(kv.value()));
            Ok::<_, String>(Some(holder))
        };
        match attempt.await {
            Ok(None) => Ok(()),
            Ok(Some(holder)) => Err(Lost::Control(holder)),
            Err(e) => {
                // etcd out of reach: the controller goes on; its next save
                // catches up, and its lease decides who controls.
                log::warn!(
                    "fleet {}: deployment {}: cannot save its {:?} phase to etcd: {e}",
                    s.cluster,
                    d.id,
                    d.phase
                );
                Ok(())
            }
        }
    }

    async fn release_async(&self) -> Result<(), String> {
        let s = &self.settings;
        let ckey = etcd::controller_key(s);
        let mut client = etcd::connect(s).await?;
        let txn = Txn::new()
            .when([Compare::value(
                ckey.as_str(),
                CompareOp::Equal,
                s.node.as_str(),
            )])
            .and_then([TxnOp::delete(ckey.as_str(), None)]);
        client.txn(txn).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn put_backends_async(
        &self,
        colour: Colour,
        backends: &[(String, SocketAddr)],
    ) -> OpResult<()> {
        let s = &self.settings;
        let mut client = etcd::connect(s).await.map_err(unreachable)?;
        let (current, revision) = read_desired(s, &mut client).await?;
        let nodes = read_nodes(s, &mut client).await.map_err(unreachable)?;
        let mut next = match current {
            Some(d) => d,
            None => DesiredState {
                generation: 0,
                colour: self.core.active()?,
                kind: FlipRecordKind::Flip,
                by: String::new(),
                at_unix_ms: 0,
                forced: false,
                backends: Vec::new(),
                green: None,
                seed: None,
            },
        };
        let before = next.backends.clone();
        for (service, addr) in backends {
            next.backends
                .retain(|o| !(o.service == *service && o.colour == colour));
            next.backends.push(BackendOverride {
                service: service.clone(),
                colour,
                backend: *addr,
            });
        }
        if next.backends == before && next.generation > 0 {
            return Ok(());
        }
        next.generation += 1;
        next.by = s.node.clone();
        next.at_unix_ms = now_unix_ms();
        next.forced = false;
        let written = self
            .write_desired(&mut client, &next, revision, &nodes)
            .await?;
        let missing = written.missing();
        if !missing.is_empty() {
            return Err(OpError::failed(format!(
                "the new {colour} backends (fleet generation {}) were not applied by {} within {} ms",
                written.generation,
                missing.join(", "),
                s.converge_timeout.as_millis()
            )));
        }
        Ok(())
    }

    async fn request_promote_async(&self, id: &str, step: usize) -> OpResult<()> {
        let s = &self.settings;
        let mut client = etcd::connect(s).await.map_err(unreachable)?;
        client
            .put(etcd::promote_key(s), format!("{id}:{step}"), None)
            .await
            .map_err(|e| unreachable(format!("etcd write of the promote request: {e}")))?;
        Ok(())
    }

    async fn request_abort_async(&self, id: &str) -> OpResult<()> {
        let s = &self.settings;
        let mut client = etcd::connect(s).await.map_err(unreachable)?;
        client
            .put(etcd::abort_key(s), id, None)
            .await
            .map_err(|e| unreachable(format!("etcd write of the abort request: {e}")))?;
        Ok(())
    }
}

impl FleetScope for Fleet {
    fn node(&self) -> &str {
        &self.settings.node
    }

    fn active(&self) -> OpResult<Colour> {
        let desired = self.view.lock().expect("poisoned").desired.clone();
        match desired {
            Some(d) => Ok(d.colour),
            None => self.core.active(),
        }
    }

    fn claim(&self, d: &Deployment) -> OpResult<()> {
        block(self.claim_async(d))
    }

    fn save(&self, d: &Deployment) -> Result<(), Lost> {
        block(self.save_async(d))
    }

    fn release(&self) {
        if let Err(e) = block(self.release_async()) {
            log::warn!(
                "fleet {}: releasing the deployment controller: {e}; it goes with this node's lease",
                self.settings.cluster
            );
        }
    }

    fn put_backends(&self, colour: Colour, backends: &[(String, SocketAddr)]) -> OpResult<()> {
        block(self.put_backends_async(colour, backends))
    }

    fn switch(&self, to: Colour, rollback: bool, allow_drift: bool) -> OpResult<()> {
        let (kind, gate) = match (rollback, allow_drift) {
            (true, _) => (FlipRecordKind::Rollback, Gate::Forced),
            (false, true) => (FlipRecordKind::Flip, Gate::HealthOnly),
            (false, false) => (FlipRecordKind::Flip, Gate::Full),
        };
        let report = block(self.change(Some(to), kind, gate))?;
        if let Some(fleet) = &report.fleet
            && !fleet.missing().is_empty()
        {
            // Cut off etcd, those nodes catch up once healed; the
            // deployment goes on with the nodes that answer.
            log::warn!(
                "fleet {}: generation {} ({to}) not applied in time by {}",
                self.settings.cluster,
                fleet.generation,
                fleet.missing().join(", ")
            );
        }
        Ok(())
    }

    fn problems(&self, colour: Colour) -> Vec<String> {
        self.with_others(self.core.health().problems(colour), |n| {
            n.health_problems.get(colour)
        })
    }

    fn failures(&self, colour: Colour) -> Vec<String> {
        self.with_others(self.core.health().failures(colour), |n| {
            n.health_failures.get(colour)
        })
    }

    fn drifted(&self) -> Vec<String> {
        let ours = self.core.config_digest();
        self.others()
            .into_iter()
            .filter(|n| n.config_digest != ours)
            .map(|n| n.node)
            .collect()
    }

    fn failed_redirects(&self) -> u64 {
        self.others()
            .iter()
            .map(|n| n.failed_redirects)
            .fold(self.core.failed_redirects(), u64::saturating_add)
    }

    fn request_abort(&self, id: &str) -> OpResult<()> {
        block(self.request_abort_async(id))
    }

    fn request_promote(&self, id: &str, step: usize) -> OpResult<()> {
        block(self.request_promote_async(id, step))
    }

    fn split(&self, green: Weight, allow_drift: bool) -> OpResult<()> {
        let gate = if allow_drift {
            Gate::HealthOnly
        } else {
            Gate::Full
        };
        let report = block(self.set_split(green, gate))?;
        if let Some(fleet) = &report.fleet
            && !fleet.missing().is_empty()
        {
            log::warn!(
                "fleet {}: generation {} ({}) not applied in time by {}",
                self.settings.cluster,
                fleet.generation,
                report.to,
                fleet.missing().join(", ")
            );
        }
        Ok(())
    }

    fn packets(&self) -> PerColour<u64> {
        let own = self.core.packets();
        self.others().iter().fold(own, |acc, n| PerColour {
            blue: acc.blue.saturating_add(n.packets.blue),
            green: acc.green.saturating_add(n.packets.green),
        })
    }
}

/// One follower tick's look at the fleet's deployment: show it, take it
/// over when its controller is gone, pass on an abort request.
pub(super) async fn tend(fleet: &Fleet, client: &mut Client, lease: i64) -> Result<(), String> {
    let Some(deployer) = fleet.deployer.get() else {
        return Ok(());
    };
    let s = &fleet.settings;
    let (dkey, ckey) = (etcd::deployment_key(s), etcd::controller_key(s));
    let read = |e: etcd_client::Error| format!("etcd read of the deployment: {e}");
    let got = client.get(dkey.as_str(), None).await.map_err(read)?;
    let Some(kv) = got.kvs().first() else {
        return Ok(());
    };
    let d: Deployment = match serde_json::from_slice(kv.value()) {
        Ok(d) => d,
        Err(e) => {
            log::warn!(
                "fleet {}: the deployment in etcd does not parse: {e}",
                s.cluster
            );
            return Ok(());
        }
    };
    let holder = client
        .get(ckey.as_str(), None)
        .await
        .map_err(read)?
        .kvs()
        .first()
        .map(|kv| as_text(kv.value()));
    let ours = holder.as_deref() == Some(s.node.as_str());
    let take = |d| {
        tokio::task::block_in_place(|| deployer.take_over(d, &s.node))
            .unwrap_or_else(|e| log::warn!("fleet {}: taking the deployment over: {e}", s.cluster))
    };
    if ours && deployer.running() {
        let abort = client.get(etcd::abort_key(s), None).await.map_err(read)?;
        if abort
            .kvs()
            .first()
            .is_some_and(|kv| kv.value() == d.id.as_bytes())
        {
            let _ = deployer.abort();
        }
        let promote = client.get(etcd::promote_key(s), None).await.map_err(read)?;
        if let Some(step) = promote.kvs().first().and_then(|kv| {
            let text = as_text(kv.value());
            let (id, step) = text.rsplit_once(':')?;
            (id == d.id).then(|| step.parse::<usize>().ok())?
        }) {
            deployer.promote_step(step);
        }
    } else if ours && !d.phase.is_terminal() {
        take(d);
    } else if holder.is_none() && !d.phase.is_terminal() {
        let won = client
            .txn(
                Txn::new()
                    .when([Compare::version(ckey.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        ckey.as_str(),
                        s.node.as_str(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]),
            )
            .await
            .map_err(|e| format!("etcd write of the deployment controller: {e}"))?
            .succeeded();
        if won {
            take(d);
        } else {
            deployer.mirror(d);
        }
    } else {
        if let Some(other) = holder.filter(|_| deployer.running()) {
            // Our lease expired while etcd was out of reach, and another
            // agent won the key: it runs the deployment now.
            deployer.yield_to(&other);
        }
        deployer.mirror(d);
    }
    Ok(())
}
