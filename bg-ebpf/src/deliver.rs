//! After DNAT: find the next hop with `bpf_fib_lookup` and pick the action.
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};
use bg_common::{Backend, FAMILY_IPV4, counter};
use network_types::eth::EthHdr;

use crate::maps::{REDIRECT_IFACES, count};
use crate::nat::decrement_ttl;
use crate::parse::{Packet, Skip, ptr_at};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Chooses XDP_TX, XDP_REDIRECT or XDP_PASS for a packet already rewritten
/// towards `backend`, and counts the choice.
#[inline(always)]
pub fn deliver(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Result<u32, Skip> {
    // A tagged frame belongs to a VLAN device; let the kernel route it there.
    if pkt.vlan {
        count(counter::PASS_KERNEL_ROUTE);
        return Ok(xdp_action::XDP_PASS);
    }
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: an all-zero bpf_fib_lookup is a valid input before we fill it.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.l4_protocol = pkt.proto;
    fib.dport = backend.port_be;
    fib.ifindex = ingress;
    let frame_len = ctx.data_end() - ctx.data();
    fib.__bindgen_anon_1.tot_len = (frame_len - pkt.l3_off) as u16;
    if pkt.family == FAMILY_IPV4 {
        let ip: *const network_types::ip::Ipv4Hdr = ptr_at(ctx, pkt.l3_off)?;
        fib.family = AF_INET;
        fib.__bindgen_anon_2.tos = unsafe { (*ip).tos };
        fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(unsafe { (*ip).src_addr });
        fib.__bindgen_anon_4.ipv4_dst = backend.addr_be[0];
    } else {
        let ip: *const network_types::ip::Ipv6Hdr = ptr_at(ctx, pkt.l3_off)?;
        fib.family = AF_INET6;
        let s = unsafe { (*ip).src_addr };
        fib.__bindgen_anon_3.ipv6_src = [
            u32::from_ne_bytes([s[0], s[1], s[2], s[3]]),
            u32::from_ne_bytes([s[4], s[5], s[6], s[7]]),
            u32::from_ne_bytes([s[8], s[9], s[10], s[11]]),
            u32::from_ne_bytes([s[12], s[13], s[14], s[15]]),
        ];
        fib.__bindgen_anon_4.ipv6_dst = backend.addr_be;
    }
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut fib,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NOT_FWDED => {
            count(counter::PASS_LOCAL);
            return Ok(xdp_action::XDP_PASS);
        }
        BPF_FIB_LKUP_RET_FWD_DISABLED => {
            count(counter::PASS_FWD_DISABLED);
            return Ok(xdp_action::XDP_PASS);
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            count(counter::PASS_NO_NEIGH);
            return Ok(xdp_action::XDP_PASS);
        }
        _ => {
            count(counter::PASS_KERNEL_ROUTE);
            return Ok(xdp_action::XDP_PASS);
        }
    }
    let egress = fib.ifindex;
    // Check the devmap before touching MACs or TTL: a frame we cannot redirect
    // must reach the kernel unchanged apart from the DNAT, or it would be lost.
    if egress != ingress && REDIRECT_IFACES.get(egress).is_none() {
        count(counter::REDIRECT_FAILED);
        return Ok(xdp_action::XDP_PASS);
    }
    if !decrement_ttl(ctx, pkt)? {
        count(counter::PASS_KERNEL_ROUTE);
        return Ok(xdp_action::XDP_PASS);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    unsafe {
        (*eth).dst_addr = fib.dmac;
        (*eth).src_addr = fib.smac;
    }
    if egress == ingress {
        count(counter::TX);
        return Ok(xdp_action::XDP_TX);
    }
    match REDIRECT_IFACES.redirect(egress, 0) {
        Ok(action) => {
            count(counter::REDIRECT);
            Ok(action)
        }
        Err(_) => {
            // Raced with removal from the devmap; the frame is already
            // rewritten for the next hop, so dropping it is the only honest
            // outcome left. Counted so operators see it.
            count(counter::REDIRECT_FAILED);
            Ok(xdp_action::XDP_DROP)
        }
    }
}
