//! `kind = "udp"`: send a datagram over a connected socket, then listen
//! briefly: the kernel reports an ICMP port-unreachable as ECONNREFUSED.
//! Silence means nothing refused it, which is all UDP can tell.
use std::time::Duration;

use serde::Serialize;

use super::{Kind, ProbeError, Settings, Target};
use crate::{model::FieldProblem, transport};

/// The syslog message a tagged UDP probe sends (user.debug, tagged so
/// collectors can drop it).
pub const UDP_PROBE_MESSAGE: &[u8] = b"<15>bluegreen-probe: health probe";

/// The datagram is empty by default: rsyslog discards an empty datagram
/// without writing anything, so the probe leaves no line in the store it
/// guards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Udp {
    pub payload: UdpPayload,
}

/// What a `udp` probe sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpPayload {
    /// An empty datagram: collectors discard it without a trace.
    #[default]
    Empty,
    /// A syslog line tagged `bluegreen-probe` (user.debug), for collectors
    /// that must see a message; drop it by its tag.
    Tagged,
}

impl Kind for Udp {
    const NAME: &'static str = "udp";
    const FIELDS: &'static [&'static str] = &["udp_payload"];

    fn parse(s: &Settings<'_>) -> Result<Self, FieldProblem> {
        let payload = match s.raw.udp_payload.as_deref() {
            None | Some("empty") => UdpPayload::Empty,
            Some("tagged") => UdpPayload::Tagged,
            Some(other) => {
                return Err(FieldProblem::new(
                    s.field("udp_payload"),
                    other,
                    "unknown udp probe payload",
                    "\"empty\" (discarded by collectors without a trace) or \"tagged\" (a syslog line tagged bluegreen-probe)",
                ));
            }
        };
        Ok(Self { payload })
    }

    async fn run(&self, t: &Target<'_>) -> Result<(), ProbeError> {
        let socket = tokio::net::UdpSocket::bind(transport::any_port_for(t.addr)).await?;
        socket.connect(t.addr).await?;
        socket
            .send(match self.payload {
                UdpPayload::Empty => &[][..],
                UdpPayload::Tagged => UDP_PROBE_MESSAGE,
            })
            .await?;
        let mut buf = [0u8; 64];
        let wait = (t.timeout / 2).min(Duration::from_millis(200));
        match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(ProbeError::Backend("port unreachable (ICMP)".into()))
            }
            Ok(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }
}
