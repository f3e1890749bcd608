//! What a flip or rollback is, as data: the one type for a rollback's
//! reason (history, state, metrics and the controller all use it), and
//! the record of the last flip.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::Colour;

/// Why a rollback happened. Its `as_str` is the history's `reason` and the
/// label of `bluegreen_rollbacks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackReason {
    /// `bgctl rollback` or `POST /api/rollback`.
    Manual,
    /// A backend of the new colour failed during a deployment's bake.
    Health,
    /// Redirects to the new colour failed during a bake.
    RedirectErrors,
    /// The operator aborted a deployment after its switch (or during its
    /// steps).
    Abort,
    /// The agent restarted (or a fleet's controller was lost) during a
    /// progressive deployment's steps: green's senders went back to blue.
    Interrupted,
}

impl RollbackReason {
    pub const ALL: [RollbackReason; 5] = [
        RollbackReason::Manual,
        RollbackReason::Health,
        RollbackReason::RedirectErrors,
        RollbackReason::Abort,
        RollbackReason::Interrupted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RollbackReason::Manual => "manual",
            RollbackReason::Health => "health",
            RollbackReason::RedirectErrors => "redirect-errors",
            RollbackReason::Abort => "abort",
            RollbackReason::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a recorded colour change was a flip or a rollback
/// (`state.json`'s `last_flip.kind`: "flip" or "rollback").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlipRecordKind {
    Flip,
    Rollback,
}

impl fmt::Display for FlipRecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlipRecordKind::Flip => "flip",
            FlipRecordKind::Rollback => "rollback",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serialized names are the ones files and metrics already carry.
    #[test]
    fn names_match_the_wire() {
        for r in RollbackReason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<RollbackReason>(&json).unwrap(), r);
        }
        assert_eq!(
            serde_json::from_str::<FlipRecordKind>("\"rollback\"").unwrap(),
            FlipRecordKind::Rollback
        );
        assert_eq!(FlipRecordKind::Flip.to_string(), "flip");
        assert!(serde_json::from_str::<RollbackReason>("\"redirect_errors\"").is_err());
    }
}

/// The last flip, as `state.json` keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlipRecord {
    pub from: Colour,
    pub to: Colour,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub write_ns: u64,
    pub kind: FlipRecordKind,
}
