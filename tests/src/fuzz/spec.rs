//! Structured random frames (`arbitrary`): Ethernet with no tag, one tag
//! or two (QinQ), IPv4 with options and fragments, IPv6 with extension
//! headers, UDP and TCP with every flag mix and options, then damaged on
//! purpose: wrong versions, lengths and checksums, and cuts at any offset.
//! Most are aimed at the epoch's services, so the steering path is the one
//! exercised, not only the refusals.
use std::net::IpAddr;

use arbitrary::Arbitrary;

use crate::packet::{DST_MAC, SRC_MAC, internet_checksum};

/// Addresses and ports frames are drawn from.
pub struct Universe {
    /// The services' listen addresses (any-address services get one of
    /// `others`), each with its port and protocol (true: TCP).
    pub targets: Vec<(IpAddr, u16, bool)>,
    /// Near misses: the same addresses and ports under the other protocol.
    pub near: Vec<(IpAddr, u16, bool)>,
    pub clients_v4: Vec<IpAddr>,
    pub clients_v6: Vec<IpAddr>,
    /// Addresses no specific service listens on.
    pub others_v4: Vec<IpAddr>,
    pub others_v6: Vec<IpAddr>,
}

/// A part that applies only when its gate byte is below a threshold, so
/// that most frames are well formed and aimed at a service, and damage of
/// each kind still comes up thousands of times per 100,000 frames.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Rare<T>(u8, T);

