//! `bgctl drain`: waits for a colour's TCP connections to close, with a
//! line of progress each second.
use std::{path::Path, time::Duration};

use thiserror::Error;

use super::client::request;
use crate::{
    api::protocol::{Request, Response},
    model::Colour,
};

/// `drain` ended because its timeout passed (exit code 4).
#[derive(Debug, Error)]
#[error("timed out after {waited_s} s: {colour} still holds {live} live connection(s)")]
pub struct DrainTimedOut {
    pub colour: Colour,
    pub live: u64,
    pub waited_s: u64,
}

/// Waits until `colour` holds no live TCP connections, printing a line of
/// progress each second.
pub fn drain(socket: &Path, colour: Colour, timeout: Duration, json: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let Response::Status(s) = request(socket, &Request::Status)? else {
            anyhow::bail!("the agent answered status with something else");
        };
        let live = *s.tcp.live_connections.get(colour);
        let waited = started.elapsed().as_secs();
        if json {
            println!(
                "{}",
                serde_json::json!({"colour": colour, "live_connections": live, "elapsed_s": waited, "active": s.active})
            );
        } else {
            let note = if s.active == colour {
                " (it is the active colour: new connections keep arriving)"
            } else {
                ""
            };
            println!("draining {colour}: {live} live connection(s), {waited}s elapsed{note}");
        }
        if live == 0 {
            if !json {
                println!("{colour} is drained: no live connections");
            }
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(DrainTimedOut {
                colour,
                live,
                waited_s: waited,
            }
            .into());
        }
        std::thread::sleep(Duration::from_secs(1).min(timeout.saturating_sub(started.elapsed())));
    }
}
