//! The steering decision shared by the XDP and TC programs: which service a
//! packet is for, which colour it takes, and that colour's backend.
use aya_ebpf::{EbpfContext, helpers::generated::bpf_jiffies64};
use aya_log_ebpf::debug;
use bg_common::{
    ACTIVE_SLOT, Backend, COLOUR_BLUE, COLOURS, PORT_ANY_MASK, PORT_HAS_SPECIFIC, PROTO_TCP,
    ServiceKey, counter, mode, port_index,
};

use crate::flow::{self, TcpEvent};
use crate::maps::{ACTIVE, BACKENDS, PORTS, SERVICES};
use crate::parse::{Packet, Skip};
use crate::split;

/// Where a packet goes: its `BACKENDS`/`STATS` slot and backend, and for
/// TCP the flow event to count.
pub struct Target {
    pub service: u32,
    pub slot: u32,
    pub backend: Backend,
    pub tcp: Option<TcpEvent>,
}

#[inline(always)]
fn lookup_service(pkt: &Packet) -> Option<u32> {
    let slot = port_index(pkt.family, pkt.proto, u16::from_be(pkt.dst_port_be))?;
    let entry = *PORTS.get(slot)?;
    if entry & PORT_HAS_SPECIFIC != 0 {
        let key = ServiceKey {
            addr_be: pkt.dst_be,
            port_be: pkt.dst_port_be,
            proto: pkt.proto,
            family: pkt.family,
        };
        if let Some(v) = unsafe { SERVICES.get(key) } {
            return Some(v.id);
        }
    }
    // Services listening on 0.0.0.0 / :: match any destination of their family.
    match entry & PORT_ANY_MASK {
        0 => None,
        id_plus_one => Some(id_plus_one - 1),
    }
}

/// Decides where `pkt` goes, recording TCP flows on the way. Nothing in
/// the packet has changed when this returns; a `Skip` passes it untouched.
#[inline(always)]
pub fn decide<C: EbpfContext>(ctx: &C, pkt: &Packet) -> Result<Target, Skip> {
    let service = lookup_service(pkt).ok_or(Skip(counter::PASS_NO_SERVICE))?;
    // Read the word once: the whole packet sees one colour and one weight,
    // never a half state.
    let word = ACTIVE.get(ACTIVE_SLOT).copied().unwrap_or(COLOUR_BLUE);
    // TCP keeps the colour its connection started on; UDP senders take
    // theirs by source address, packet by packet.
    let choice = if pkt.proto == PROTO_TCP {
        Some(flow::choose(pkt, word, unsafe { bpf_jiffies64() }, service))
    } else {
        None
    };
    let colour = match &choice {
        Some(c) => c.colour,
        None => split::colour(word, pkt),
    };
    let slot = service * COLOURS + colour;
    let backend = *BACKENDS.get(slot).ok_or(Skip(counter::PASS_NO_BACKEND))?;
    // Neither happens with configs bgctl writes; log them for whoever wrote the maps.
    if !backend.is_set() {
        debug!(
            ctx,
            "service {} has no backend for colour {}", service, colour
        );
        return Err(Skip(counter::PASS_NO_BACKEND));
    }
    if backend.family != pkt.family {
        debug!(
            ctx,
            "service {} colour {}: backend family differs from the packet's", service, colour
        );
        return Err(Skip(counter::PASS_FAMILY_MISMATCH));
    }
    // Direct server return: replies never pass here, so no reverse entry.
    if let Some(c) = &choice
        && backend.mode == mode::NAT
    {
        flow::record_reverse(pkt, &backend, c.reverse);
    }
    Ok(Target {
        service,
        slot,
        backend,
        tcp: choice.map(|c| c.event),
    })
}
