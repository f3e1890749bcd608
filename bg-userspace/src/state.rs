//! Agent state that is not in the maps: the record of the last flip. It
//! lives in a small JSON file in the state directory so it survives restarts.
use std::{
    io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::colour::Colour;

/// Default parent of per-interface state directories.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/bluegreen";
const STATE_FILE: &str = "state.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlipRecord {
    pub from: Colour,
    pub to: Colour,
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub write_ns: u64,
    /// "flip" or "rollback".
    pub kind: String,
}

/// A backend a deployment put in place of the config file's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendOverride {
    pub service: String,
    pub colour: Colour,
    pub backend: std::net::SocketAddr,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    pub last_flip: Option<FlipRecord>,
    /// Kept across restarts, so a restart never reverts a deployed backend.
    #[serde(default)]
    pub backend_overrides: Vec<BackendOverride>,
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

    /// Loads the state; a missing file is a fresh state, a corrupt one is
    /// reported and replaced (the maps, not this file, hold the colour).
    pub fn load(&self) -> AgentState {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                log::warn!(
                    "{}: unreadable ({e}); starting with empty state",
                    self.path.display()
                );
                AgentState::default()
            }),
            Err(_) => AgentState::default(),
        }
    }

    /// Writes atomically: a temporary file renamed over the old one.
    pub fn save(&self, state: &AgentState) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path()).unwrap();
        assert_eq!(store.load(), AgentState::default());
        let s = AgentState {
            backend_overrides: vec![],
            last_flip: Some(FlipRecord {
                from: Colour::Blue,
                to: Colour::Green,
                at_unix_ms: 5,
                write_ns: 7,
                kind: "flip".into(),
            }),
        };
        store.save(&s).unwrap();
        assert_eq!(StateStore::new(dir.path()).unwrap().load(), s);
        std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        assert_eq!(store.load(), AgentState::default());
    }
}
