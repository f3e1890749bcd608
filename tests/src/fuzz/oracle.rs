//! The steering decision as the docs state it (README, docs/architecture.md
//! "How it works" and "TCP: connections keep their colour"), written without
//! reading the BPF code: for a frame and a map state, what comes out, what
//! it looks like, and which counter says so. It parses frames itself and
//! rewrites them with its own RFC 1624 arithmetic.
//!
//! What it assumes of its surroundings: a namespace with only loopback, so
//! every steered frame is handed to the kernel (`XDP_PASS`), the idle
//! timeout off and a close grace of 0, and no replies through `bg_unnat`
//! (so no handshake on a NAT colour is ever admitted; the TCP tests cover
//! admission). A direct server return colour (docs/dsr.md) takes the frame
//! as the client sent it (to the kernel, untouched, here), admits a
//! handshake at its ACK unverified, and is not served by TC steering.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

/// A configured service, as the oracle needs it.
#[derive(Clone, Debug)]
pub struct Service {
    pub tcp: bool,
    pub v6: bool,
    /// `None`: the any-address (`0.0.0.0` / `::`) listener.
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// Blue's and green's backends.
    pub backends: [SocketAddr; 2],
    /// Whether blue's and green's modes are direct server return.
    pub dsr: [bool; 2],
}

/// What happens to a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Passed byte for byte as it came, counted under this name.
    Untouched(&'static str),
    /// Rewritten to `services[service]`'s backend of `colour` (0 blue, 1
    /// green) and handed to the kernel; as it came if that colour is `dsr`
    /// (and then not steered by TC at all: `pass_no_backend`).
    Steered {
        service: usize,
        colour: usize,
        dsr: bool,
    },
}

/// The oracle's answer for one frame.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub fate: Fate,
    /// The frame that must come out.
    pub frame: Vec<u8>,
    /// The TCP table event the segment must count, if any.
    pub tcp_event: Option<&'static str>,
    /// The handshake was admitted unverified (`dsr_admitted_unverified`).
    pub dsr_admitted: bool,
    /// The frame carries a VLAN tag.
    pub vlan: bool,
}

impl Prediction {
    /// The `dsr_*` counters the program must count for this frame: the
    /// unverified admission, and `dsr_unsupported` for a DSR frame that TC
    /// steering (always) or XDP (a VLAN-tagged one) cannot send.
    pub fn dsr_events(&self, tc: bool) -> Vec<&'static str> {
        let mut events = Vec::new();
        if self.dsr_admitted {
            events.push("dsr_admitted_unverified");
        }
        if matches!(self.fate, Fate::Steered { dsr: true, .. }) && (tc || self.vlan) {
            events.push("dsr_unsupported");
        }
        events.sort_unstable();
        events
    }
}

/// Where the parse of a frame ended.
enum Parsed {
    Untouched(&'static str),
    L4(L4),
}

/// A UDP datagram or TCP segment the parse accepted.
struct L4 {
    v6: bool,
    tcp: bool,
    /// Offsets in the frame.
    l3: usize,
    l4: usize,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    vlan: bool,
}

/// A TCP flow's state in the tables, as the docs describe it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FlowState {
    /// A handshake: only SYNs seen.
    Syn,
    Open,
    /// FIN or RST seen.
    Closing,
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    colour: usize,
    state: FlowState,
}

/// (client, client port, server, server port): a flow's identity.
type FlowId = (IpAddr, u16, IpAddr, u16);

/// IPv6 extension headers (RFC 8200, the IANA list): frames with one pass.
const IPV6_EXT: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

pub struct Model {
    pub services: Vec<Service>,
    /// Green's share in basis points, 0 to 10,000, and the active colour.
    pub green_bp: u32,
    pub active: usize,
    pub seed: u32,
    flows: HashMap<FlowId, Flow>,
}

impl Model {
    pub fn new(services: Vec<Service>, seed: u32) -> Self {
        Self {
            services,
            green_bp: 0,
            active: 0,
            seed,
            flows: HashMap::new(),
        }
    }

