//! Reverse NAT on egress (TC): replies of steered TCP flows leave with the
//! service address and port as their source, or the client's TCP would
//! reject them. Everything else passes untouched.
//!
//! Checksums go through the kernel's csum helpers, which also handle
//! locally generated replies whose TCP checksum is still partial
//! (CHECKSUM_PARTIAL): BPF_F_PSEUDO_HDR updates only what the pseudo-header
//! contributes.
use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use bg_common::{FAMILY_IPV4, FAMILY_IPV6, FLOW_CLOSING, FlowKey, PROTO_TCP, counter};

use crate::maps::{PENDING_FLOWS, PENDING_REV, REV_FLOWS, count};
use crate::parse::{ETH_P_IP, ETH_P_IPV6, TCP_ACK, TCP_CHECK_OFF, TCP_FIN, TCP_RST, TCP_SYN};

const ETH_LEN: usize = 14;

/// A reply that is not ours, or that cannot be parsed: pass it untouched.
pub struct NotOurs;

#[inline(always)]
fn load<T>(ctx: &TcContext, off: usize) -> Result<T, NotOurs> {
    ctx.load::<T>(off).map_err(|_| NotOurs)
}

#[inline(always)]
fn store<T>(ctx: &TcContext, off: usize, v: &T) -> Result<(), NotOurs> {
    ctx.store(off, v, 0).map_err(|_| NotOurs)
}

/// Rewrites the source of a reply of a steered flow. Returns whether it did.
#[inline(always)]
pub fn try_unnat(ctx: &TcContext) -> Result<(), NotOurs> {
    let ether_type = u16::from_be(load::<u16>(ctx, 12)?);
    let (family, l4_off, src_off, src_be, dst_be) = match ether_type {
        ETH_P_IP => {
            let vihl: u8 = load(ctx, ETH_LEN)?;
            let ihl = ((vihl & 0x0f) as usize) * 4;
            let frags = u16::from_be(load::<u16>(ctx, ETH_LEN + 6)?);
            if vihl >> 4 != 4 || ihl < 20 || frags & 0x1fff != 0 {
                return Err(NotOurs);
            }
            if load::<u8>(ctx, ETH_LEN + 9)? != PROTO_TCP {
                return Err(NotOurs);
            }
            let src: u32 = load(ctx, ETH_LEN + 12)?;
            let dst: u32 = load(ctx, ETH_LEN + 16)?;
            (
                FAMILY_IPV4,
                ETH_LEN + ihl,
                ETH_LEN + 12,
                [src, 0, 0, 0],
                [dst, 0, 0, 0],
            )
        }
        ETH_P_IPV6 => {
            if load::<u8>(ctx, ETH_LEN + 6)? != PROTO_TCP {
                return Err(NotOurs);
            }
            let src: [u32; 4] = load(ctx, ETH_LEN + 8)?;
            let dst: [u32; 4] = load(ctx, ETH_LEN + 24)?;
            (FAMILY_IPV6, ETH_LEN + 40, ETH_LEN + 8, src, dst)
        }
        _ => return Err(NotOurs),
    };
    let src_port: u16 = load(ctx, l4_off)?;
    let dst_port: u16 = load(ctx, l4_off + 2)?;
    let seq: u32 = load(ctx, l4_off + 4)?;
    let flags: u8 = load(ctx, l4_off + 13)?;
    let key = FlowKey {
        client_be: dst_be,
        server_be: src_be,
        client_port_be: dst_port,
        server_port_be: src_port,
        proto: PROTO_TCP,
        family,
        _pad: [0; 2],
    };
    // A SYN-ACK answers a handshake: its pending entry first. A client
    // that reuses its ports to the same backend finds the old connection's
    // REV_FLOWS entry still there; taken first, the server's ISN was never
    // recorded, the handshake never admitted, and the live connection
    // stayed invisible to `drain` (the soak's resets of 2026-12-04/06).
    let syn_ack = flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
    let handshake = if syn_ack {
        unsafe { PENDING_REV.get(key) }
    } else {
        None
    };
    // Otherwise established flows first: their replies are nearly all the
    // traffic.
    let (rev, established) = match handshake {
        Some(rev) => (*rev, false),
        None => match unsafe { REV_FLOWS.get(key) } {
            Some(rev) => (*rev, true),
            None => (*unsafe { PENDING_REV.get(key) }.ok_or(NotOurs)?, false),
        },
    };
    let check = l4_off + TCP_CHECK_OFF;
    let pseudo = u64::from(BPF_F_PSEUDO_HDR);
    if family == FAMILY_IPV4 {
        let (old, new) = (u64::from(src_be[0]), u64::from(rev.service_be[0]));
        ctx.l4_csum_replace(check, old, new, pseudo | 4)
            .map_err(|_| NotOurs)?;
        ctx.l3_csum_replace(ETH_LEN + 10, old, new, 4)
            .map_err(|_| NotOurs)?;
        store(ctx, src_off, &rev.service_be[0])?;
    } else {
        let mut i = 0;
        while i < 4 {
            let (old, new) = (u64::from(src_be[i]), u64::from(rev.service_be[i]));
            ctx.l4_csum_replace(check, old, new, pseudo | 4)
                .map_err(|_| NotOurs)?;
            i += 1;
        }
        store(ctx, src_off, &rev.service_be)?;
    }
    ctx.l4_csum_replace(
        check,
        u64::from(src_port),
        u64::from(rev.service_port_be),
        2,
    )
    .map_err(|_| NotOurs)?;
    store(ctx, l4_off, &rev.service_port_be)?;

    let flow_key = FlowKey {
        server_be: rev.service_be,
        server_port_be: rev.service_port_be,
        ..key
    };
    let closing = flags & (TCP_FIN | TCP_RST) != 0;
    if established {
        // A server-side close also ends the flow, so drains see it.
        if closing {
            crate::flow::mark_closing(&flow_key);
        }
    } else if let Some(pending) = PENDING_FLOWS.get_ptr_mut(flow_key) {
        // SAFETY: as above.
        let pending = unsafe { &mut *pending };
        if closing {
            pending.state = FLOW_CLOSING;
        } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            // The SYN-ACK: the client's final ACK must acknowledge this.
            pending.server_isn = u32::from_be(seq);
            pending.isn_seen = 1;
        }
    }
    count(counter::UNNAT);
    Ok(())
}
