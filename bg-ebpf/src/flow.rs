//! TCP connection affinity: a connection keeps the colour chosen at its SYN
//! until it closes, so a flip never moves an established connection, and
//! no spoofed segment can either.
//!
//! Two tables: `FLOWS` holds established connections only, `PENDING_FLOWS`
//! handshakes in progress and flows on probation. A flow moves from the
//! second to the first when the client acknowledges the server's SYN-ACK
//! (ACK = the server's ISN + 1, recorded by `bg_unnat`). Spoofed SYN or ACK
//! floods therefore churn `PENDING_FLOWS` alone.
//!
//! On a direct-server-return colour the server's SYN-ACK goes straight
//! to the client and its ISN is never seen: the handshake's ACK is
//! admitted unchecked there (`dsr_event::ADMITTED_UNVERIFIED`), as IPVS's
//! DR and Katran do, and a spoofer who sends SYN then ACK is admitted too.
//!
//! "The first" is two maps: IPv4 flows are admitted to `FLOWS4`, whose
//! 12-byte key makes the lookup every established segment pays cheaper;
//! IPv6 flows to `FLOWS`. An IPv4 flow that an older program admitted to
//! `FLOWS` is still found there until it ends.
use bg_common::{
    Backend, COLOURS, FAMILY_IPV4, FLOW_CLOSING, FLOW_OPEN, FLOW_SYN, FlowKey, FlowKey4, FlowValue,
    PendingFlow, RevValue, dsr_event, mode, tcp_event, tcp_setting,
};

use crate::maps::{
    BACKENDS, FLOWS, FLOWS4, PENDING_FLOWS, PENDING_REV, REV_FLOWS, count_dsr, count_tcp,
    tcp_setting as setting,
};
use crate::parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::split;

/// The flow-table key of a client-to-service segment.
#[inline(always)]
pub fn client_key(pkt: &Packet) -> FlowKey {
    FlowKey {
        client_be: pkt.src_be,
        server_be: pkt.dst_be,
        client_port_be: pkt.src_port_be,
        server_port_be: pkt.dst_port_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}

/// Which TCP counters of `STATS` a segment adds to (see `ColourStats`).
#[derive(Clone, Copy, Default)]
pub struct TcpEvent {
    pub new: bool,
    pub established: bool,
    pub miss: bool,
    /// The flow started closing with this segment.
    pub closing: bool,
}

/// Which reverse-NAT entry the segment's flow needs, once its backend is
/// known.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Reverse {
    /// Nothing to write.
    Keep,
    /// A new pending flow: write its `PENDING_REV` entry.
    Pending,
    /// Just admitted: write `REV_FLOWS`, drop the `PENDING_REV` entry.
    Admit,
    /// An established flow, checked at most once a jiffy: restore its
    /// `REV_FLOWS` entry if it was evicted.
    Check,
}

/// What the flow tables decided for a segment.
pub struct FlowChoice {
    pub colour: u32,
    pub reverse: Reverse,
    pub event: TcpEvent,
}

