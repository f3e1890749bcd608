//! The flip: the health gate, the one map write, and its record in the
//! history, the metrics and `state.json`. A rollback is a flip that is
//! never refused.
use super::{Core, OpError, OpResult, ShiftBy};
use crate::{
    dataplane::Dataplane,
    model::{
        Colour, DesiredState, Event, FlipRecord, FlipRecordKind, FlipReport, RollbackReason,
        ShiftReport, Steering, now_unix_ms,
    },
    store::state::AgentState,
};

/// Why the active colour changes.
#[derive(Clone, Copy)]
pub enum FlipKind {
    /// An operator's flip; refused towards an unhealthy colour unless forced.
    Flip { force: bool },
    /// Back to the previous colour: never refused, it is the way out.
    Rollback(RollbackReason),
    /// The fleet's desired state, applied on this node: never refused
    /// here, the flipping node checked every node first.
    Fleet(FlipRecordKind),
}

impl Core {
    /// Makes `to` the active colour with one map write, unless the
    /// data path is detached or, for an unforced flip, `to` is not healthy;
    /// then records it (history, metrics, `state.json`).
    pub fn flip(&self, to: Colour, kind: FlipKind) -> OpResult<FlipReport> {
        self.check_attached()?;
        let mut dp = self.dp();
        let steering = dp.steering()?;
        let from = steering.active;
        // A flip ends a split too, even onto the colour it started from.
        if from == to && !steering.is_split() {
            return Ok(FlipReport::unchanged(to));
        }
        let problems = self.health.problems(to);
        if let FlipKind::Flip { force: false } = kind
            && !problems.is_empty()
        {
            drop(dp);
            self.history.append(&Event::FlipRefused {
                to,
                problems: problems.clone(),
            });
            return Err(OpError::refused(refusal(to, &problems)));
        }
        let took = dp.set_active(to)?;
        drop(dp);
        let write_ns = took.as_nanos() as u64;
        let label = match kind {
            FlipKind::Flip { .. } => FlipRecordKind::Flip,
            FlipKind::Rollback(_) => FlipRecordKind::Rollback,
            FlipKind::Fleet(kind) => kind,
        };
        if problems.is_empty() {
            log::info!("{label}: {from} -> {to} (map write {write_ns} ns)");
        } else {
            log::warn!(
                "{label}: {from} -> {to} (map write {write_ns} ns) although {to} is not healthy{}: {}",
                if matches!(kind, FlipKind::Flip { force: true }) {
                    ", forced"
                } else {
                    ""
                },
                problems.join("; ")
            );
        }
        self.history.append(&match kind {
            FlipKind::Flip { force } => Event::Flip {
                from,
                to,
                write_ns,
                forced: force && !problems.is_empty(),
                problems,
            },
            FlipKind::Fleet(FlipRecordKind::Flip) => Event::Flip {
                from,
                to,
                write_ns,
                forced: false,
                problems,
            },
            FlipKind::Fleet(FlipRecordKind::Rollback) => Event::Rollback {
                from,
                to,
                write_ns,
                problems,
                reason: Some(RollbackReason::Manual),
            },
            FlipKind::Rollback(reason) => Event::Rollback {
                from,
                to,
                write_ns,
                problems,
                reason: Some(reason),
            },
        });
        match kind {
            FlipKind::Flip { .. } | FlipKind::Fleet(FlipRecordKind::Flip) => {
                self.metrics.flips.inc();
            }
            FlipKind::Rollback(reason) => self.metrics.rollback(reason),
            FlipKind::Fleet(FlipRecordKind::Rollback) => {
                self.metrics.rollback(RollbackReason::Manual)
            }
        }
        let mut state = self.state.lock().expect("poisoned");
        state.split = None;
        state.last_flip = Some(FlipRecord {
            from,
            to,
            at_unix_ms: now_unix_ms(),
            write_ns,
            kind: label,
        });
        // The flip itself happened; only its record is at risk, and the
        // caller must hear it (not only the log).
        let unrecorded = self.store.save(&state).err().map(|e| {
            let why = format!("{}: {e}", self.store.path().display());
            log::warn!("could not record the flip: {why}");
            why
        });
        Ok(FlipReport {
            from,
            to,
            changed: true,
            write_ns,
            fleet: None,
            unrecorded,
        })
    }

