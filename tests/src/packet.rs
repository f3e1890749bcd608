//! Frame builders for tests and benchmarks. Checksums here are computed in
//! full (RFC 1071) and independently of the data path's incremental updates.
use std::net::IpAddr;

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// RFC 1071 Internet checksum over the concatenation of `parts`.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u64::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u64::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A UDP (or other L4) datagram in an Ethernet frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub vlan: Option<(u16, u16)>, // (TPID, TCI)
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// IPv4 options (length a multiple of 4, at most 40).
    pub ipv4_options: Vec<u8>,
    /// IPv4 only: send UDP checksum 0 ("no checksum").
    pub no_udp_checksum: bool,
    pub ttl: u8,
    /// IPv4 TOS, or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 flags+fragment offset field.
    pub frag: u16,
    /// TCP only: flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10) and options.
    pub tcp_flags: u8,
    pub tcp_options: Vec<u8>,
    /// TCP only: sequence and acknowledgement numbers.
    pub seq: u32,
    pub ack: u32,
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

impl Frame {
    pub fn udp(src: &str, dst: &str, sport: u16, dport: u16, payload: &[u8]) -> Self {
        Self {
            vlan: None,
            src: src.parse().expect("src address"),
            dst: dst.parse().expect("dst address"),
            proto: 17,
            sport,
            dport,
            payload: payload.to_vec(),
            ipv4_options: Vec::new(),
            no_udp_checksum: false,
            ttl: 64,
            tos: 0,
            frag: 0x4000, // DF
            tcp_flags: 0,
            tcp_options: Vec::new(),
            seq: 0x0102_0304,
            ack: 0x0a0b_0c0d,
        }
    }

    pub fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Self {
        Self {
            proto: 6,
            tcp_flags: flags,
            ..Self::udp(src, dst, sport, dport, payload)
        }
    }

    /// The L4 header and payload, checksum field zero.
    fn l4(&self) -> Vec<u8> {
        let mut l4 = Vec::with_capacity(60 + self.payload.len());
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            let hlen = 20 + self.tcp_options.len();
            l4.extend_from_slice(&self.seq.to_be_bytes());
            l4.extend_from_slice(&self.ack.to_be_bytes());
            l4.push(((hlen / 4) as u8) << 4);
            l4.push(self.tcp_flags);
            l4.extend_from_slice(&65535u16.to_be_bytes()); // window
            l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            l4.extend_from_slice(&self.tcp_options);
        } else {
            l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(&self.payload);
        l4
    }

    fn check_off(&self) -> usize {
        if self.proto == 6 { 16 } else { 6 }
    }

    /// Offset of the L3 header.
    pub fn l3_offset(&self) -> usize {
        14 + if self.vlan.is_some() { 4 } else { 0 }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128 + self.payload.len());
        f.extend_from_slice(&DST_MAC);
        f.extend_from_slice(&SRC_MAC);
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        if let Some((tpid, tci)) = self.vlan {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        let mut l4 = self.l4();
        let l4_len = l4.len();
        let co = self.check_off();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.ipv4_options.len();
                let mut ip = Vec::with_capacity(ihl);
                ip.push(0x40 | (ihl / 4) as u8);
                ip.push(self.tos);
                ip.extend_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
                ip.extend_from_slice(&0x1234u16.to_be_bytes());
                ip.extend_from_slice(&self.frag.to_be_bytes());
                ip.push(self.ttl);
                ip.push(self.proto);
                ip.extend_from_slice(&[0, 0]);
                ip.extend_from_slice(&s.octets());
                ip.extend_from_slice(&d.octets());
                ip.extend_from_slice(&self.ipv4_options);
                let c = internet_checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                if self.proto == 6 || (self.proto == 17 && !self.no_udp_checksum) {
                    let pseudo = [
                        &s.octets()[..],
                        &d.octets()[..],
                        &[0, self.proto],
                        &(l4_len as u16).to_be_bytes(),
                    ]
                    .concat();
                    let mut c = internet_checksum(&[&pseudo, &l4]);
                    if c == 0 && self.proto == 17 {
                        c = 0xffff;
                    }
                    l4[co..co + 2].copy_from_slice(&c.to_be_bytes());
                }
                f.extend_from_slice(&ip);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x60 | self.tos >> 4, self.tos << 4, 0, 0]);
                f.extend_from_slice(&(l4_len as u16).to_be_bytes());
                f.push(self.proto);
                f.push(self.ttl);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                if self.proto == 17 || self.proto == 6 {
                    let pseudo = [
                        &s.octets()[..],
                        &d.octets()[..],
                        &(l4_len as u32).to_be_bytes(),
                        &[0, 0, 0, self.proto],
                    ]
                    .concat();
                    let mut c = internet_checksum(&[&pseudo, &l4]);
                    if c == 0 && self.proto == 17 {
                        c = 0xffff;
                    }
                    l4[co..co + 2].copy_from_slice(&c.to_be_bytes());
                }
            }
            _ => panic!("mixed address families"),
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// Verifies the IPv4 header checksum of a frame in full.
pub fn ipv4_header_checksum_ok(frame: &[u8], l3: usize) -> bool {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    internet_checksum(&[&frame[l3..l3 + ihl]]) == 0
}

/// Verifies the UDP or TCP checksum (pseudo-header included) of a frame in
/// full. IPv4 UDP with checksum 0 counts as valid ("no checksum").
pub fn l4_checksum_ok(frame: &[u8], l3: usize) -> bool {
    let v4 = frame[l3] >> 4 == 4;
    let (proto, l4_off, l4_len) = if v4 {
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        let tot = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        (frame[l3 + 9], l3 + ihl, tot - ihl)
    } else {
        let plen = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
        (frame[l3 + 6], l3 + 40, plen)
    };
    let l4 = &frame[l4_off..l4_off + l4_len];
    if v4 && proto == 17 && l4[6..8] == [0, 0] {
        return true;
    }
    let pseudo = if v4 {
        [
            &frame[l3 + 12..l3 + 20],
            &[0, proto],
            &(l4_len as u16).to_be_bytes()[..],
        ]
        .concat()
    } else {
        [
            &frame[l3 + 8..l3 + 40],
            &(l4_len as u32).to_be_bytes(),
            &[0, 0, 0, proto],
        ]
        .concat()
    };
    internet_checksum(&[&pseudo, l4]) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 section 3's worked example: 0001 f203 f4f5 f6f7 sums to ddf2.
    #[test]
    fn checksum_matches_rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&[&data]), !0xddf2);
        // Split across parts at an odd boundary gives the same answer.
        assert_eq!(internet_checksum(&[&data[..3], &data[3..]]), !0xddf2);
    }

    // A known-good IPv4 header (from Wikipedia's checksum example): b861.
    #[test]
    fn checksum_matches_a_known_ipv4_header() {
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&[&hdr]), 0xb861);
    }

    #[test]
    fn built_frames_verify() {
        for f in [
            Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, b"<13>hello"),
            Frame::udp("2001:db8::2", "2001:db8::1", 40000, 514, b"<13>hello6"),
            Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, SYN, b""),
            Frame::tcp(
                "2001:db8::2",
                "2001:db8::1",
                40000,
                601,
                ACK | PSH,
                b"7 <13>hi",
            ),
        ] {
            let b = f.build();
            assert!(l4_checksum_ok(&b, 14));
            if f.src.is_ipv4() {
                assert!(ipv4_header_checksum_ok(&b, 14));
            }
        }
    }
}
