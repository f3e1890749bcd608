//! What `bgctl reload` (or SIGHUP) found in the config file.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The file re-read.
    pub config: String,
    /// What differs from the running config, one line each; empty: nothing.
    pub changes: Vec<String>,
    /// The agent re-executes itself with the file (false: nothing changed).
    pub applying: bool,
}
