//! Plain data shared by every layer: colours, flips and rollbacks. No I/O,
//! and nothing from the rest of the crate.
pub mod colour;
pub mod flip;

pub use colour::Colour;
pub use flip::{FlipRecordKind, RollbackReason};