impl<T: Copy> Rare<T> {
    fn get(self, below: u8) -> Option<T> {
        (self.0 < below).then_some(self.1)
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct FrameSpec {
    tags: Rare<Tags>,
    /// Index into the universe's targets.
    target: u8,
    /// Instead: a near miss, or anywhere at all.
    near: Rare<u8>,
    anywhere: Rare<()>,
    /// Which family when the target does not say, and which client.
    v6: bool,
    client: u8,
    client_port: u8,
    other: u8,
    l3: L3,
    l4: L4,
    other_proto: Rare<u8>,
    payload_len: u8,
    payload_fill: u8,
    damage: Rare<Damage>,
    /// Cut the frame to 14 + this many bytes, if below its length.
    cut: Rare<u8>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tags {
    Dot1q(u16),
    Dot1ad(u16),
    QinQ(u16, u16),
    /// Not IP at all: ARP, LLDP or anything.
    OtherEthertype(u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct L3 {
    /// IPv4 options, in 4-byte words (0 to 10).
    option_words: u8,
    /// Without it, "don't fragment" or no flags.
    frag: Rare<Frag>,
    df: bool,
    ttl: u8,
    /// IPv6: the next header is an extension header (index into a list).
    v6_ext: Rare<u8>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Frag {
    MoreFragments,
    Offset(u16),
}

/// UDP, or TCP when the target is a TCP service (or by `tcp` anywhere).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct L4 {
    tcp: bool,
    flags: u8,
    option_words: u8,
    seq: u32,
    ack: u32,
    zero_udp_checksum: Rare<()>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Damage {
    IpVersion(u8),
    Ihl(u8),
    Ipv4TotalLength(u16),
    Ipv6PayloadLength(u16),
    UdpLength(u16),
    TcpDataOffset(u8),
    IpChecksum(u16),
    L4Checksum(u16),
    /// The destination port one off the service's.
    PortOff,
}

const IPV6_EXT: [u8; 8] = [0, 43, 44, 50, 51, 60, 135, 139];

fn pick<T: Copy>(from: &[T], i: u8) -> T {
    from[usize::from(i) % from.len()]
}

impl FrameSpec {
    pub fn build(&self, u: &Universe) -> Vec<u8> {
        let target = match (self.anywhere.get(32), self.near.get(40)) {
            (Some(()), _) => None,
            (None, Some(i)) => Some(pick(&u.near, i)),
            (None, None) => Some(pick(&u.targets, self.target)),
        };
        let v6 = target.map_or(self.v6, |(a, _, _)| a.is_ipv6());
        let dst = match target {
            Some((a, _, _)) => a,
            None if v6 => pick(&u.others_v6, self.other),
            None => pick(&u.others_v4, self.other),
        };
        let src = pick(if v6 { &u.clients_v6 } else { &u.clients_v4 }, self.client);
        let sport = 40_000 + u16::from(self.client_port % 4);
        let damage = self.damage.get(64);
        let (tcp, dport) = target.map_or((self.l4.tcp, 514), |(_, port, tcp)| (tcp, port));
        let other = self.other_proto.get(16);
        let proto = other.unwrap_or(if tcp { 6 } else { 17 });
        let dport = if matches!(damage, Some(Damage::PortOff)) {
            dport.wrapping_add(1)
        } else {
            dport
        };
        let payload = vec![self.payload_fill; usize::from(self.payload_len % 96)];
        let t = self.l4;
        let l4 = match (other, tcp) {
            (Some(_), _) => payload.clone(),
            (None, true) => tcp_segment(
                sport,
                dport,
                t.flags,
                t.option_words % 11,
                t.seq,
                t.ack,
                &payload,
            ),
            (None, false) => udp_datagram(sport, dport, &payload),
        };
        let (mut f, l3) = self.ethernet(v6);
        let l4_at = if v6 {
            let next = self.l3.v6_ext.get(16).map_or(proto, |i| pick(&IPV6_EXT, i));
            f.extend_from_slice(&ipv6_header(src, dst, next, l4.len()));
            l3 + 40
        } else {
            let words = usize::from(self.l3.option_words % 11);
            let frag = match self.l3.frag.get(16) {
                None if self.l3.df => 0x4000,
                None => 0,
                Some(Frag::MoreFragments) => 0x2000,
                Some(Frag::Offset(o)) => o & 0x1fff,
            };
            f.extend_from_slice(&ipv4_header(
                src,
                dst,
                proto,
                words,
                frag,
                self.l3.ttl,
                l4.len(),
            ));
            l3 + 20 + 4 * words
        };
        f.extend_from_slice(&l4);
        if other.is_none() {
            let none = self.l4.zero_udp_checksum.get(24).is_some() && !tcp;
            set_l4_checksum(&mut f, l3, l4_at, v6, proto, none);
        }
        if let Some(d) = damage {
            apply(d, &mut f, l3, l4_at, v6, proto);
        }
        if let Some(cut) = self.cut.get(40) {
            f.truncate(14 + usize::from(cut));
        }
        f
    }

    fn ethernet(&self, v6: bool) -> (Vec<u8>, usize) {
        let mut f = [DST_MAC, SRC_MAC].concat();
        let ip: u16 = if v6 { 0x86dd } else { 0x0800 };
        let mut tag = |tpid: u16, tci: u16| {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(tci & 0x0fff).to_be_bytes());
        };
        let ethertype = match self.tags.get(48) {
            None => ip,
            Some(Tags::Dot1q(v)) => {
                tag(0x8100, v);
                ip
            }
            Some(Tags::Dot1ad(v)) => {
                tag(0x88a8, v);
                ip
            }
            Some(Tags::QinQ(outer, inner)) => {
                tag(0x88a8, outer);
                tag(0x8100, inner);
                ip
            }
            Some(Tags::OtherEthertype(t)) if t == 0x0800 || t == 0x86dd => 0x0806,
            Some(Tags::OtherEthertype(t)) => t,
        };
        f.extend_from_slice(&ethertype.to_be_bytes());
        let l3 = f.len();
        (f, l3)
    }
}

/// Damage done after the checksums were set, so that only what it names
/// is wrong (the IPv4 header checksum is refreshed after a length change).
fn apply(damage: Damage, f: &mut [u8], l3: usize, l4: usize, v6: bool, proto: u8) {
    let l4_check = l4 + if proto == 6 { 16 } else { 6 };
    match damage {
        Damage::PortOff => {}
        Damage::IpVersion(v) => f[l3] = (f[l3] & 0x0f) | (v << 4),
        Damage::Ihl(ihl) if !v6 => {
            f[l3] = (f[l3] & 0xf0) | (ihl & 0x0f);
            refresh_ipv4_checksum(f, l3);
        }
        Damage::Ipv4TotalLength(len) if !v6 => {
            f[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
            refresh_ipv4_checksum(f, l3);
        }
        Damage::Ipv6PayloadLength(len) if v6 => {
            f[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes())
        }
        Damage::UdpLength(len) if proto == 17 && f.len() >= l4 + 8 => {
            f[l4 + 4..l4 + 6].copy_from_slice(&len.to_be_bytes())
        }
        Damage::TcpDataOffset(d) if proto == 6 && f.len() >= l4 + 20 => {
            f[l4 + 12] = (d << 4) | (f[l4 + 12] & 0x0f)
        }
        Damage::IpChecksum(x) if !v6 => {
            let c = u16::from_be_bytes([f[l3 + 10], f[l3 + 11]]) ^ x.max(1);
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        Damage::L4Checksum(x) if (proto == 6 || proto == 17) && f.len() >= l4_check + 2 => {
            let c = u16::from_be_bytes([f[l4_check], f[l4_check + 1]]) ^ x.max(1);
            f[l4_check..l4_check + 2].copy_from_slice(&c.to_be_bytes());
        }
        _ => {}
    }
}

fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

fn tcp_segment(
    sport: u16,
    dport: u16,
    flags: u8,
    option_words: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let words = usize::from(option_words);
    let mut s = Vec::with_capacity(20 + 4 * words + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(((5 + words) as u8) << 4);
    s.push(flags);
    s.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    // NOPs then an end-of-options: valid option bytes of any length.
    s.extend(std::iter::repeat_n(1u8, 4 * words));
    if words > 0 {
        *s.last_mut().unwrap() = 0;
    }
    s.extend_from_slice(payload);
    s
}

fn ipv4_header(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    option_words: usize,
    frag: u16,
    ttl: u8,
    l4_len: usize,
) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        unreachable!("IPv4 addresses for an IPv4 header")
    };
    let ihl = 5 + option_words;
    let mut h = vec![(0x40 | ihl) as u8, 0];
    h.extend_from_slice(&((4 * ihl + l4_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[ttl, proto, 0, 0]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    // Router alert-ish filler: NOPs, ending with end-of-options.
    h.extend(std::iter::repeat_n(1u8, 4 * option_words));
    if option_words > 0 {
        *h.last_mut().unwrap() = 0;
    }
    let c = internet_checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

fn ipv6_header(src: IpAddr, dst: IpAddr, next: u8, l4_len: usize) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else {
        unreachable!("IPv6 addresses for an IPv6 header")
    };
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h
}

fn refresh_ipv4_checksum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    if ihl < 20 || f.len() < l3 + ihl {
        return;
    }
    f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&[&f[l3..l3 + ihl]]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// The full L4 checksum, pseudo-header included (or 0 over IPv4 UDP when
/// `none`, "no checksum").
fn set_l4_checksum(f: &mut [u8], l3: usize, l4: usize, v6: bool, proto: u8, none: bool) {
    let at = l4 + if proto == 6 { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&[0, 0]);
    // Over IPv6 a zero UDP checksum is invalid (RFC 8200), which is
    // exactly why it is sent too.
    if none {
        return;
    }
    let len = f.len() - l4;
    let pseudo = if v6 {
        [
            &f[l3 + 8..l3 + 40],
            &(len as u32).to_be_bytes()[..],
            &[0, 0, 0, proto],
        ]
        .concat()
    } else {
        [
            &f[l3 + 12..l3 + 20],
            &[0, proto],
            &(len as u16).to_be_bytes()[..],
        ]
        .concat()
    };
    let mut c = internet_checksum(&[&pseudo, &f[l4..]]);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}