/// Picks the colour of a TCP segment:
/// - an established flow, or one on probation, keeps its colour. A SYN on
///   it changes nothing, unless the flow is closing and quiet for the close
///   grace, or idle past the idle timeout: then it is a new connection on
///   reused ports;
/// - a SYN without ACK otherwise opens a pending flow on the colour `word`
///   gives its client (the active one, or its side of a split); a
///   retransmitted SYN keeps that colour;
/// - the client's ACK of the server's ISN + 1 admits the pending flow (on
///   a direct-server-return colour of `service`, any ACK);
/// - any other segment of a pending flow uses its colour;
/// - a segment with no flow at all (evicted, or older than the program)
///   goes to its client's colour as a SYN would, counts as a flow miss, and is put on
///   probation so the rest of the connection stays together;
/// - FIN or RST marks the flow closing.
#[inline(always)]
pub fn choose(pkt: &Packet, word: u32, now: u64, service: u32) -> FlowChoice {
    let key = client_key(pkt);
    let flags = pkt.tcp_flags;
    let syn = flags & TCP_SYN != 0 && flags & TCP_ACK == 0;
    let closing = flags & (TCP_FIN | TCP_RST) != 0;
    let v4 = pkt.family == FAMILY_IPV4;
    let key4 = FlowKey4::of(&key);
    // Each table's hit is handled apart, so a reopening SYN removes the
    // entry from the table it was found in.
    if v4 && let Some(flow) = FLOWS4.get_ptr_mut(key4) {
        // SAFETY: a value pointer from the map; concurrent writers only race
        // on last_seen and state, whose torn values are harmless.
        match on_established(unsafe { &mut *flow }, syn, closing, now) {
            Some(choice) => return choice,
            None => {
                let _ = FLOWS4.remove(key4);
            }
        }
    } else if let Some(flow) = FLOWS.get_ptr_mut(key) {
        // SAFETY: as above.
        match on_established(unsafe { &mut *flow }, syn, closing, now) {
            Some(choice) => return choice,
            None => {
                let _ = FLOWS.remove(key);
            }
        }
    } else if let Some(pending) = PENDING_FLOWS.get_ptr_mut(key) {
        // SAFETY: as above.
        let pending = unsafe { &mut *pending };
        if !syn {
            return pending_segment(pkt, key, pending, closing, now, service);
        }
        if pending.state == FLOW_SYN {
            // A retransmitted SYN keeps the colour it was given.
            pending.last_seen_jiffies = now;
            return FlowChoice {
                colour: pending.colour & 1,
                reverse: Reverse::Keep,
                event: TcpEvent {
                    new: true,
                    ..TcpEvent::default()
                },
            };
        }
        // A flow on probation is as live as an established one.
        if !reopens(pending.state, pending.last_seen_jiffies, now) {
            return syn_on_live_flow(pending.colour);
        }
        count_tcp(tcp_event::REOPENED);
    }
    let state = if syn {
        FLOW_SYN
    } else if closing {
        FLOW_CLOSING
    } else {
        FLOW_OPEN
    };
    if !syn {
        count_tcp(tcp_event::PROBATION);
    }
    // The split's hash only here: established segments never pay for it.
    let colour = split::colour(word, pkt);
    let value = PendingFlow {
        last_seen_jiffies: now,
        colour,
        state,
        server_isn: 0,
        isn_seen: 0,
    };
    // LRU insert cannot fail for lack of room; on error the segment is still
    // steered to the same colour, which is what a miss does anyway.
    let _ = PENDING_FLOWS.insert(key, value, 0);
    FlowChoice {
        colour,
        reverse: Reverse::Pending,
        event: TcpEvent {
            new: syn,
            miss: !syn,
            closing,
            ..TcpEvent::default()
        },
    }
}

/// A segment of an established flow: its choice, or None for a SYN that
/// reopens the flow's ports (the caller removes the entry and the SYN
/// opens a pending flow as on a miss).
#[inline(always)]
fn on_established(flow: &mut FlowValue, syn: bool, closing: bool, now: u64) -> Option<FlowChoice> {
    if !syn {
        return Some(established(flow, closing, now));
    }
    if !reopens(flow.state, flow.last_seen_jiffies, now) {
        return Some(syn_on_live_flow(flow.colour));
    }
    count_tcp(tcp_event::REOPENED);
    None
}

/// Whether a SYN on a flow in `state`, last seen at `last_seen`, starts a
/// new connection on reused ports: the flow is closing and quiet for the
/// close grace, or idle past the idle timeout.
#[inline(always)]
fn reopens(state: u32, last_seen: u64, now: u64) -> bool {
    let quiet = now.wrapping_sub(last_seen);
    if state == FLOW_CLOSING {
        quiet >= setting(tcp_setting::CLOSE_GRACE_JIFFIES)
    } else {
        let idle = setting(tcp_setting::IDLE_JIFFIES);
        idle != 0 && quiet >= idle
    }
}

/// A SYN with a live flow's own 4-tuple: spoofed, or a stray
/// retransmission. Either way it must not move the connection, and it
/// changes nothing.
#[inline(always)]
fn syn_on_live_flow(colour: u32) -> FlowChoice {
    count_tcp(tcp_event::SYN_ON_LIVE_FLOW);
    FlowChoice {
        colour: colour & 1,
        reverse: Reverse::Keep,
        event: TcpEvent::default(),
    }
}

/// A non-SYN segment of an established flow.
#[inline(always)]
fn established(flow: &mut FlowValue, closing: bool, now: u64) -> FlowChoice {
    // Jiffies move every few ms: skip the write (and the dirtied cache
    // line) for the segments in between; the reverse entry is checked as
    // often.
    let tick = flow.last_seen_jiffies != now;
    if tick {
        flow.last_seen_jiffies = now;
    }
    let starts_closing = closing && flow.state != FLOW_CLOSING;
    if starts_closing {
        flow.state = FLOW_CLOSING;
    } else if flow.state == FLOW_SYN {
        flow.state = FLOW_OPEN;
    }
    FlowChoice {
        colour: flow.colour & 1,
        reverse: if tick { Reverse::Check } else { Reverse::Keep },
        event: TcpEvent {
            established: true,
            closing: starts_closing,
            ..TcpEvent::default()
        },
    }
}

