//! What is known about one backend's health: its state, the last probe's
//! latency and error, and a short history. Rise and fall follow HAProxy.
use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::model::now_unix_ms;

/// Probe results kept per backend for the status history.
const HISTORY_LEN: usize = 60;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Not enough probes yet to say.
    Unknown,
    Up,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub latency_us: u64,
}

/// What the board knows about one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub backend: SocketAddr,
    pub state: BackendState,
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    /// Latency of the last probe, successful or not.
    pub last_latency_us: Option<u64>,
    pub last_error: Option<String>,
    pub history: VecDeque<ProbeRecord>,
}

impl BackendHealth {
    pub fn new(backend: SocketAddr) -> Self {
        Self {
            backend,
            state: BackendState::Unknown,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last_latency_us: None,
            last_error: None,
            history: VecDeque::new(),
        }
    }

    /// Records a probe result; returns the new state when it changed.
    /// `rise` consecutive successes make a backend up, `fall` consecutive
    /// failures make it down (HAProxy's meaning).
    pub fn record(
        &mut self,
        result: &Result<Duration, String>,
        latency: Duration,
        rise: u32,
        fall: u32,
    ) -> Option<BackendState> {
        let ok = result.is_ok();
        if ok {
            self.consecutive_ok += 1;
            self.consecutive_fail = 0;
            self.last_error = None;
        } else {
            self.consecutive_fail += 1;
            self.consecutive_ok = 0;
            self.last_error = result.as_ref().err().cloned();
        }
        self.last_latency_us = Some(latency.as_micros() as u64);
        self.history.push_back(ProbeRecord {
            at_unix_ms: now_unix_ms(),
            ok,
            latency_us: latency.as_micros() as u64,
        });
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
        let next = if ok && self.consecutive_ok >= rise {
            BackendState::Up
        } else if !ok && self.consecutive_fail >= fall {
            BackendState::Down
        } else {
            self.state
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "198.18.1.2:514".parse().unwrap()
    }

    #[test]
    fn rise_and_fall_follow_haproxy() {
        let mut h = BackendHealth::new(addr());
        let ok: Result<Duration, String> = Ok(Duration::from_micros(300));
        let bad: Result<Duration, String> = Err("refused".into());
        let d = Duration::from_micros(300);
        assert_eq!(
            h.record(&ok, d, 2, 3),
            None,
            "one success is not yet rise 2"
        );
        assert_eq!(h.record(&ok, d, 2, 3), Some(BackendState::Up));
        assert_eq!(h.record(&bad, d, 2, 3), None);
        assert_eq!(h.record(&bad, d, 2, 3), None);
        assert_eq!(
            h.record(&ok, d, 2, 3),
            None,
            "a success resets the failure run"
        );
        for _ in 0..2 {
            assert_eq!(h.record(&bad, d, 2, 3), None);
        }
        assert_eq!(h.record(&bad, d, 2, 3), Some(BackendState::Down));
        assert_eq!(h.last_error.as_deref(), Some("refused"));
        assert_eq!(h.consecutive_fail, 3);
        assert_eq!(h.last_latency_us, Some(300));
    }

    #[test]
    fn history_is_bounded() {
        let mut h = BackendHealth::new(addr());
        for _ in 0..200 {
            h.record(&Ok(Duration::ZERO), Duration::ZERO, 1, 1);
        }
        assert_eq!(h.history.len(), HISTORY_LEN);
    }
}
