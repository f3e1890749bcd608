//! Every backend's health, keyed by service and colour, and the watch that
//! announces each change. Flips are gated on it; the deployment
//! controller's bake waits on it.
use std::{collections::BTreeMap, net::SocketAddr, sync::Mutex, time::Duration};

use crate::{
    config::{Config, HealthCheck},
    model::{BackendHealth, BackendState, Colour},
};

/// Every backend's health, keyed by (service name, colour).
pub struct HealthBoard {
    backends: Mutex<BTreeMap<(String, Colour), BackendHealth>>,
    /// Counts state changes and backend replacements. A watch, not a
    /// Notify: a change that lands while the controller is busy between two
    /// waits is still seen by its next wait, so it never falls back on a poll.
    changes: tokio::sync::watch::Sender<u64>,
}

impl HealthBoard {
    pub fn new(config: &Config) -> Self {
        let mut backends = BTreeMap::new();
        for svc in &config.services {
            for (colour, addr) in [(Colour::Blue, svc.blue), (Colour::Green, svc.green)] {
                backends.insert((svc.name.clone(), colour), BackendHealth::new(addr));
            }
        }
        Self {
            backends: Mutex::new(backends),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver whose `changed()` resolves on the next probe state change
    /// or backend replacement after the last one it saw.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn announce_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn get(&self, service: &str, colour: Colour) -> Option<BackendHealth> {
        self.backends
            .lock()
            .expect("poisoned")
            .get(&(service.to_owned(), colour))
            .cloned()
    }

    /// Why `colour` is not healthy: one line per backend that is not up.
    /// Empty when every backend of every service in that colour is up.
    pub fn problems(&self, colour: Colour) -> Vec<String> {
        let board = self.backends.lock().expect("poisoned");
        board
            .iter()
            .filter(|((_, c), h)| *c == colour && h.state != BackendState::Up)
            .map(|((service, _), h)| match h.state {
                BackendState::Down => format!(
                    "{service} backend {} is down ({} consecutive failures: {})",
                    h.backend,
                    h.consecutive_fail,
                    h.last_error.as_deref().unwrap_or("no detail")
                ),
                _ => format!(
                    "{service} backend {} is not up yet ({} of the successes needed{})",
                    h.backend,
                    h.consecutive_ok,
                    h.last_error
                        .as_deref()
                        .map(|e| format!("; last probe: {e}"))
                        .unwrap_or_default()
                ),
            })
            .collect()
    }

    /// The backend a colour of `service` currently points at.
    pub fn backend(&self, service: &str, colour: Colour) -> Option<SocketAddr> {
        self.get(service, colour).map(|h| h.backend)
    }

    /// Points a colour of `service` at a new backend; its health starts over.
    pub fn set_backend(&self, service: &str, colour: Colour, addr: SocketAddr) {
        let mut board = self.backends.lock().expect("poisoned");
        board.insert((service.to_owned(), colour), BackendHealth::new(addr));
        drop(board);
        self.announce_change();
    }

    /// Backends of `colour` that probes found down. Unlike `problems`, a
    /// backend not yet probed (after an agent restart) is no failure.
    pub fn failures(&self, colour: Colour) -> Vec<String> {
        let board = self.backends.lock().expect("poisoned");
        board
            .iter()
            .filter(|((_, c), h)| *c == colour && h.state == BackendState::Down)
            .map(|((service, _), h)| {
                format!(
                    "{service} backend {} is down ({} consecutive failures: {})",
                    h.backend,
                    h.consecutive_fail,
                    h.last_error.as_deref().unwrap_or("no detail")
                )
            })
            .collect()
    }

    /// Up with failures since its last success, down with successes, or
    /// not known yet: HAProxy probes at `fastinter` then.
    pub(super) fn in_transition(&self, service: &str, colour: Colour) -> bool {
        let board = self.backends.lock().expect("poisoned");
        board
            .get(&(service.to_owned(), colour))
            .is_some_and(|h| match h.state {
                BackendState::Unknown => true,
                BackendState::Up => h.consecutive_fail > 0,
                BackendState::Down => h.consecutive_ok > 0,
            })
    }

    pub(super) fn record(
        &self,
        service: &str,
        colour: Colour,
        result: &Result<Duration, String>,
        latency: Duration,
        check: &HealthCheck,
    ) -> Option<(BackendState, BackendHealth)> {
        let mut board = self.backends.lock().expect("poisoned");
        let h = board.get_mut(&(service.to_owned(), colour))?;
        let change = h
            .record(result, latency, check.rise, check.fall)
            .map(|s| (s, h.clone()));
        drop(board);
        if change.is_some() {
            self.announce_change();
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One UDP service "s", with the default health settings.
    fn one_udp_service() -> Config {
        Config::parse(
            std::path::Path::new("t.toml"),
            "[[service]]\nname = \"s\"\nprotocol = \"udp\"\nlisten = \"0.0.0.0:514\"\nblue = \"198.18.1.2:514\"\ngreen = \"198.18.2.2:514\"\n",
        )
        .unwrap()
    }

    #[test]
    fn transitions_are_what_haproxy_probes_at_fastinter() {
        let config = one_udp_service();
        let board = HealthBoard::new(&config);
        let check = config.services[0].health.clone();
        let (ok, bad): (Result<Duration, String>, _) = (Ok(Duration::ZERO), Err("x".to_owned()));
        let d = Duration::ZERO;
        let mut seen = vec![board.in_transition("s", Colour::Blue)];
        for r in [&ok, &ok, &bad, &ok, &bad, &bad, &bad, &ok, &ok] {
            board.record("s", Colour::Blue, r, d, &check);
            seen.push(board.in_transition("s", Colour::Blue));
        }
        // unknown; ok (still unknown, rise 2); up; up with a failure; up
        // again clean; failing; failing; down; down with a success; up.
        assert_eq!(
            seen,
            [
                true, true, false, true, false, true, true, false, true, false
            ]
        );
        assert!(!board.in_transition("nope", Colour::Blue));
    }

    /// The deployment controller wakes on every probe state change, not only
    /// on backend replacements, and a change made before it waits is kept.
    #[test]
    fn every_state_change_is_announced() {
        let config = one_udp_service();
        let board = HealthBoard::new(&config);
        let mut seen = board.subscribe();
        let check = config.services[0].health.clone();
        let (ok, bad): (Result<Duration, String>, _) = (Ok(Duration::ZERO), Err("x".to_owned()));
        let d = Duration::ZERO;
        board.record("s", Colour::Green, &ok, d, &check);
        assert!(!seen.has_changed().unwrap(), "unknown after 1 of rise 2");
        board.record("s", Colour::Green, &ok, d, &check);
        assert!(seen.has_changed().unwrap(), "unknown -> up is announced");
        seen.mark_unchanged();
        for _ in 0..check.fall - 1 {
            board.record("s", Colour::Green, &bad, d, &check);
        }
        assert!(!seen.has_changed().unwrap(), "failures below fall");
        board.record("s", Colour::Green, &bad, d, &check);
        assert!(seen.has_changed().unwrap(), "up -> down is announced");
        seen.mark_unchanged();
        board.set_backend("s", Colour::Green, "198.18.2.3:514".parse().unwrap());
        assert!(seen.has_changed().unwrap(), "a new backend is announced");
    }
}
