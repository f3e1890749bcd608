//! bluegreen data path: XDP steering of syslog traffic to the active colour.
#![no_std]
#![no_main]

mod bench;
mod csum;
mod deliver;
mod drops;
mod flow;
mod maps;
mod nat;
mod parse;
mod unnat;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::generated::bpf_jiffies64,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use bg_common::{
    ACTIVE_SLOT, CLOCK_SLOT, COLOUR_BLUE, COLOURS, PORT_ANY_MASK, PORT_HAS_SPECIFIC, PROTO_TCP,
    ServiceKey, counter, port_index,
};

use maps::{ACTIVE, BACKENDS, CLOCK, PORTS, SERVICES, count, count_steered};
use parse::{Packet, Skip};

/// Steers packets addressed to a configured service to the active colour's
/// backend. Anything it does not steer passes untouched and is counted.
#[xdp]
pub fn bg_steer(ctx: XdpContext) -> u32 {
    match try_steer(&ctx) {
        Ok(action) => action,
        Err(Skip(reason)) => {
            count(reason);
            xdp_action::XDP_PASS
        }
    }
}

/// Reverse NAT for replies of steered TCP flows (TC egress).
#[classifier]
pub fn bg_unnat(ctx: TcContext) -> i32 {
    match unnat::try_unnat(&ctx) {
        Ok(()) => {}
        Err(unnat::NotOurs) => count(counter::UNNAT_PASS),
    }
    TC_ACT_OK
}

/// Writes the data path's clock (`bpf_jiffies64`) into `CLOCK`. The agent
/// runs it through BPF_PROG_TEST_RUN to age flows on the same clock.
#[xdp]
pub fn bg_clock(_ctx: XdpContext) -> u32 {
    let _ = CLOCK.set(CLOCK_SLOT, unsafe { bpf_jiffies64() }, 0);
    xdp_action::XDP_PASS
}

/// Baseline for the program micro-benchmark: does nothing but pass.
#[xdp]
pub fn bg_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
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

#[inline(always)]
fn try_steer(ctx: &XdpContext) -> Result<u32, Skip> {
    let pkt = parse::parse(ctx)?;
    let service = lookup_service(&pkt).ok_or(Skip(counter::PASS_NO_SERVICE))?;
    // Read the colour once: the whole packet sees one colour, never a half state.
    let active = ACTIVE.get(ACTIVE_SLOT).copied().unwrap_or(COLOUR_BLUE) & 1;
    // TCP keeps the colour its connection started on.
    let choice = if pkt.proto == PROTO_TCP {
        Some(flow::choose(&pkt, active, unsafe { bpf_jiffies64() }))
    } else {
        None
    };
    let colour = choice.as_ref().map_or(active, |c| c.colour);
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
    if choice.as_ref().is_some_and(|c| c.new_flow) {
        flow::record_reverse(&pkt, &backend);
    }
    nat::dnat(ctx, &pkt, &backend)?;
    count_steered(
        slot,
        (ctx.data_end() - ctx.data()) as u64,
        choice.map(|c| c.event),
    );
    deliver::deliver(ctx, &pkt, &backend, slot)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
