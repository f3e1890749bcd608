//! `--dry-run` for flip and shift: the same health gate and the same
//! refusal, without the map write or a history line.
use super::{Core, OpError, OpResult, flip, shift};
use crate::model::{Colour, Preview, Steering, Weight};

impl Core {
    pub fn preview_flip(&self, to: Colour, force: bool) -> OpResult<Preview> {
        self.check_attached()?;
        let from = self.steering()?;
        if from.active == to && !from.is_split() {
            return Ok(unchanged(format!("flip to {to}: {to} is already active")));
        }
        let problems = self.health.problems(to);
        gate(format!("flip {from} -> {to}"), problems, force, |p| {
            flip::refusal(to, p)
        })
    }

    pub fn preview_shift(&self, colour: Colour, weight: Weight, force: bool) -> OpResult<Preview> {
        self.check_attached()?;
        let from = self.steering()?;
        let to = Steering::split(from.active, shift::green_share(colour, weight));
        if from == to {
            return Ok(unchanged(format!(
                "shift to {to}: the split already is that"
            )));
        }
        let rising = from.gainer(to);
        let problems = self.health.problems(rising);
        gate(format!("shift {from} -> {to}"), problems, force, |p| {
            shift::refusal(rising, from, to, p)
        })
    }
}

fn unchanged(action: String) -> Preview {
    Preview {
        action,
        changes: false,
        problems: Vec::new(),
        forced: false,
        plan: Vec::new(),
    }
}

/// Refused as the real command would be, or what it would do.
fn gate(
    action: String,
    problems: Vec<String>,
    force: bool,
    refusal: impl FnOnce(&[String]) -> String,
) -> OpResult<Preview> {
    if !problems.is_empty() && !force {
        return Err(OpError::refused(refusal(&problems)));
    }
    Ok(Preview {
        action,
        changes: true,
        forced: !problems.is_empty(),
        problems,
        plan: Vec::new(),
    })
}
