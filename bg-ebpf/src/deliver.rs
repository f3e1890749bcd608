//! After DNAT: find the next hop and pick XDP_TX, XDP_REDIRECT or XDP_PASS.
//!
//! The FIB's answer is cached per CPU and per backend for
//! `NEXT_HOP_TTL_JIFFIES`, keyed on the backend address: `bpf_fib_lookup`
//! costs more than the rest of the program. Unresolved neighbours are never
//! cached, so the kernel's resolution is retried on every packet.
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::{bpf_fib_lookup, bpf_jiffies64},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use bg_common::{
    Backend, FAMILY_IPV4, HOP_FORWARD, HOP_FWD_DISABLED, HOP_KERNEL, HOP_LOCAL, HOP_NO_DEVMAP,
    NEXT_HOP_TTL_JIFFIES, NextHop, counter,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::maps::{NEXT_HOPS, REDIRECT_IFACES, count};
use crate::nat::decrement_ttl;
use crate::parse::{Packet, Skip, ptr_at};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Delivers a packet already rewritten towards `backend` (at `slot`).
#[inline(always)]
pub fn deliver(ctx: &XdpContext, pkt: &Packet, backend: &Backend, slot: u32) -> Result<u32, Skip> {
    // A tagged frame belongs to a VLAN device; let the kernel route it there.
    if pkt.vlan {
        count(counter::PASS_KERNEL_ROUTE);
        return Ok(xdp_action::XDP_PASS);
    }
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let now = unsafe { bpf_jiffies64() };
    let hop = NEXT_HOPS
        .get_ptr_mut(slot)
        .ok_or(Skip(counter::PASS_NO_BACKEND))?;
    // SAFETY: per-CPU slot; only this CPU touches it while the program runs.
    let hop = unsafe { &mut *hop };
    let fresh = hop.kind != 0
        && now.wrapping_sub(hop.stamp_jiffies) < NEXT_HOP_TTL_JIFFIES
        && hop.addr_be == backend.addr_be;
    if !fresh && !refresh(ctx, pkt, backend, ingress, now, hop)? {
        count(counter::PASS_NO_NEIGH);
        return Ok(xdp_action::XDP_PASS);
    }
    match hop.kind {
        HOP_FORWARD => {}
        HOP_LOCAL => {
            count(counter::PASS_LOCAL);
            return Ok(xdp_action::XDP_PASS);
        }
        HOP_FWD_DISABLED => {
            count(counter::PASS_FWD_DISABLED);
            return Ok(xdp_action::XDP_PASS);
        }
        HOP_NO_DEVMAP => {
            // Not redirectable: the kernel forwards it, unchanged but for the DNAT.
            count(counter::REDIRECT_FAILED);
            return Ok(xdp_action::XDP_PASS);
        }
        _ => {
            count(counter::PASS_KERNEL_ROUTE);
            return Ok(xdp_action::XDP_PASS);
        }
    }
    if !decrement_ttl(ctx, pkt)? {
        count(counter::PASS_KERNEL_ROUTE);
        return Ok(xdp_action::XDP_PASS);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    unsafe {
        (*eth).dst_addr = hop.dmac;
        (*eth).src_addr = hop.smac;
    }
    if hop.ifindex == ingress {
        count(counter::TX);
        return Ok(xdp_action::XDP_TX);
    }
    match REDIRECT_IFACES.redirect(hop.ifindex, 0) {
        Ok(action) => {
            count(counter::REDIRECT);
            Ok(action)
        }
        Err(_) => {
            // The interface left the devmap since the lookup; the frame is
            // already rewritten for the next hop, so it cannot go back to
            // the kernel. Counted so operators see it.
            hop.kind = 0;
            count(counter::REDIRECT_FAILED);
            debug!(
                ctx,
                "ifindex {} left the redirect map; frame dropped", hop.ifindex
            );
            Ok(xdp_action::XDP_DROP)
        }
    }
}

/// What to ask the FIB: the route a packet to `dst` arriving on `ifindex`
/// would take.
pub struct FibQuery {
    pub family: u8,
    pub proto: u8,
    pub tos: u8,
    pub ifindex: u32,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub dport_be: u16,
    pub tot_len: u16,
}

/// `bpf_fib_lookup` on `q`: its return code and answer.
#[inline(always)]
pub fn fib_lookup<C: EbpfContext>(ctx: &C, q: &FibQuery) -> (u32, FibParams) {
    // SAFETY: an all-zero bpf_fib_lookup is a valid input before we fill it.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.l4_protocol = q.proto;
    fib.dport = q.dport_be;
    fib.ifindex = q.ifindex;
    fib.__bindgen_anon_1.tot_len = q.tot_len;
    if q.family == FAMILY_IPV4 {
        fib.family = AF_INET;
        fib.__bindgen_anon_2.tos = q.tos;
        fib.__bindgen_anon_3.ipv4_src = q.src[0];
        fib.__bindgen_anon_4.ipv4_dst = q.dst[0];
    } else {
        fib.family = AF_INET6;
        fib.__bindgen_anon_3.ipv6_src = q.src;
        fib.__bindgen_anon_4.ipv6_dst = q.dst;
    }
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.as_ptr(),
            &mut fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    (rc, fib)
}

/// Asks the FIB and stores the answer in `hop`. Returns false when the
/// neighbour is not resolved yet (nothing is cached then).
#[inline(always)]
fn refresh(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    ingress: u32,
    now: u64,
    hop: &mut NextHop,
) -> Result<bool, Skip> {
    let frame_len = ctx.data_end() - ctx.data();
    let mut q = FibQuery {
        family: pkt.family,
        proto: pkt.proto,
        tos: 0,
        ifindex: ingress,
        src: [0; 4],
        dst: backend.addr_be,
        dport_be: backend.port_be,
        tot_len: (frame_len - pkt.l3_off) as u16,
    };
    if pkt.family == FAMILY_IPV4 {
        let ip: *const Ipv4Hdr = ptr_at(ctx, pkt.l3_off)?;
        q.tos = unsafe { (*ip).tos };
        q.src[0] = u32::from_ne_bytes(unsafe { (*ip).src_addr });
    } else {
        q.src = pkt.src_be;
    }
    let (rc, fib) = fib_lookup(ctx, &q);
    hop.kind = match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {
            if fib.ifindex != ingress && REDIRECT_IFACES.get(fib.ifindex).is_none() {
                HOP_NO_DEVMAP
            } else {
                HOP_FORWARD
            }
        }
        BPF_FIB_LKUP_RET_NOT_FWDED => HOP_LOCAL,
        BPF_FIB_LKUP_RET_FWD_DISABLED => HOP_FWD_DISABLED,
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            hop.kind = 0;
            return Ok(false);
        }
        _ => HOP_KERNEL,
    };
    hop.ifindex = fib.ifindex;
    hop.smac = fib.smac;
    hop.dmac = fib.dmac;
    hop.addr_be = backend.addr_be;
    hop.stamp_jiffies = now;
    Ok(true)
}
