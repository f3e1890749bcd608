//! How services, backends and addresses are encoded in the maps: network
//! byte order, one 16-byte address for both families, and the `PORTS`
//! array's slots.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use bg_common::{
    Backend, FAMILY_IPV4, FAMILY_IPV6, PORT_ANY_MASK, PORT_HAS_SPECIFIC, ServiceKey, port_index,
};

use crate::config::Service;

/// The `PORTS` slots that a set of (service key, id) needs, with their values.
pub(super) fn port_entries(
    services: impl Iterator<Item = (ServiceKey, u32)>,
) -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    for (key, id) in services {
        let Some(slot) = port_index(key.family, key.proto, u16::from_be(key.port_be)) else {
            continue;
        };
        let value = out.entry(slot).or_insert(0u32);
        if key.addr_be == [0; 4] {
            *value |= (id + 1) & PORT_ANY_MASK;
        } else {
            *value |= PORT_HAS_SPECIFIC;
        }
    }
    out
}

/// Orders keys so they can sit in a BTreeMap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KeyOrd(pub(super) ServiceKey);

impl KeyOrd {
    fn tuple(&self) -> ([u32; 4], u16, u8, u8) {
        (self.0.addr_be, self.0.port_be, self.0.proto, self.0.family)
    }
}

impl PartialOrd for KeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

/// Address words in network byte order, as the maps hold them.
pub fn addr_words(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_IPV4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut w = [0u32; 4];
            for (i, chunk) in o.chunks_exact(4).enumerate() {
                w[i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            (w, FAMILY_IPV6)
        }
    }
}

pub fn service_key(s: &Service) -> ServiceKey {
    let (addr_be, family) = addr_words(s.listen.ip());
    ServiceKey {
        addr_be,
        port_be: s.listen.port().to_be(),
        proto: s.protocol.ip_proto(),
        family,
    }
}

/// The `BACKENDS` entry of a colour whose backend is `addr`, reached by
/// `mode` (`bg_common::mode`).
pub fn backend(addr: SocketAddr, mode: u8) -> Backend {
    let (addr_be, family) = addr_words(addr.ip());
    Backend {
        addr_be,
        port_be: addr.port().to_be(),
        family,
        mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str, port: u16) -> ServiceKey {
        let ip: IpAddr = addr.parse().unwrap();
        let (addr_be, family) = addr_words(ip);
        ServiceKey {
            addr_be,
            port_be: port.to_be(),
            proto: bg_common::PROTO_UDP,
            family,
        }
    }

    #[test]
    fn port_entries_hold_the_any_service_and_the_specific_flag() {
        let entries = port_entries(
            [
                (key("0.0.0.0", 514), 3),
                (key("198.18.0.10", 514), 4),
                (key("::", 514), 0),
                (key("2001:db8::1", 601), 7),
            ]
            .into_iter(),
        );
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[&514], 4 | PORT_HAS_SPECIFIC, "any id 3 stored as 4");
        assert_eq!(entries[&(2 * 65536 + 514)], 1, "v6 any id 0 stored as 1");
        assert_eq!(entries[&(2 * 65536 + 601)], PORT_HAS_SPECIFIC);
    }

    fn bytes_of(b: &Backend) -> [u8; 20] {
        // SAFETY: Backend is repr(C), 20 bytes, no padding (bg_common's test).
        unsafe { std::mem::transmute_copy(b) }
    }

    #[test]
    fn addresses_are_stored_in_network_byte_order() {
        let (w, fam) = addr_words("198.18.1.2".parse().unwrap());
        assert_eq!(fam, FAMILY_IPV4);
        // The bytes in memory are the address octets in order.
        assert_eq!(w[0].to_ne_bytes(), [198, 18, 1, 2]);
        let b = backend(
            "[2001:db8::2]:6514".parse().unwrap(),
            bg_common::mode::DSR_IPIP,
        );
        assert_eq!(b.port_be.to_ne_bytes(), [0x19, 0x72]);
        assert_eq!(b.addr_be[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(b.family, FAMILY_IPV6);
        // The mode sits in the byte older agents left 0, which is NAT.
        assert_eq!(bytes_of(&b)[19], bg_common::mode::DSR_IPIP);
        assert_eq!(bg_common::mode::NAT, 0);
    }
}