/// A non-SYN segment of a pending flow: the handshake's final ACK admits
/// it; anything else is steered by the pending entry.
#[inline(always)]
fn pending_segment(
    pkt: &Packet,
    key: FlowKey,
    pending: &mut PendingFlow,
    closing: bool,
    now: u64,
    service: u32,
) -> FlowChoice {
    let colour = pending.colour & 1;
    if pending.state == FLOW_SYN && !closing {
        let ack = pkt.tcp_flags & TCP_ACK != 0;
        let acks_server = if pending.isn_seen != 0 {
            ack && pkt.tcp_ack_seq == pending.server_isn.wrapping_add(1)
        } else {
            let unverified = ack && direct_return(service, colour);
            if unverified {
                count_dsr(dsr_event::ADMITTED_UNVERIFIED);
            }
            unverified
        };
        if acks_server {
            let value = FlowValue {
                last_seen_jiffies: now,
                colour,
                state: FLOW_OPEN,
            };
            let admitted = if pkt.family == FAMILY_IPV4 {
                FLOWS4.insert(FlowKey4::of(&key), value, 0)
            } else {
                FLOWS.insert(key, value, 0)
            };
            if admitted.is_ok() {
                let _ = PENDING_FLOWS.remove(key);
                count_tcp(tcp_event::ADMITTED);
                return FlowChoice {
                    colour,
                    reverse: Reverse::Admit,
                    event: TcpEvent {
                        established: true,
                        ..TcpEvent::default()
                    },
                };
            }
        } else {
            count_tcp(tcp_event::ADMISSION_REFUSED);
        }
    }
    pending.last_seen_jiffies = now;
    let starts_closing = closing && pending.state != FLOW_CLOSING;
    if starts_closing {
        pending.state = FLOW_CLOSING;
    }
    FlowChoice {
        colour,
        reverse: Reverse::Keep,
        event: TcpEvent {
            established: true,
            closing: starts_closing,
            ..TcpEvent::default()
        },
    }
}

/// Whether `service`'s `colour` sends its packets by direct server
/// return: its replies bypass `bg_unnat`, so no SYN-ACK is ever seen.
#[inline(always)]
fn direct_return(service: u32, colour: u32) -> bool {
    BACKENDS
        .get(service * COLOURS + colour)
        .is_some_and(|b| b.mode != mode::NAT)
}

/// Marks the established flow of `key` (client to service) closing: a
/// server-side FIN or RST, seen by `bg_unnat`. IPv4 flows are in `FLOWS4`,
/// or in `FLOWS` when an older program admitted them.
#[inline(always)]
pub fn mark_closing(key: &FlowKey) {
    if key.family == FAMILY_IPV4
        && let Some(flow) = FLOWS4.get_ptr_mut(FlowKey4::of(key))
    {
        // SAFETY: a value pointer from the map; see `choose`.
        unsafe { (*flow).state = FLOW_CLOSING };
    } else if let Some(flow) = FLOWS.get_ptr_mut(key) {
        // SAFETY: as above.
        unsafe { (*flow).state = FLOW_CLOSING };
    }
}

/// Writes what `reverse` asks for, so `bg_unnat` can give replies the
/// service address back.
#[inline(always)]
pub fn record_reverse(pkt: &Packet, backend: &Backend, reverse: Reverse) {
    if reverse == Reverse::Keep {
        return;
    }
    let key = FlowKey {
        client_be: pkt.src_be,
        server_be: backend.addr_be,
        client_port_be: pkt.src_port_be,
        server_port_be: backend.port_be,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    let value = RevValue {
        service_be: pkt.dst_be,
        service_port_be: pkt.dst_port_be,
        _pad: [0; 2],
    };
    match reverse {
        Reverse::Keep => {}
        Reverse::Pending => {
            let _ = PENDING_REV.insert(key, value, 0);
        }
        Reverse::Admit => {
            let _ = REV_FLOWS.insert(key, value, 0);
            let _ = PENDING_REV.remove(key);
        }
        Reverse::Check => {
            if unsafe { REV_FLOWS.get(key) }.is_none() {
                let _ = REV_FLOWS.insert(key, value, 0);
                count_tcp(tcp_event::REVERSE_RESTORED);
            }
        }
    }
}