    /// Distinct TCP flows the tables hold now.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    pub fn predict(&mut self, frame: &[u8]) -> Prediction {
        let untouched = |name| Prediction {
            fate: Fate::Untouched(name),
            frame: frame.to_vec(),
            tcp_event: None,
            dsr_admitted: false,
            vlan: false,
        };
        let l4 = match parse(frame) {
            Parsed::Untouched(name) => return untouched(name),
            Parsed::L4(l4) => l4,
        };
        let Some(service) = self.service_for(&l4) else {
            return untouched("pass_no_service");
        };
        let (colour, tcp_event) = if l4.tcp {
            self.tcp_colour(service, &l4)
        } else {
            (self.new_sender_colour(l4.src), None)
        };
        let s = &self.services[service];
        let dsr = s.dsr[colour];
        Prediction {
            fate: Fate::Steered {
                service,
                colour,
                dsr,
            },
            frame: if dsr {
                frame.to_vec()
            } else {
                rewrite(frame, &l4, s.backends[colour])
            },
            dsr_admitted: tcp_event == Some("tcp_admitted"),
            tcp_event,
            vlan: l4.vlan,
        }
    }

    /// "The specific address wins": a service on the frame's own
    /// destination address, else one on any address, same port and
    /// protocol and family.
    fn service_for(&self, l4: &L4) -> Option<usize> {
        let matches = |s: &Service| s.tcp == l4.tcp && s.v6 == l4.v6 && s.port == l4.dport;
        let specific = self
            .services
            .iter()
            .position(|s| matches(s) && s.addr == Some(l4.dst));
        specific.or_else(|| {
            self.services
                .iter()
                .position(|s| matches(s) && s.addr.is_none())
        })
    }

    /// A new sender goes to the active colour; under a split, to green
    /// when its address's bucket is below green's weight.
    fn new_sender_colour(&self, src: IpAddr) -> usize {
        if self.green_bp == 0 {
            return 0;
        }
        if self.green_bp >= 10_000 {
            return 1;
        }
        // The keyed hash the docs name; the rule around it is the oracle's.
        let bucket = bg_common::split::bucket(self.seed, &addr_words(src));
        usize::from(bucket < self.green_bp)
    }

    /// The colour a segment goes to and the event it counts.
    fn tcp_colour(&mut self, service: usize, l4: &L4) -> (usize, Option<&'static str>) {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const FIN_RST: u8 = 0x01 | 0x04;
        let syn = l4.tcp_flags & SYN != 0 && l4.tcp_flags & ACK == 0;
        let closing = l4.tcp_flags & FIN_RST != 0;
        let id = (l4.src, l4.sport, l4.dst, l4.dport);
        let fresh = self.new_sender_colour(l4.src);
        let Some(flow) = self.flows.get_mut(&id) else {
            let state = match (syn, closing) {
                (true, _) => FlowState::Syn,
                (false, true) => FlowState::Closing,
                (false, false) => FlowState::Open,
            };
            self.flows.insert(
                id,
                Flow {
                    colour: fresh,
                    state,
                },
            );
            // A SYN opens a handshake; anything else is a miss on probation.
            return (fresh, (!syn).then_some("tcp_probation"));
        };
        if syn {
            return match flow.state {
                // A retransmitted SYN keeps the colour it was given.
                FlowState::Syn => (flow.colour, None),
                FlowState::Open => (flow.colour, Some("tcp_syn_on_live_flow")),
                // Closing and quiet for the grace (0 here): new connection.
                FlowState::Closing => {
                    *flow = Flow {
                        colour: fresh,
                        state: FlowState::Syn,
                    };
                    (fresh, Some("tcp_reopened"))
                }
            };
        }
        // On NAT, only the handshake's final ACK of the server's ISN + 1
        // would admit it, and no SYN-ACK passed `bg_unnat` here. On DSR,
        // whose SYN-ACK never passes, any ACK does.
        let mut event = None;
        if flow.state == FlowState::Syn && !closing {
            if self.services[service].dsr[flow.colour] && l4.tcp_flags & ACK != 0 {
                flow.state = FlowState::Open;
                event = Some("tcp_admitted");
            } else {
                event = Some("tcp_admission_refused");
            }
        }
        if closing {
            flow.state = FlowState::Closing;
        }
        (flow.colour, event)
    }
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr_words(a: IpAddr) -> [u32; 4] {
    // The data path's own layout: the address's bytes as they lie in the
    // packet, read as native words.
    let mut w = [0u32; 4];
    match a {
        IpAddr::V4(v4) => w[0] = u32::from_ne_bytes(v4.octets()),
        IpAddr::V6(v6) => {
            for (i, c) in v6.octets().chunks(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
    w
}

/// Ethernet, at most one 802.1Q/802.1ad tag, IPv4 (IHL honoured) or IPv6,
/// then UDP or TCP; everything else passes untouched under its reason.
fn parse(f: &[u8]) -> Parsed {
    use Parsed::Untouched;
    if f.len() < 14 {
        return Untouched("pass_malformed");
    }
    let (mut ethertype, mut l3) = (be16(f, 12), 14);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if f.len() < 18 {
            return Untouched("pass_malformed");
        }
        ethertype = be16(f, 16);
        l3 = 18;
    }
    let (v6, proto, l4, l3_end, src, dst) = match ethertype {
        0x0800 => {
            if f.len() < l3 + 20 {
                return Untouched("pass_malformed");
            }
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            let total = usize::from(be16(f, l3 + 2));
            if f[l3] >> 4 != 4 || ihl < 20 || f.len() < l3 + ihl {
                return Untouched("pass_malformed");
            }
            if total < ihl || f.len() < l3 + total {
                return Untouched("pass_malformed");
            }
            // More fragments, or an offset: a fragment.
            if be16(f, l3 + 6) & 0x3fff != 0 {
                return Untouched("pass_fragment");
            }
            let src: [u8; 4] = f[l3 + 12..l3 + 16].try_into().unwrap();
            let dst: [u8; 4] = f[l3 + 16..l3 + 20].try_into().unwrap();
            (
                false,
                f[l3 + 9],
                l3 + ihl,
                l3 + total,
                IpAddr::from(src),
                IpAddr::from(dst),
            )
        }
        0x86dd => {
            if f.len() < l3 + 40 {
                return Untouched("pass_malformed");
            }
            let payload = usize::from(be16(f, l3 + 4));
            if f[l3] >> 4 != 6 || f.len() < l3 + 40 + payload {
                return Untouched("pass_malformed");
            }
            let next = f[l3 + 6];
            if IPV6_EXT.contains(&next) {
                return Untouched("pass_ipv6_ext");
            }
            let src: [u8; 16] = f[l3 + 8..l3 + 24].try_into().unwrap();
            let dst: [u8; 16] = f[l3 + 24..l3 + 40].try_into().unwrap();
            (
                true,
                next,
                l3 + 40,
                l3 + 40 + payload,
                IpAddr::from(src),
                IpAddr::from(dst),
            )
        }
        _ => return Untouched("pass_no_service"),
    };
    let tcp = match proto {
        6 => true,
        17 => false,
        _ => return Untouched("pass_no_service"),
    };
    // The L4 header must lie within the IP packet, and its own length
    // (UDP's length field, TCP's data offset) within that too.
    let room = l3_end - l4;
    let ok = if tcp {
        room >= 20
            && usize::from(f[l4 + 12] >> 4) * 4 >= 20
            && usize::from(f[l4 + 12] >> 4) * 4 <= room
    } else {
        room >= 8 && (8..=room).contains(&usize::from(be16(f, l4 + 4)))
    };
    if !ok {
        return Untouched("pass_malformed");
    }
    Parsed::L4(L4 {
        v6,
        tcp,
        l3,
        l4,
        src,
        dst,
        sport: be16(f, l4),
        dport: be16(f, l4 + 2),
        tcp_flags: if tcp { f[l4 + 13] } else { 0 },
        vlan: l3 == 18,
    })
}

/// RFC 1624 eqn. 3 over every 16-bit word that changed:
/// HC' = ~(~HC + ~m + m').
fn adjust(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!check);
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The frame with its destination address and port set to `backend`, the
/// IPv4 header checksum and the L4 checksum (pseudo-header included)
/// adjusted for what changed. A UDP checksum of 0 ("none") stays 0, and a
/// computed 0 is sent as 0xffff.
fn rewrite(frame: &[u8], l4: &L4, backend: SocketAddr) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (dst_at, dst_len) = if l4.v6 {
        (l4.l3 + 24, 16)
    } else {
        (l4.l3 + 16, 4)
    };
    let new_addr: Vec<u8> = match backend.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let old_addr = f[dst_at..dst_at + dst_len].to_vec();
    let old_port = f[l4.l4 + 2..l4.l4 + 4].to_vec();
    let new_port = backend.port().to_be_bytes();
    f[dst_at..dst_at + dst_len].copy_from_slice(&new_addr);
    f[l4.l4 + 2..l4.l4 + 4].copy_from_slice(&new_port);
    if !l4.v6 {
        let at = l4.l3 + 10;
        let c = adjust(be16(&f, at), &old_addr, &new_addr);
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let at = l4.l4 + if l4.tcp { 16 } else { 6 };
    let check = be16(&f, at);
    if !l4.tcp && check == 0 {
        return f;
    }
    let old = [old_addr, old_port].concat();
    let new = [new_addr, new_port.to_vec()].concat();
    let mut c = adjust(check, &old, &new);
    if !l4.tcp && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Frame, internet_checksum, l4_checksum_ok};

    // The oracle's incremental update agrees with a full recomputation.
    #[test]
    fn adjust_matches_a_full_checksum() {
        let f = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, b"<13>x").build();
        let Parsed::L4(l4) = parse(&f) else {
            panic!("parses")
        };
        let out = rewrite(&f, &l4, "198.18.9.7:6514".parse().unwrap());
        assert_eq!(internet_checksum(&[&out[14..34]]), 0);
        assert!(l4_checksum_ok(&out, 14));
        let mut g = Frame::udp("198.18.0.2", "198.18.9.7", 40000, 6514, b"<13>x");
        g.ttl = 64;
        assert_eq!(out, g.build());
    }
}
