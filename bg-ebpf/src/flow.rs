//! TCP connection affinity: a connection keeps the colour chosen at its SYN
//! until it closes, so a flip never moves an established connection.
use bg_common::{Backend, FLOW_CLOSING, FLOW_OPEN, FLOW_SYN, FlowKey, FlowValue, RevValue};

use crate::maps::{FLOWS, REV_FLOWS};
use crate::parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

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

/// What the flow table decided for a segment.
pub struct FlowChoice {
    pub colour: u32,
    /// The flow entry was (re)created: its reverse-NAT entry must be written.
    pub new_flow: bool,
    pub event: TcpEvent,
}

/// Picks the colour of a TCP segment:
/// - a SYN without ACK opens a flow on the active colour. A retransmitted
///   SYN (the flow has seen nothing but SYNs) keeps the colour of the flow
///   it opened; a SYN on a flow that carried data is a new connection
///   reusing the ports of one that ended without FIN or RST;
/// - any other segment uses its flow's colour;
/// - a segment with no flow (evicted, or older than the program) goes to the
///   active colour, counts as a flow miss, and its flow is recorded so the
///   rest of the connection stays together;
/// - FIN or RST marks the flow closing; the entry then ages out.
#[inline(always)]
pub fn choose(pkt: &Packet, active: u32, now: u64) -> FlowChoice {
    let key = client_key(pkt);
    let flags = pkt.tcp_flags;
    let syn = flags & TCP_SYN != 0 && flags & TCP_ACK == 0;
    let closing = flags & (TCP_FIN | TCP_RST) != 0;
    if let Some(flow) = FLOWS.get_ptr_mut(key) {
        // SAFETY: a value pointer from the map; concurrent writers only race
        // on last_seen and state, whose torn values are harmless.
        let flow = unsafe { &mut *flow };
        // Only a SYN on a SYN-only flow is a retransmission; on any other
        // flow it is a new connection reusing the ports.
        if !syn || flow.state == FLOW_SYN {
            // Jiffies move every few ms: skip the write (and the dirtied
            // cache line) for the segments in between.
            if flow.last_seen_jiffies != now {
                flow.last_seen_jiffies = now;
            }
            let starts_closing = closing && flow.state != FLOW_CLOSING;
            if starts_closing {
                flow.state = FLOW_CLOSING;
            } else if !syn && flow.state == FLOW_SYN {
                flow.state = FLOW_OPEN;
            }
            return FlowChoice {
                colour: flow.colour & 1,
                new_flow: false,
                event: TcpEvent {
                    established: !syn,
                    closing: starts_closing,
                    ..TcpEvent::default()
                },
            };
        }
    }
    let value = FlowValue {
        last_seen_jiffies: now,
        colour: active,
        state: if closing {
            FLOW_CLOSING
        } else if syn {
            FLOW_SYN
        } else {
            FLOW_OPEN
        },
    };
    // LRU insert cannot fail for lack of room; on error the segment is still
    // steered to the active colour, which is what a miss does anyway.
    let _ = FLOWS.insert(key, value, 0);
    FlowChoice {
        colour: active,
        new_flow: true,
        event: TcpEvent {
            new: syn,
            miss: !syn,
            closing,
            ..TcpEvent::default()
        },
    }
}

/// Records where replies of a new flow come from, so `bg_unnat` can give
/// them the service address back.
#[inline(always)]
pub fn record_reverse(pkt: &Packet, backend: &Backend) {
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
    let _ = REV_FLOWS.insert(key, value, 0);
}
