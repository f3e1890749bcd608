//! What bluegreen speaks to backends itself, for probes and the deployment
//! gate: TLS (RFC 5425) and RELP clients, and UDP sockets.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub mod icmp_errors;
pub mod relp;
pub mod tls;

/// An ephemeral local address of `peer`'s family, to bind a socket that
/// talks to it.
pub fn any_port_for(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    }
}
