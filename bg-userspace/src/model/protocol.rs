//! What a service speaks: its transport (`Protocol`, what the data path
//! steers) and, above it, what its backends speak (`AppProtocol`, what
//! probes and the deployment gate speak to them).
use std::fmt;

use serde::{Deserialize, Serialize};

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    pub const fn ip_proto(self) -> u8 {
        match self {
            Self::Udp => bg_common::PROTO_UDP,
            Self::Tcp => bg_common::PROTO_TCP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

/// Protocols this build can steer.
pub const STEERED_PROTOCOLS: &[Protocol] = &[Protocol::Udp, Protocol::Tcp];

/// What a TCP service's backends speak on top of TCP: how probes and the
/// deployment gate talk to them (the data path steers every kind at L4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// Plain syslog: RFC 6587 framing over TCP, or datagrams over UDP.
    Syslog,
    /// RELP (rsyslog's imrelp), over TCP or, with `[service.tls]`, TLS.
    Relp,
    /// Syslog over TLS (RFC 5425).
    Tls,
}

impl AppProtocol {
    pub const ACCEPTED: &str = "\"syslog\", \"relp\" or \"tls\"";

    /// The default for a service: TLS on TCP 6514 (RFC 5425's port),
    /// plain syslog elsewhere.
    pub fn default_for(protocol: Protocol, port: u16) -> Self {
        if protocol == Protocol::Tcp && port == 6514 {
            Self::Tls
        } else {
            Self::Syslog
        }
    }
}

impl fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syslog => "syslog",
            Self::Relp => "relp",
            Self::Tls => "tls",
        })
    }
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
