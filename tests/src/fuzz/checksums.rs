//! Checksum verification by a parser that is neither ours nor the data
//! path's (etherparse): IPv4 header, UDP and TCP (pseudo-headers included).
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Whether the frame parses as Ethernet / IP / UDP or TCP and all its
/// checksums hold. IPv4 UDP without a checksum (0) holds.
pub fn valid(frame: &[u8]) -> bool {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let (Some(net), Some(transport)) = (p.net, p.transport) else {
        return false;
    };
    match (net, transport) {
        (NetSlice::Ipv4(ip), t) => {
            let h = ip.header();
            if h.header_checksum() != h.to_header().calc_header_checksum() {
                return false;
            }
            let (src, dst) = (h.source(), h.destination());
            match t {
                TransportSlice::Udp(u) => {
                    u.checksum() == 0
                        || u.to_header()
                            .calc_checksum_ipv4_raw(src, dst, u.payload())
                            .is_ok_and(|c| c == u.checksum())
                }
                TransportSlice::Tcp(s) => s
                    .calc_checksum_ipv4(src, dst)
                    .is_ok_and(|c| c == s.checksum()),
                _ => false,
            }
        }
        (NetSlice::Ipv6(ip), t) => {
            let h = ip.header();
            let (src, dst) = (h.source(), h.destination());
            match t {
                TransportSlice::Udp(u) => u
                    .to_header()
                    .calc_checksum_ipv6_raw(src, dst, u.payload())
                    .is_ok_and(|c| c == u.checksum()),
                TransportSlice::Tcp(s) => s
                    .calc_checksum_ipv6(src, dst)
                    .is_ok_and(|c| c == s.checksum()),
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Frame, SYN};

    #[test]
    fn good_frames_hold_and_one_flipped_bit_does_not() {
        let mut tagged = Frame::udp("2001:db8::2", "2001:db8::1", 40000, 514, b"<13>x");
        tagged.vlan = Some((0x8100, 7));
        for f in [
            Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, b"<13>x").build(),
            Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, SYN, b"hello").build(),
            tagged.build(),
        ] {
            assert!(valid(&f));
            // Any bit of the addresses, ports or payload breaks it.
            for at in [f.len() - 1, f.len() - 6, 30] {
                let mut g = f.clone();
                g[at] ^= 0x10;
                assert!(!valid(&g), "byte {at} flipped");
            }
        }
    }
}