    /// Applies the fleet's desired state: the split's key, the backends,
    /// then the colour and split, and records its generation. None when it
    /// is not newer than the one applied: after a partition heals, an old
    /// state never comes back.
    pub fn apply_desired(&self, d: &DesiredState) -> OpResult<Option<ShiftReport>> {
        if d.generation <= self.applied_generation() {
            return Ok(None);
        }
        // The key before any split that uses it.
        if let Some(seed) = d.seed {
            self.set_split_seed(seed)?;
        }
        // The backends first: a flip in the same state then lands on them.
        for o in &d.backends {
            let Some((_, svc)) = self.config.service(&o.service) else {
                log::warn!(
                    "fleet: the desired state puts {} on {} {}, a service this node's config does not have",
                    o.backend,
                    o.service,
                    o.colour
                );
                continue;
            };
            if self.backend(svc, o.colour) != o.backend {
                self.put_backend(&o.service, o.colour, o.backend)?;
                log::info!(
                    "fleet: {} {} backend is now {}",
                    o.service,
                    o.colour,
                    o.backend
                );
            }
        }
        let want = d.steering();
        let report = if want.is_split() {
            self.steer_to(|_| want, ShiftBy::Fleet)?
        } else {
            let from = self.steering()?;
            let r = self.flip(d.colour, FlipKind::Fleet(d.kind))?;
            ShiftReport {
                from,
                to: Steering::plain(r.to),
                changed: r.changed,
                write_ns: r.write_ns,
                fleet: None,
            }
        };
        let mut state = self.state.lock().expect("poisoned");
        state.fleet_generation = d.generation;
        self.store.save(&state)?;
        Ok(Some(report))
    }

    /// The fleet generation this node applied last (0: none).
    pub fn applied_generation(&self) -> u64 {
        self.state.lock().expect("poisoned").fleet_generation
    }

    /// Refuses to act on a data path that is no longer attached: the write
    /// would be acknowledged and steer nothing.
    pub fn check_attached(&self) -> OpResult<()> {
        if let Some(why) = self.detached.lock().expect("poisoned").as_ref() {
            return Err(OpError::refused(format!(
                "the data path is detached: {why}. Nothing would steer; restart the agent to attach it again"
            )));
        }
        Ok(())
    }

    /// Back to the colour that was active before the last flip.
    pub fn rollback(&self) -> OpResult<FlipReport> {
        let steering = self.steering()?;
        let active = steering.active;
        // Under a split, the way back is every sender on the colour it
        // started from.
        if steering.is_split() {
            return self.flip(active, FlipKind::Rollback(RollbackReason::Manual));
        }
        let last = self.state.lock().expect("poisoned").last_flip.clone();
        match last {
            Some(rec) if rec.to == active => {
                self.flip(rec.from, FlipKind::Rollback(RollbackReason::Manual))
            }
            Some(rec) => Err(OpError::refused(format!(
                "the last recorded flip went to {} but {active} is active; choose explicitly with `bgctl flip <colour>`",
                rec.to
            ))),
            None => Err(OpError::refused(format!(
                "no flip is recorded, so there is no previous colour; {active} is active. Use `bgctl flip <colour>`"
            ))),
        }
    }
}

/// New maps start on blue. When the agent made them afresh (the first
/// start, or its pins were gone: the interface was recreated, or a
/// teardown) while its state records another colour or a split, that
/// comes back, with a history event; nothing is guessed without a record.
pub(super) fn restore_colour(
    dp: &mut Dataplane,
    state: &AgentState,
) -> anyhow::Result<Option<Event>> {
    if !dp.fresh_maps {
        return Ok(None);
    }
    let split = state.split.filter(|s| s.is_split());
    let (want, what) = match (split, state.last_flip.as_ref()) {
        (Some(s), _) => (s, format!("the split {s} is on record")),
        (None, Some(last)) => (
            Steering::plain(last.to),
            format!(
                "the last {} ({} -> {}) is on record",
                last.kind, last.from, last.to
            ),
        ),
        (None, None) => return Ok(None),
    };
    if dp.steering()? == want {
        return Ok(None);
    }
    dp.set_steering(want)?;
    log::warn!(
        "{}: the pinned maps were made afresh, so {want} comes back: {what} in the state directory",
        dp.iface,
    );
    Ok(Some(Event::ColourRestored {
        colour: want.active,
        reason: format!("the data path's maps were made afresh; {what}"),
    }))
}

/// Why an unforced flip to `to` is refused (also `--dry-run`'s answer).
pub(super) fn refusal(to: Colour, problems: &[String]) -> String {
    format!(
        "refusing to flip to {to}: {}. Fix the backend, or flip anyway with --force",
        problems.join("; ")
    )
}
