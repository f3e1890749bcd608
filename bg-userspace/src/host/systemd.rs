//! The service manager's notifications (sd_notify(3)): READY once the data
//! path is attached and its maps filled, RELOADING before the agent
//! re-executes itself with a new config, STOPPING, and the watchdog. Without
//! NOTIFY_SOCKET (not under systemd) each is a no-op.
use std::time::Duration;

use sd_notify::NotifyState;

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// systemd waits for the next READY (the re-executed agent's); with
/// `Type=notify-reload` it also needs the time the reload began.
pub fn reloading() {
    let usec = format!("MONOTONIC_USEC={}", monotonic_usec());
    send(&[
        NotifyState::Reloading,
        NotifyState::Custom(&usec),
        NotifyState::Status("reloading the config"),
    ]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to tell the watchdog the agent lives: half its timeout, as
/// sd_watchdog_enabled(3) advises; None when no watchdog is set.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

fn send(states: &[NotifyState<'_>]) {
    // The environment stays: a re-executed agent notifies again.
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("sd_notify to the service manager failed: {e}");
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}
