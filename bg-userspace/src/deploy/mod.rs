//! Deployments onto the idle colour: the controller that runs their phases
//! (`controller.rs`), the performance gate before the switch (`gate.rs`),
//! the bake after it, where a failure becomes a rollback (`bake.rs`), and
//! the operator's hooks (`hooks.rs`). In fleet mode it acts through a
//! `FleetScope` (`scope.rs`). It reaches the agent's state only through
//! `Core`'s methods.
use std::time::Duration;

use crate::core::OpError;

pub mod bake;
mod checks;
pub mod controller;
pub mod gate;
pub mod hooks;
mod preview;
pub mod scope;
mod shadow;
pub mod steps;

pub use controller::{Deployer, SavedDeployment};
pub use scope::{FleetScope, Lost};

/// Longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest deployment version label: it goes into the history, hooks'
/// environment and every status.
pub const VERSION_MAX: usize = 128;

/// A version label is a short line of text.
pub fn check_version_label(v: &str) -> Result<(), OpError> {
    if v.is_empty() || v.chars().count() > VERSION_MAX || v.chars().any(char::is_control) {
        return Err(OpError::refused(format!(
            "--version = {:?}: not a usable label; accepted: 1 to {VERSION_MAX} characters, no control characters",
            v.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}
