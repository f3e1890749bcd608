//! The shift (issue 14): new senders split between the colours by a keyed
//! hash of their source address. Health gated like a flip, one map write,
//! recorded in the history, the metrics and `state.json`.
use super::{Core, OpError, OpResult};
use crate::{
    dataplane::Dataplane,
    model::{
        Colour, Event, FlipRecord, FlipRecordKind, ShiftReport, Steering, Weight, now_unix_ms,
    },
    store::state::AgentState,
};

/// Who shifts, which decides whether the health gate may refuse it.
#[derive(Clone, Debug)]
pub enum ShiftBy {
    /// `bgctl shift`: refused towards an unhealthy colour unless forced.
    Operator { force: bool },
    /// A deployment's step, gated by the controller itself; or its way
    /// back to weight 0, which is never refused.
    Deployment(String),
    /// The fleet's desired state: the shifting node checked every node.
    Fleet,
}

impl ShiftBy {
    fn label(&self) -> String {
        match self {
            ShiftBy::Operator { .. } => "operator".to_owned(),
            ShiftBy::Deployment(id) => format!("deployment {id}"),
            ShiftBy::Fleet => "fleet".to_owned(),
        }
    }
}

impl Core {
    /// The active colour and the split, as the data path sees them.
    pub fn steering(&self) -> OpResult<Steering> {
        Ok(self.dp().steering()?)
    }

    /// Gives `colour` the share `weight` of new senders, keeping the
    /// active colour the split started from. A share of 100 % (or 0 %)
    /// ends the split on one colour, as a flip does. UDP senders move at
    /// once; TCP connections keep the colour they opened on.
    pub fn shift(&self, colour: Colour, weight: Weight, by: ShiftBy) -> OpResult<ShiftReport> {
        self.set_split(green_share(colour, weight), by)
    }

    /// Sets green's share of new senders (see `shift`).
    pub fn set_split(&self, green: Weight, by: ShiftBy) -> OpResult<ShiftReport> {
        self.steer_to(|from| Steering::split(from.active, green), by)
    }

    /// Steers by what `to` makes of the current steering, in one write.
    pub(super) fn steer_to(
        &self,
        to: impl FnOnce(Steering) -> Steering,
        by: ShiftBy,
    ) -> OpResult<ShiftReport> {
        self.check_attached()?;
        let mut dp = self.dp();
        let from = dp.steering()?;
        let to = to(from);
        if from == to {
            return Ok(ShiftReport::unchanged(to));
        }
        // The colour that gains senders must be able to take them.
        let rising = from.gainer(to);
        let problems = self.health.problems(rising);
        let forced = matches!(by, ShiftBy::Operator { force: true }) && !problems.is_empty();
        if let ShiftBy::Operator { force: false } = by
            && !problems.is_empty()
        {
            drop(dp);
            self.history.append(&Event::FlipRefused {
                to: rising,
                problems: problems.clone(),
            });
            return Err(OpError::refused(refusal(rising, from, to, &problems)));
        }
        let took = dp.set_steering(to)?;
        drop(dp);
        let write_ns = took.as_nanos() as u64;
        if problems.is_empty() {
            log::info!("shift: {from} -> {to} (map write {write_ns} ns)");
        } else {
            log::warn!(
                "shift: {from} -> {to} (map write {write_ns} ns) although {rising} is not healthy: {}",
                problems.join("; ")
            );
        }
        self.history.append(&Event::Shift {
            from,
            to,
            write_ns,
            forced,
            problems,
            by: by.label(),
        });
        self.metrics.shifts.inc();
        let mut state = self.state.lock().expect("poisoned");
        state.split = to.is_split().then_some(to);
        // A split that ends on the other colour is a flip to it: a
        // rollback then knows where to go back to.
        if !to.is_split() && to.active != from.active {
            state.last_flip = Some(FlipRecord {
                from: from.active,
                to: to.active,
                at_unix_ms: now_unix_ms(),
                write_ns,
                kind: FlipRecordKind::Flip,
            });
        }
        if let Err(e) = self.store.save(&state) {
            log::warn!("could not record the shift: {e}");
        }
        Ok(ShiftReport {
            from,
            to,
            changed: true,
            write_ns,
            fleet: None,
        })
    }

    /// The key of the split's hash.
    pub fn split_seed(&self) -> OpResult<u32> {
        Ok(self.dp().split_seed()?)
    }

    /// Makes `seed` the split's key (a fleet's desired state carries one
    /// for every node), recorded in `state.json`.
    pub fn set_split_seed(&self, seed: u32) -> OpResult<()> {
        let mut dp = self.dp();
        if dp.split_seed()? == seed {
            return Ok(());
        }
        dp.set_split_seed(seed)?;
        drop(dp);
        log::info!("split seed is now {seed:#010x}");
        let mut state = self.state.lock().expect("poisoned");
        state.split_seed = Some(seed);
        self.store.save(&state)?;
        Ok(())
    }
}

/// The split's key at start: the one on record, else the one the maps
/// hold (a state directory lost while the maps stayed), else a new random
/// one. Written to the maps before any split can use it.
pub(super) fn settle_seed(dp: &mut Dataplane, state: &mut AgentState) -> anyhow::Result<()> {
    let seed = match state.split_seed {
        Some(seed) => seed,
        None => match dp.split_seed()? {
            0 => random_seed(),
            held => held,
        },
    };
    state.split_seed = Some(seed);
    if dp.split_seed()? != seed {
        dp.set_split_seed(seed)?;
    }
    Ok(())
}

/// A random u32 from the standard library's per-process random keys.
fn random_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_unix_ms());
    (h.finish() as u32).max(1)
}

/// Green's share when `colour` is to get `weight`.
pub(super) fn green_share(colour: Colour, weight: Weight) -> Weight {
    match colour {
        Colour::Green => weight,
        Colour::Blue => weight.rest(),
    }
}

/// Why an unforced shift towards an unhealthy `rising` is refused (also
/// `--dry-run`'s answer).
pub(super) fn refusal(rising: Colour, from: Steering, to: Steering, problems: &[String]) -> String {
    format!(
        "refusing to shift more senders to {rising} ({from} -> {to}): {}. Fix the backend, or shift anyway with --force",
        problems.join("; ")
    )
}
