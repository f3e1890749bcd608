//! bluegreen data path: XDP steering of syslog traffic to the active colour.
#![no_std]
#![no_main]

mod csum;
mod deliver;
mod drops;
mod dsr;
mod dsr_tc;
mod field;
mod flow;
mod maps;
mod nat;
mod parse;
mod path;
mod shadow;
mod split;
mod steer;
mod steer_tc;
mod unnat;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_jiffies64,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use bg_common::{CLOCK_SLOT, counter, mode, stage_cut};

use maps::{CLOCK, count, count_steered};
use parse::Skip;

/// Steers packets addressed to a configured service to the active colour's
/// backend. Anything it does not steer passes untouched and is counted.
#[xdp]
pub fn bg_steer(ctx: XdpContext) -> u32 {
    steer_to::<{ stage_cut::NONE }>(&ctx)
}

/// `bg_steer` stopped after one stage, for `bg-bench --prog`'s cost by
/// stage (`bg_common::stage_cut`). The agent never loads these; the cut
/// is a constant, so `bg_steer` itself holds no trace of it.
#[xdp]
pub fn bg_steer_cut_parse(ctx: XdpContext) -> u32 {
    steer_to::<{ stage_cut::PARSE }>(&ctx)
}

#[xdp]
pub fn bg_steer_cut_decide(ctx: XdpContext) -> u32 {
    steer_to::<{ stage_cut::DECIDE }>(&ctx)
}

#[xdp]
pub fn bg_steer_cut_dnat(ctx: XdpContext) -> u32 {
    steer_to::<{ stage_cut::DNAT }>(&ctx)
}

#[xdp]
pub fn bg_steer_cut_count(ctx: XdpContext) -> u32 {
    steer_to::<{ stage_cut::COUNT }>(&ctx)
}

#[xdp]
pub fn bg_steer_cut_shadow(ctx: XdpContext) -> u32 {
    steer_to::<{ stage_cut::SHADOW }>(&ctx)
}

#[inline(always)]
fn steer_to<const CUT: u32>(ctx: &XdpContext) -> u32 {
    match try_steer::<CUT>(ctx) {
        Ok(delivery) => delivery.action(),
        Err(Skip(reason)) => {
            count(reason);
            xdp_action::XDP_PASS
        }
    }
}

/// The TC (tcx ingress) twin of `bg_steer`, for same-host senders and
/// drivers without native XDP. It never drops, and hands every packet,
/// steered or not, on to the programs after it (TCX_NEXT): TC_ACT_OK would
/// end the chain, and a firewall attached after it would see nothing.
#[classifier]
pub fn bg_steer_tc(ctx: TcContext) -> i32 {
    if let Err(Skip(reason)) = steer_tc::try_steer(&ctx) {
        count(reason);
    }
    TCX_NEXT
}

/// TC ingress beside XDP steering: makes the shadow copies of the
/// datagrams `bg_steer` handed over (`shadow.rs`), and sends a direct
/// server return original on (`dsr_tc.rs`). It never drops, and hands
/// every other packet on to the next tcx program (TCX_NEXT): TC_ACT_OK
/// would end the chain, and `bg_steer_tc` attached beside it during a
/// move to `attach = "tc"` would never see a packet.
#[classifier]
pub fn bg_shadow_tc(ctx: TcContext) -> i32 {
    shadow::from_xdp(&ctx).unwrap_or(TCX_NEXT)
}

/// tcx: go on to the next program (the kernel's `TCX_NEXT`); after the
/// last, the packet passes. On a cls_bpf filter (kernels before tcx) the
/// same value is TC_ACT_UNSPEC: the next filter, then a pass.
const TCX_NEXT: i32 = -1;

/// The devmap program of the shadow target's `SHADOW_DEVMAP` entry: the
/// broadcast copy, rewritten towards the target (`shadow.rs`).
#[xdp(map = "devmap")]
pub fn bg_shadow_copy(ctx: XdpContext) -> u32 {
    shadow::copy_xdp(&ctx)
}

/// Reverse NAT for replies of steered TCP flows (TC egress). Every packet
/// goes on to the programs after it (TCX_NEXT), as on ingress.
#[classifier]
pub fn bg_unnat(ctx: TcContext) -> i32 {
    match unnat::try_unnat(&ctx) {
        Ok(()) => {}
        Err(unnat::NotOurs) => count(counter::UNNAT_PASS),
    }
    TCX_NEXT
}

/// Writes the data path's clock (`bpf_jiffies64`) into `CLOCK`. The agent
/// runs it through BPF_PROG_TEST_RUN to age flows on the same clock.
#[xdp]
pub fn bg_clock(_ctx: XdpContext) -> u32 {
    let _ = CLOCK.set(CLOCK_SLOT, unsafe { bpf_jiffies64() }, 0);
    xdp_action::XDP_PASS
}

/// A `Skip` can come only before the DNAT's first write (the packet then
/// passes untouched); from the DNAT on (or its place, for direct server
/// return), the packet is steered and `Delivery` says what became of it.
#[inline(always)]
fn try_steer<const CUT: u32>(ctx: &XdpContext) -> Result<deliver::Delivery, Skip> {
    let pkt = parse::parse(ctx)?;
    if CUT == stage_cut::PARSE {
        return Ok(deliver::Delivery::Cut);
    }
    let target = steer::decide(ctx, &pkt)?;
    if CUT == stage_cut::DECIDE {
        return Ok(deliver::Delivery::Cut);
    }
    // Direct server return leaves the IP packet as the client sent it.
    if target.backend.mode == mode::NAT {
        nat::dnat(ctx, &pkt, &target.backend)?;
    }
    if CUT == stage_cut::DNAT {
        return Ok(deliver::Delivery::Cut);
    }
    count_steered(
        target.slot,
        (ctx.data_end() - ctx.data()) as u64,
        target.tcp,
    );
    if CUT == stage_cut::COUNT {
        return Ok(deliver::Delivery::Cut);
    }
    let shadow = shadow::sampled(&pkt, target.service).then_some(target.service);
    if CUT == stage_cut::SHADOW {
        return Ok(deliver::Delivery::Cut);
    }
    Ok(deliver::deliver(
        ctx,
        &pkt,
        &target.backend,
        target.slot,
        shadow,
    ))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
