//! A direct server return datagram that XDP handed to the kernel for its
//! shadow copy (`shadow::from_xdp`): once the copy is made, it goes on from
//! TC as XDP would have sent it (`deliver`, `dsr`). The kernel cannot: it
//! would route the packet by its destination, the service address.
use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_FIB_LKUP_RET_SUCCESS,
        TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::generated::bpf_redirect,
    programs::TcContext,
};
use bg_common::{Backend, FAMILY_IPV4, NextHop, dsr_event, mode};
use network_types::eth::EthHdr;

use crate::deliver::{FibQuery, fib_lookup, route_facts};
use crate::dsr::{ETH_LEN, IPV6_LEN, Inner, outer_len, write_outer};
use crate::maps::{BACKENDS, TUNNELS, count_dsr};
use crate::nat::decrement_ttl;
use crate::parse::{Packet, ptr_at};

/// The backend at `slot`, when its mode is direct server return.
#[inline(always)]
fn dsr_backend(slot: u32) -> Option<Backend> {
    BACKENDS.get(slot).copied().filter(|b| b.mode != mode::NAT)
}

/// A DSR original TC could not read: it goes to the kernel untouched,
/// counted. NAT originals go on as the kernel routes them.
#[inline(always)]
pub fn unsent(slot: u32) -> Option<i32> {
    if dsr_backend(slot).is_some() {
        count_dsr(dsr_event::UNSUPPORTED);
    }
    None
}

/// Sends the datagram on to `slot`'s backend if its mode is DSR: the
/// redirect's action, or None to let the kernel have it (NAT; or DSR that
/// could not be sent, counted as `dsr_unsupported`).
#[inline(always)]
pub fn send_on(ctx: &TcContext, pkt: &Packet, slot: u32) -> Option<i32> {
    let backend = dsr_backend(slot)?;
    let sent = hop(ctx, pkt, &backend).and_then(|hop| match backend.mode {
        mode::DSR_L2 => by_mac(ctx, pkt, &hop),
        _ => by_tunnel(ctx, pkt, &backend, slot, &hop),
    });
    if sent.is_none() {
        count_dsr(dsr_event::UNSUPPORTED);
    }
    sent
}

/// The FIB's next hop towards the backend, as `deliver::refresh` asks it
/// (XDP checked the MTU and, for dsr-l2, that the backend is on the link,
/// moments ago; checked again here as the route may have changed).
#[inline(always)]
fn hop(ctx: &TcContext, pkt: &Packet, backend: &Backend) -> Option<NextHop> {
    let q = FibQuery {
        family: pkt.family,
        proto: pkt.proto,
        tos: 0,
        // SAFETY: reading a field of the context the kernel handed us.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        src: pkt.src_be,
        dst: backend.addr_be,
        dport_be: backend.port_be,
        tot_len: 0,
    };
    let (rc, fib) = fib_lookup(ctx, &q);
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        return None;
    }
    let (on_link, mtu) = route_facts(&fib, backend);
    let l3_len = ctx.len() as usize - pkt.l3_off + outer_len(backend);
    if backend.mode == mode::DSR_L2 && !on_link || (mtu != 0 && l3_len > usize::from(mtu)) {
        return None;
    }
    Some(NextHop {
        ifindex: fib.ifindex,
        dmac: fib.dmac,
        smac: fib.smac,
        ..NextHop::default()
    })
}

/// dsr-l2: the MACs and the TTL change, nothing else.
#[inline(always)]
fn by_mac(ctx: &TcContext, pkt: &Packet, hop: &NextHop) -> Option<i32> {
    if pkt.vlan || !decrement_ttl(ctx, pkt).ok()? {
        return None;
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*eth).dst_addr = hop.dmac;
        (*eth).src_addr = hop.smac;
    }
    count_dsr(dsr_event::L2);
    redirect(hop.ifindex)
}

/// dsr-ipip: room for the outer header after the MACs, then the same
/// headers `dsr::encapsulate` writes.
#[inline(always)]
fn by_tunnel(
    ctx: &TcContext,
    pkt: &Packet,
    backend: &Backend,
    slot: u32,
    hop: &NextHop,
) -> Option<i32> {
    let tunnel = TUNNELS
        .get(slot)
        .copied()
        .filter(|t| t.family == backend.family)?;
    if pkt.vlan {
        return None;
    }
    let inner = Inner::of(ctx).ok()?;
    let flags = if backend.family == FAMILY_IPV4 {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
    } else {
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6
    };
    ctx.adjust_room(
        outer_len(backend) as i32,
        BPF_ADJ_ROOM_MAC,
        u64::from(flags),
    )
    .ok()?;
    let want = (ETH_LEN + IPV6_LEN) as u32;
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        ctx.pull_data(want).ok()?;
    }
    let head: *mut [u8; ETH_LEN + IPV6_LEN] = ptr_at(ctx, 0).ok()?;
    // SAFETY: ETH_LEN + IPV6_LEN writable bytes, checked by ptr_at.
    unsafe { write_outer(head.cast(), backend.family, &inner, backend, &tunnel, hop) };
    count_dsr(dsr_event::IPIP);
    redirect(hop.ifindex)
}

#[inline(always)]
fn redirect(ifindex: u32) -> Option<i32> {
    // SAFETY: a helper call with plain arguments.
    let rc = unsafe { bpf_redirect(ifindex, 0) };
    (rc == i64::from(TC_ACT_REDIRECT)).then_some(TC_ACT_REDIRECT)
}
