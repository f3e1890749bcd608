//! The control socket protocol: one JSON request per line, one JSON response
//! per line. The CLI and any script speak it; the socket is mode 0600.
use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    config::Protocol,
    dataplane::{AttachMode, Traffic},
    model::Colour,
    state::FlipRecord,
};

/// Default control socket path; `--socket` or `BGCTL_SOCKET` overrides it.
pub const DEFAULT_SOCKET: &str = "/run/bluegreen/agent.sock";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Flip {
        colour: Colour,
        /// Flip even when the colour is not healthy (logged and recorded).
        #[serde(default)]
        force: bool,
    },
    Rollback,
    /// The last `limit` history entries, oldest first.
    History {
        limit: usize,
    },
    /// Start a deployment onto the idle colour.
    Deploy {
        colour: Colour,
        #[serde(default)]
        version: Option<String>,
        /// Backends to put in place first: (service name, address).
        #[serde(default)]
        backends: Vec<(String, SocketAddr)>,
        /// Deploy even though a UDP service's only health evidence is
        /// silence (a `udp` probe).
        #[serde(default)]
        force: bool,
    },
    /// The current (or last) deployment.
    DeployStatus,
    /// Stop the running deployment (after the switch: roll back).
    Abort,
    /// Stop the agent if it serves `iface` (used by teardown). The data path
    /// is not touched by the agent's exit.
    Shutdown {
        iface: String,
    },
    /// The HTTP API's bearer token.
    Token,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Status(Box<StatusReport>),
    Flip(FlipReport),
    History(crate::history::Tail),
    Deployment(Option<crate::deploy::Deployment>),
    Shutdown {
        stopping: bool,
    },
    Token {
        token: String,
    },
    Error {
        message: String,
        /// Older agents send none: a refusal, as they meant.
        #[serde(default)]
        kind: ErrorKind,
    },
}

/// What kind of failure an error answer reports. The HTTP API answers
/// 409, 404 or 500 by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The agent declined: an unhealthy target, a deployment under way, a
    /// detached data path, a value it does not accept.
    #[default]
    Refused,
    /// What the request names does not exist: a service, a deployment.
    NotFound,
    /// The agent tried and could not: a map write, a read of the data path.
    Failed,
}

/// A control operation's error with its kind. Operations return it inside
/// anyhow; anything else that fails them is `ErrorKind::Failed`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn refused(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            kind: ErrorKind::Refused,
            message: message.into(),
        })
    }

    pub fn not_found(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            kind: ErrorKind::NotFound,
            message: message.into(),
        })
    }

    /// The kind of any operation's error.
    pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
        e.downcast_ref::<OpError>()
            .map_or(ErrorKind::Failed, |o| o.kind)
    }
}

/// What a flip or rollback did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlipReport {
    pub from: Colour,
    pub to: Colour,
    /// False when `to` was already active: nothing was written.
    pub changed: bool,
    /// How long the single map write took, in nanoseconds.
    pub write_ns: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PerColour<T> {
    pub blue: T,
    pub green: T,
}

impl<T> PerColour<T> {
    pub fn get(&self, c: Colour) -> &T {
        match c {
            Colour::Blue => &self.blue,
            Colour::Green => &self.green,
        }
    }
    pub fn get_mut(&mut self, c: Colour) -> &mut T {
        match c {
            Colour::Blue => &mut self.blue,
            Colour::Green => &mut self.green,
        }
    }
}

/// Totals and rates of one colour across all services.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ColourRate {
    pub packets: u64,
    pub bytes: u64,
    /// Packets per second over the agent's last one-second sample.
    pub pps: f64,
    /// Bits per second over the same sample.
    pub bps: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServiceReport {
    pub name: String,
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub blue: SocketAddr,
    pub green: SocketAddr,
    pub traffic: PerColour<Traffic>,
    /// Probe state of each backend: state, last latency and error, history.
    pub health: PerColour<crate::health::BackendHealth>,
    /// What this service's probe can and cannot tell, when that matters
    /// (a `udp` probe, whose only evidence is silence).
    #[serde(default)]
    pub probe_note: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: AttachMode,
    pub agent_pid: u32,
    pub agent_version: String,
    pub uptime_s: u64,
    pub active: Colour,
    pub last_flip: Option<FlipRecord>,
    pub services: Vec<ServiceReport>,
    pub colours: PerColour<ColourRate>,
    /// Per colour: why it is not healthy (empty when every backend is up).
    pub health_problems: PerColour<Vec<String>>,
    /// Data-path counters: passes by reason, TX, redirects, failed redirects.
    pub counters: BTreeMap<String, u64>,
    /// Counters that cannot count on this host, and why: their value in
    /// `counters` means nothing.
    #[serde(default)]
    pub unavailable: BTreeMap<String, String>,
    /// Why the data path is no longer attached (its pins were removed, or
    /// its interface went away); None while it steers.
    #[serde(default)]
    pub detached: Option<String>,
    pub tcp: TcpStatus,
}

/// TCP connections the flow table holds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TcpStatus {
    /// Open flows per colour whose client sent a segment within the idle timeout.
    pub live_connections: PerColour<u64>,
    pub idle_timeout_s: u64,
    pub flow_table_size: u32,
    /// Entries of the table of handshakes in progress and flows on probation.
    #[serde(default)]
    pub pending_table_size: u32,
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "udp" => Ok(Protocol::Udp),
            "tcp" => Ok(Protocol::Tcp),
            other => Err(serde::de::Error::custom(format!(
                "unknown protocol {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The wire format is a contract with scripts: check it literally.
    #[test]
    fn requests_have_a_stable_wire_format() {
        let flip = serde_json::to_string(&Request::Flip {
            colour: Colour::Green,
            force: false,
        })
        .unwrap();
        assert_eq!(flip, r#"{"op":"flip","colour":"green","force":false}"#);
        let parsed: Request = serde_json::from_str(r#"{"op":"flip","colour":"blue"}"#).unwrap();
        assert!(
            matches!(
                parsed,
                Request::Flip {
                    colour: Colour::Blue,
                    force: false
                }
            ),
            "force defaults to false"
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        let parsed: Request = serde_json::from_str(r#"{"op":"rollback"}"#).unwrap();
        assert!(matches!(parsed, Request::Rollback));
        assert!(serde_json::from_str::<Request>(r#"{"op":"flip","colour":"red"}"#).is_err());
    }

    #[test]
    fn flip_response_round_trips() {
        let r = Response::Flip(FlipReport {
            from: Colour::Blue,
            to: Colour::Green,
            changed: true,
            write_ns: 1500,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"flip":{"from":"blue","to":"green","changed":true,"write_ns":1500}}"#
        );
    }
}
