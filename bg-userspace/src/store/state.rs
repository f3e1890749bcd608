//! Agent state that is not in the maps: the record of the last flip and the
//! backends deployments put in place. It lives in `state.json` in the state
//! directory, written durably with its previous copy beside it, so it
//! survives restarts and crashes.
use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

pub use crate::model::BackendOverride;
use crate::model::{FlipRecord, Steering};

/// Default parent of per-interface state directories.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/bluegreen";
const STATE_FILE: &str = "state.json";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    pub last_flip: Option<FlipRecord>,
    /// Kept across restarts, so a restart never reverts a deployed backend.
    #[serde(default)]
    pub backend_overrides: Vec<BackendOverride>,
    /// Fleet mode: the desired state's generation applied last. Kept so a
    /// restart or a healed partition never applies an older one.
    #[serde(default)]
    pub fleet_generation: u64,
    /// The split in force (`bgctl shift`), so maps made afresh get it back;
    /// None while every sender goes to the active colour.
    #[serde(default)]
    pub split: Option<Steering>,
    /// The key of the split's hash, made once and kept: with another key,
    /// senders would change sides at the next split.
    #[serde(default)]
    pub split_seed: Option<u32>,
}

pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            path: dir.join(STATE_FILE),
        })
    }

    /// Where the state is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is a fresh state. A file that does
    /// not parse is an error, never an empty state: it holds the deployed
    /// backends, and forgetting them would send traffic to the config's.
    pub fn load(&self) -> Result<AgentState, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AgentState::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            let prev = crate::store::durable::previous(&self.path);
            let previous = match std::fs::read(&prev)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<AgentState>(&b).map_err(|e| e.to_string()))
            {
                Ok(_) => format!(
                    "{} holds the state before the last change and parses: `mv {} {}` restores it",
                    prev.display(),
                    prev.display(),
                    self.path.display()
                ),
                Err(why) => format!("no usable previous copy ({}: {why})", prev.display()),
            };
            StateError::Corrupt {
                path: self.path.clone(),
                error: e.to_string(),
                previous,
            }
        })
    }

    /// Writes atomically and durably, keeping the previous copy.
    pub fn save(&self, state: &AgentState) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state)?;
        crate::store::durable::write(&self.path, &bytes, 0o600, true)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} does not parse ({error}). It holds the backends deployments put in place and the last flip; starting without it would send traffic to the config's backends, so the agent refuses. {previous}. Or remove the file to start from the config alone"
    )]
    Corrupt {
        path: PathBuf,
        error: String,
        previous: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Colour, FlipRecordKind};

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), AgentState::default());
        let s = AgentState {
            backend_overrides: vec![],
            fleet_generation: 3,
            split: Some(crate::model::Steering::split(
                Colour::Blue,
                crate::model::Weight::new(1000).unwrap(),
            )),
            split_seed: Some(0xdead_beef),
            last_flip: Some(FlipRecord {
                from: Colour::Blue,
                to: Colour::Green,
                at_unix_ms: 5,
                write_ns: 7,
                kind: FlipRecordKind::Flip,
            }),
        };
        store.save(&s).unwrap();
        assert_eq!(StateStore::new(dir.path()).unwrap().load().unwrap(), s);
        // A torn file is refused, naming the previous copy that restores it.
        store.save(&AgentState::default()).unwrap();
        std::fs::write(dir.path().join("state.json"), b"{\"last_flip\": {\"fr").unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(
            e.contains("state.json does not parse") && e.contains("state.json.prev holds"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("state.json.prev")).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("no usable previous copy"), "{e}");
    }
}
