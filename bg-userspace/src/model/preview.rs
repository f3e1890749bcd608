//! What `--dry-run` found for a flip, a shift or a deploy: what it would do
//! and the checks it would pass. Nothing was written, nothing recorded.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The command, e.g. "flip blue -> green".
    pub action: String,
    /// False when the command would change nothing.
    pub changes: bool,
    /// The health gate's findings on the colour that would gain senders;
    /// empty: healthy. Present only when `--force` would override them
    /// (a deploy's wait-healthy phase waits for them to clear).
    pub problems: Vec<String>,
    /// `--force` given and the gate failed: it would go ahead anyway.
    pub forced: bool,
    /// A deploy's phases, in order, as the config and the flags set them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
}
