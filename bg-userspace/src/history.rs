//! The event history: one JSON object per line in `history.jsonl` in the
//! agent's state directory. Flips, rollbacks and probe state changes are
//! appended as they happen; the file survives restarts.
use std::{
    io::{BufRead, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use crate::{colour::Colour, health::BackendState, state::now_unix_ms};

pub const HISTORY_FILE: &str = "history.jsonl";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Flip {
        from: Colour,
        to: Colour,
        write_ns: u64,
        /// Health gating was overridden with --force.
        forced: bool,
        /// Problems of the target colour at the time (empty when healthy).
        #[serde(default)]
        problems: Vec<String>,
    },
    Rollback {
        from: Colour,
        to: Colour,
        write_ns: u64,
        #[serde(default)]
        problems: Vec<String>,
        /// Why: `manual` (bgctl rollback), `health` or `redirect-errors`
        /// (a deployment's bake), `abort` (aborted after the switch).
        #[serde(default)]
        reason: Option<String>,
    },
    /// A flip was refused because the target colour was not healthy.
    FlipRefused {
        to: Colour,
        problems: Vec<String>,
    },
    Probe {
        service: String,
        colour: Colour,
        backend: SocketAddr,
        state: BackendState,
        error: Option<String>,
    },
    AgentStarted {
        version: String,
        active: Colour,
    },
    /// A deployment entered a phase.
    Deploy {
        id: String,
        colour: Colour,
        version: Option<String>,
        phase: crate::deploy::Phase,
        reason: Option<String>,
    },
}

/// One line of the history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at_unix_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

pub struct History {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    /// Every appended entry, for live views (the dashboard's event stream).
    live: tokio::sync::broadcast::Sender<Entry>,
}

impl History {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let path = state_dir.join(HISTORY_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Self {
            path,
            file: Mutex::new(Some(file)),
            live: tokio::sync::broadcast::channel(256).0,
        })
    }

    /// Entries appended from now on. A receiver that falls more than 256
    /// behind skips ahead (and is told how many it missed).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Entry> {
        self.live.subscribe()
    }

    /// Appends an event. A failed write is logged, never fatal: the history
    /// records what happened, it does not decide it.
    pub fn append(&self, event: &Event) {
        let entry = Entry {
            at_unix_ms: now_unix_ms(),
            event: event.clone(),
        };
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(entry);
        line.push(b'\n');
        let mut file = self.file.lock().expect("poisoned");
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(&line)
        {
            log::warn!("{}: cannot append to the history: {e}", self.path.display());
        }
    }

    /// The last `limit` entries, oldest first. Lines that do not parse
    /// (a torn write after a crash) are skipped.
    pub fn tail(&self, limit: usize) -> Vec<Entry> {
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let mut entries: std::collections::VecDeque<Entry> = std::collections::VecDeque::new();
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                entries.push_back(e);
                if entries.len() > limit {
                    entries.pop_front();
                }
            }
        }
        entries.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_append_survive_reopen_and_skip_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        h.append(&Event::AgentStarted {
            version: "0.1.0".into(),
            active: Colour::Blue,
        });
        h.append(&Event::Flip {
            from: Colour::Blue,
            to: Colour::Green,
            write_ns: 5,
            forced: true,
            problems: vec!["x down".into()],
        });
        drop(h);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(HISTORY_FILE))
            .unwrap();
        f.write_all(b"{\"at_unix_ms\":1,\"event\":\"fl").unwrap();
        let h = History::open(dir.path()).unwrap();
        let all = h.tail(10);
        assert_eq!(all.len(), 2);
        assert!(matches!(all[1].event, Event::Flip { forced: true, .. }));
        assert_eq!(h.tail(1).len(), 1);
        let text = std::fs::read_to_string(dir.path().join(HISTORY_FILE)).unwrap();
        assert!(
            text.lines().nth(1).unwrap().contains("\"event\":\"flip\""),
            "{text}"
        );
    }
}
