//! A fleet shift: the split of new senders goes into the desired state,
//! with the hash's key, so every node splits alike and moves together.
use super::{
    Fleet, etcd,
    flip::{Gate, read_desired, unreachable},
    follower::read_nodes,
};
use crate::{
    core::OpResult,
    model::{Colour, DesiredState, FlipRecordKind, ShiftReport, Steering, Weight, now_unix_ms},
};

impl Fleet {
    /// Gives `colour` the share `weight` of new senders on every node.
    /// Refused, unless `force`, while a live node sees the colour gaining
    /// senders unhealthy or runs a config that differs from this node's.
    pub async fn shift(
        &self,
        colour: Colour,
        weight: Weight,
        force: bool,
    ) -> OpResult<ShiftReport> {
        let green = match colour {
            Colour::Green => weight,
            Colour::Blue => weight.rest(),
        };
        let gate = if force { Gate::Forced } else { Gate::Full };
        self.set_split(green, gate).await
    }

    /// Sets green's share of new senders on every node (see `shift`).
    pub(super) async fn set_split(&self, green: Weight, gate: Gate) -> OpResult<ShiftReport> {
        let s = &self.settings;
        let mut client = etcd::connect(s).await.map_err(unreachable)?;
        let (current, revision) = read_desired(s, &mut client).await?;
        let from = match &current {
            Some(d) => d.steering(),
            None => self.core.steering()?,
        };
        let to = Steering::split(from.active, green);
        if from == to && current.is_some() {
            return Ok(ShiftReport::unchanged(to));
        }
        let rising = from.gainer(to);
        let nodes = read_nodes(s, &mut client).await.map_err(unreachable)?;
        let forced = self.gate(
            &nodes,
            rising,
            gate,
            &format!("shift more senders to {rising} ({from} -> {to}) across the fleet"),
        )?;
        let seed = match current.as_ref().and_then(|d| d.seed) {
            Some(seed) => seed,
            // The first shift: this node's key becomes the fleet's.
            None => self.core.split_seed()?,
        };
        let desired = DesiredState {
            generation: current.as_ref().map_or(0, |d| d.generation) + 1,
            colour: to.active,
            kind: FlipRecordKind::Flip,
            by: s.node.clone(),
            at_unix_ms: now_unix_ms(),
            forced,
            backends: current.map(|d| d.backends).unwrap_or_default(),
            green: to.is_split().then_some(to.green),
            seed: Some(seed),
        };
        log::info!(
            "fleet {}: generation {}: shift {from} -> {to}{}",
            s.cluster,
            desired.generation,
            if forced { " (forced)" } else { "" }
        );
        let fleet = self
            .write_desired(&mut client, &desired, revision, &nodes)
            .await?;
        Ok(ShiftReport {
            from,
            to,
            changed: true,
            write_ns: 0,
            fleet: Some(fleet),
        })
    }
}
