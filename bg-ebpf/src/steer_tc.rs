//! Steering on TC ingress (tcx), for hosts where XDP does not fit: senders
//! on the same host (containers, veth) hand over frames whose checksum is
//! still partial, which XDP cannot finish, and some drivers have no native
//! XDP. Same maps, same decision as `bg_steer`; the rewrite goes through
//! the kernel's checksum helpers, which handle partial checksums, and the
//! kernel's own routing delivers the packet.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::bpf_csum_diff,
    programs::TcContext,
};
use bg_common::{Backend, FAMILY_IPV4, PROTO_UDP, counter, dsr_event, mode};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::maps::{count, count_dsr, count_steered};
use crate::parse::{self, Packet, Skip, TCP_CHECK_OFF, UDP_CHECK_OFF, bytes, ptr_at};
use crate::shadow::{self, Ends};
use crate::steer;

/// Headers the parser may read: Ethernet, a VLAN tag, IPv6 (or IPv4 with
/// options) and a TCP header with options.
const HEADERS_MAX: u32 = 14 + 4 + 60 + 60;

/// Steers one socket buffer; `Err` passes it untouched with its reason.
#[inline(always)]
pub fn try_steer(ctx: &TcContext) -> Result<(), Skip> {
    // Direct access reaches only the linear part: pull the headers in.
    let want = ctx.len().min(HEADERS_MAX);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        ctx.pull_data(want)
            .map_err(|_| Skip(counter::PASS_MALFORMED))?;
    }
    let pkt = parse::parse(ctx)?;
    let target = steer::decide(ctx, &pkt)?;
    // Direct server return needs the frame's MACs or an outer header, which
    // XDP gives: the config refuses it with TC steering, so only maps
    // written by hand get here.
    if target.backend.mode != mode::NAT {
        count_dsr(dsr_event::UNSUPPORTED);
        return Err(Skip(counter::PASS_NO_BACKEND));
    }
    dnat(ctx, &pkt, &target.backend)?;
    count_steered(target.slot, u64::from(ctx.len()), target.tcp);
    count(counter::TC_TO_KERNEL);
    if shadow::sampled(&pkt, target.service) {
        let b = &target.backend;
        let now = Ends::of(&pkt.src_be, pkt.src_port_be, &b.addr_be, b.port_be);
        shadow::copy(ctx, &pkt, target.service, &now);
    }
    Ok(())
}

/// Rewrites the destination in place, then fixes the checksums through the
/// kernel's helpers: BPF_F_PSEUDO_HDR updates what the pseudo-header adds
/// to a partial checksum, and the port is covered by the checksum the
/// kernel or NIC completes later. Writes come first because the helpers
/// invalidate packet pointers; they take offsets.
#[inline(always)]
fn dnat(ctx: &TcContext, pkt: &Packet, backend: &Backend) -> Result<(), Skip> {
    let failed = |_| Skip(counter::PASS_MALFORMED);
    let (check, mangled) = if pkt.proto == PROTO_UDP {
        // UDP over IPv4 may carry no checksum (0): it stays 0.
        (pkt.l4_off + UDP_CHECK_OFF, u64::from(BPF_F_MARK_MANGLED_0))
    } else {
        (pkt.l4_off + TCP_CHECK_OFF, 0)
    };
    let pseudo = u64::from(BPF_F_PSEUDO_HDR) | mangled;
    if pkt.family == FAMILY_IPV4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, pkt.l3_off)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { (*ip).dst_addr = backend.addr_be[0].to_ne_bytes() };
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, pkt.l3_off)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe { (*ip).dst_addr = bytes(backend.addr_be) };
    }
    let port: *mut [u8; 2] = ptr_at(ctx, pkt.l4_off + 2)?;
    // SAFETY: bounds checked by ptr_at.
    unsafe { *port = backend.port_be.to_ne_bytes() };
    if pkt.family == FAMILY_IPV4 {
        let (old, new) = (u64::from(pkt.dst_be[0]), u64::from(backend.addr_be[0]));
        ctx.l4_csum_replace(check, old, new, pseudo | 4)
            .map_err(failed)?;
        ctx.l3_csum_replace(pkt.l3_off + 10, old, new, 4)
            .map_err(failed)?;
    } else {
        // One difference for the 16 bytes, applied in one call.
        let mut old = pkt.dst_be;
        let mut new = backend.addr_be;
        // SAFETY: two 16-byte buffers on the stack.
        let diff = unsafe { bpf_csum_diff(old.as_mut_ptr(), 16, new.as_mut_ptr(), 16, 0) };
        if diff < 0 {
            return Err(Skip(counter::PASS_MALFORMED));
        }
        ctx.l4_csum_replace(check, 0, diff as u64, pseudo)
            .map_err(failed)?;
    }
    ctx.l4_csum_replace(
        check,
        u64::from(pkt.dst_port_be),
        u64::from(backend.port_be),
        mangled | 2,
    )
    .map_err(failed)
}
