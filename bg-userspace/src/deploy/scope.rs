//! Where a deployment acts. Alone, the agent's deployment acts on its own
//! core. In fleet mode it acts on the whole fleet (`fleet::Fleet` fills
//! this in): its record lives in etcd, where another agent can take it
//! over; its backends and its switch go through the desired state; its
//! gates and its bake look at every node.
use std::net::SocketAddr;

use super::Deployer;
use crate::{
    core::{FlipKind, OpResult, ShiftBy},
    model::{Colour, Deployment, PerColour, RollbackReason, Weight},
};

/// Why a deployment's record could not be saved.
pub enum Lost {
    /// Another agent controls the deployment now: this one must stop.
    Control(String),
}

pub trait FleetScope: Send + Sync {
    /// This node's name in the fleet.
    fn node(&self) -> &str;
    /// The fleet's colour: the desired state's, or this node's before any
    /// fleet flip.
    fn active(&self) -> OpResult<Colour>;
    /// Records a new deployment with this agent as its controller. Refused
    /// when another runs, or another agent started one first.
    fn claim(&self, d: &Deployment) -> OpResult<()>;
    /// Saves the record where every agent sees it. Only the controller
    /// may: a failure because etcd is out of reach is logged and passes
    /// (the next save catches up), losing control does not.
    fn save(&self, d: &Deployment) -> Result<(), Lost>;
    /// Gives up control once the deployment is over.
    fn release(&self);
    /// Puts `backends` in place on `colour` on every node, and waits for
    /// them to apply it.
    fn put_backends(&self, colour: Colour, backends: &[(String, SocketAddr)]) -> OpResult<()>;
    /// Steers the fleet to `to`: a flip, health-gated on every node (and
    /// refused for config drift unless `allow_drift`), or a rollback,
    /// never refused.
    fn switch(&self, to: Colour, rollback: bool, allow_drift: bool) -> OpResult<()>;
    /// The live nodes whose config differs from this node's.
    fn drifted(&self) -> Vec<String>;
    /// Why any live node sees `colour` unhealthy, as "node: problem".
    fn problems(&self, colour: Colour) -> Vec<String>;
    /// `colour`'s backends any live node found down, as "node: failure".
    fn failures(&self, colour: Colour) -> Vec<String>;
    /// Failed redirects summed over the live nodes.
    fn failed_redirects(&self) -> u64;
    /// Asks the agent that controls deployment `id` to abort it.
    fn request_abort(&self, id: &str) -> OpResult<()>;
    /// Asks the agent that controls deployment `id` to promote its step
    /// `step`.
    fn request_promote(&self, id: &str, step: usize) -> OpResult<()>;
    /// Gives green the share `green` of senders on every node, health-gated
    /// there (and refused for config drift unless `allow_drift`).
    fn split(&self, green: Weight, allow_drift: bool) -> OpResult<()>;
    /// Packets steered per colour, summed over the live nodes.
    fn packets(&self) -> PerColour<u64>;
}

/// What the controller does through its scope: on this node alone, or on
/// the fleet.
impl Deployer {
    /// The colour traffic goes to: the fleet's, or this node's.
    pub(super) fn active(&self) -> OpResult<Colour> {
        match self.fleet() {
            Some(fleet) => fleet.active(),
            None => self.core().active(),
        }
    }

    /// Steers to `to`: a health-gated flip, or a rollback for `why`; on
    /// the whole fleet in fleet mode.
    pub(super) fn switch(
        &self,
        to: Colour,
        why: Option<RollbackReason>,
        forced: bool,
    ) -> OpResult<()> {
        if let Some(fleet) = self.fleet() {
            return fleet.switch(to, why.is_some(), forced);
        }
        let kind = match why {
            Some(why) => FlipKind::Rollback(why),
            None => FlipKind::Flip { force: false },
        };
        tokio::task::block_in_place(|| self.core().flip(to, kind)).map(drop)
    }

    /// Gives the deployment's colour the share `weight` of senders: here,
    /// or on every node. The steps check health themselves first.
    pub(super) fn split(&self, d: &Deployment, weight: Weight) -> OpResult<()> {
        let green = match d.colour {
            Colour::Green => weight,
            Colour::Blue => weight.rest(),
        };
        if let Some(fleet) = self.fleet() {
            return fleet.split(green, d.forced);
        }
        let by = ShiftBy::Deployment(d.id.clone());
        tokio::task::block_in_place(|| self.core().set_split(green, by)).map(drop)
    }

    /// Packets steered per colour: here, or summed over the live nodes.
    pub(super) fn packets(&self) -> PerColour<u64> {
        match self.fleet() {
            Some(fleet) => fleet.packets(),
            None => self.core().packets(),
        }
    }

    /// Why `colour` is not healthy: here, or on any live node.
    pub(super) fn problems(&self, colour: Colour) -> Vec<String> {
        match self.fleet() {
            Some(fleet) => fleet.problems(colour),
            None => self.core().health().problems(colour),
        }
    }

    /// `colour`'s backends found down: here, or on any live node.
    pub(super) fn failures(&self, colour: Colour) -> Vec<String> {
        match self.fleet() {
            Some(fleet) => fleet.failures(colour),
            None => self.core().health().failures(colour),
        }
    }

    /// Failed redirects so far: here, or summed over the live nodes.
    pub(super) fn failed_redirects(&self) -> u64 {
        match self.fleet() {
            Some(fleet) => fleet.failed_redirects(),
            None => self.core().failed_redirects(),
        }
    }
}
