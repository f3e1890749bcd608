//! Shadow copies of UDP syslog to the new colour (`bg_common::shadow`).
//! The original always goes on to blue as it would without a shadow: every
//! failure here costs the copy, never the original.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_SUCCESS, xdp_action},
    helpers::generated::{bpf_csum_diff, bpf_ktime_get_ns, bpf_xdp_adjust_meta},
    programs::{TcContext, XdpContext},
};
use bg_common::{
    FAMILY_IPV4, PROTO_UDP, ServiceKey,
    shadow::{
        self, BROADCAST_SLOT, BUDGET_SLOT, META_LEN, META_MAGIC, SHARE_SLOT, ShadowMeta,
        ShadowStats,
    },
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::csum::{fold, replace, word_sum, word_sum_complement};
use crate::deliver::{FibQuery, fib_lookup};
use crate::dsr_tc;
use crate::maps::{
    SHADOW, SHADOW_BUDGET, SHADOW_BY_BLUE, SHADOW_STATS, SHADOW_TARGETS, SPLIT_SEED,
};
use crate::parse::{self, Packet, UDP_CHECK_OFF, bytes, ptr_at};

/// Headers the TC parser may need in the linear part (see `steer_tc`).
const HEADERS_MAX: u32 = 14 + 4 + 60 + 60;

/// Whether this datagram of `service` is copied. Off, it costs one array
/// read per UDP datagram; TCP never reads it.
#[inline(always)]
pub fn sampled(pkt: &Packet, service: u32) -> bool {
    if pkt.proto != PROTO_UDP || pkt.vlan {
        return false;
    }
    let weight = SHADOW.get(SHARE_SLOT).copied().unwrap_or(0);
    if weight == 0 {
        return false;
    }
    match SHADOW_TARGETS.get(service) {
        Some(t) if t.family == pkt.family => {}
        _ => return false,
    }
    let seed = SPLIT_SEED.get(0).copied().unwrap_or(0);
    if pkt.family == FAMILY_IPV4 {
        shadow::sampled(weight, seed, &[pkt.src_be[0], 0, 0, 0])
    } else {
        shadow::sampled(weight, seed, &pkt.src_be)
    }
}

#[inline(always)]
fn stats(service: u32) -> Option<&'static mut ShadowStats> {
    // SAFETY: per-CPU slot; only this CPU touches it while the program runs.
    SHADOW_STATS
        .get_ptr_mut(service)
        .map(|s| unsafe { &mut *s })
}

/// XDP: marks a sampled datagram with its service and backend slot in the
/// metadata, for whichever copier takes it (`bg_shadow_copy` after a
/// broadcast, or `bg_shadow_tc` after a hand-over). False when the driver
/// has no room.
#[inline(always)]
pub fn tag(ctx: &XdpContext, service: u32, slot: u32) -> bool {
    let Some(s) = stats(service) else {
        return false;
    };
    // SAFETY: the kernel checks the headroom; packet pointers are read
    // again from the context afterwards.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(META_LEN as i32)) } != 0 {
        s.no_metadata += 1;
        return false;
    }
    let (meta, data) = (ctx.metadata(), ctx.data());
    if meta + META_LEN > data {
        s.no_metadata += 1;
        return false;
    }
    // SAFETY: bounds checked against data just above.
    unsafe {
        *(meta as *mut ShadowMeta) = ShadowMeta {
            magic: META_MAGIC,
            service,
            slot,
        }
    };
    true
}

/// XDP: whether copies go by devmap broadcast for datagrams redirected
/// out of `ifindex` (the agent armed it for blue's interface).
#[inline(always)]
pub fn broadcast_from(ifindex: u32) -> bool {
    SHADOW.get(BROADCAST_SLOT).copied().unwrap_or(0) == ifindex
}

/// XDP: counts a broadcast.
#[inline(always)]
pub fn broadcast(service: u32) {
    if let Some(s) = stats(service) {
        s.broadcast += 1;
    }
}

/// XDP: whether this CPU may copy one more datagram (`shadow_max_pps`,
/// by either copier). Past what a copier carries it would drop originals:
/// the kernel's path at its receive ring, a broadcast at the egress rings.
/// Past the budget datagrams go on by XDP without a copy.
#[inline(always)]
pub fn within_budget(service: u32) -> bool {
    let Some(s) = stats(service) else {
        return false;
    };
    let budget = SHADOW.get(BUDGET_SLOT).copied().unwrap_or(0);
    if budget == 0 {
        return true;
    }
    let Some(b) = SHADOW_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU slot; only this CPU touches it while the program runs.
    let b = unsafe { &mut *b };
    if !shadow::take(b, unsafe { bpf_ktime_get_ns() }, u64::from(budget)) {
        s.over_budget += 1;
        return false;
    }
    true
}

/// XDP: counts a hand-over to the kernel's path.
#[inline(always)]
pub fn hand_over(service: u32) -> bool {
    let Some(s) = stats(service) else {
        return false;
    };
    s.handed_to_tc += 1;
    true
}

/// The devmap program of the target's `SHADOW_DEVMAP` entry: rewrites a
/// broadcast copy, still addressed to blue's backend, towards the shadow
/// target. Any other frame sent out of that interface passes untouched.
#[inline(always)]
pub fn copy_xdp(ctx: &XdpContext) -> u32 {
    let Ok(pkt) = parse::parse(ctx) else {
        return xdp_action::XDP_PASS;
    };
    let key = ServiceKey {
        addr_be: pkt.dst_be,
        port_be: pkt.dst_port_be,
        proto: pkt.proto,
        family: pkt.family,
    };
    // SAFETY: a plain map lookup; the value is copied out.
    let Some(service) = (unsafe { SHADOW_BY_BLUE.get(key) }).copied() else {
        return xdp_action::XDP_PASS;
    };
    let Some(s) = stats(service) else {
        return xdp_action::XDP_DROP;
    };
    match rewrite_xdp(ctx, &pkt, service) {
        Ok(()) => {
            s.copied += 1;
            s.bytes += (ctx.data_end() - ctx.data()) as u64;
            xdp_action::XDP_PASS
        }
        // Never send green a frame still addressed to blue.
        Err(()) => {
            s.copy_failed += 1;
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn rewrite_xdp(ctx: &XdpContext, pkt: &Packet, service: u32) -> Result<(), ()> {
    let t = SHADOW_TARGETS.get(service).copied().ok_or(())?;
    if pkt.proto != PROTO_UDP || t.family != pkt.family {
        return Err(());
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| ())?;
    // The UDP header whole: ports, then the checksum at 6.
    let udp: *mut [u16; 4] = ptr_at(ctx, pkt.l4_off).map_err(|_| ())?;
    // Sums of what leaves and what arrives: addresses (in both checksums)
    // and ports (UDP's only).
    let mut removed: u32 = 0;
    let mut added: u32 = 0;
    if pkt.family == FAMILY_IPV4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, pkt.l3_off).map_err(|_| ())?;
        removed += word_sum_complement(pkt.src_be[0]) + word_sum_complement(pkt.dst_be[0]);
        added += word_sum(t.src_be[0]) + word_sum(t.dst_be[0]);
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            (*ip).src_addr = t.src_be[0].to_ne_bytes();
            (*ip).dst_addr = t.dst_be[0].to_ne_bytes();
            let c = u16::from_ne_bytes((*ip).check);
            (*ip).check = replace(c, fold(removed) as u32, fold(added) as u32).to_ne_bytes();
        }
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, pkt.l3_off).map_err(|_| ())?;
        let mut i = 0;
        while i < 4 {
            removed += word_sum_complement(pkt.src_be[i]) + word_sum_complement(pkt.dst_be[i]);
            added += word_sum(t.src_be[i]) + word_sum(t.dst_be[i]);
            i += 1;
        }
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            (*ip).src_addr = bytes(t.src_be);
            (*ip).dst_addr = bytes(t.dst_be);
        }
    }
    removed = u32::from(fold(removed));
    added = u32::from(fold(added));
    removed += u32::from(!pkt.src_port_be) + u32::from(!pkt.dst_port_be);
    added += u32::from(t.src_port_be) + u32::from(t.dst_port_be);
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        (*udp)[0] = t.src_port_be;
        (*udp)[1] = t.dst_port_be;
        (*eth).dst_addr = t.dmac;
        (*eth).src_addr = t.smac;
        let old = (*udp)[3];
        // IPv4 UDP may carry no checksum (0); it stays 0.
        if !(old == 0 && pkt.family == FAMILY_IPV4) {
            let mut new = replace(old, fold(removed) as u32, fold(added) as u32);
            if new == 0 {
                new = 0xffff; // RFC 768: a computed 0 is sent as all ones
            }
            (*udp)[3] = new;
        }
    }
    Ok(())
}

/// TC ingress beside XDP steering: copies what `hand_over` marked; passes
/// everything else at the cost of one metadata check. A direct server
/// return original is then sent on from here: the action, if it was.
#[inline(always)]
pub fn from_xdp(ctx: &TcContext) -> Option<i32> {
    // SAFETY: reading two fields of the context the kernel handed us.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + META_LEN > data {
        return None;
    }
    // SAFETY: bounds checked against data just above.
    let m = unsafe { *(meta as *const ShadowMeta) };
    if m.magic != META_MAGIC {
        return None;
    }
    let want = ctx.len().min(HEADERS_MAX);
    if ((ctx.data_end() - ctx.data()) as u32) < want && ctx.pull_data(want).is_err() {
        if let Some(s) = stats(m.service) {
            s.copy_failed += 1;
        }
        return dsr_tc::unsent(m.slot);
    }
    let Ok(pkt) = parse::parse(ctx) else {
        if let Some(s) = stats(m.service) {
            s.copy_failed += 1;
        }
        return dsr_tc::unsent(m.slot);
    };
    let now = Ends::of(&pkt.src_be, pkt.src_port_be, &pkt.dst_be, pkt.dst_port_be);
    copy(ctx, &pkt, m.service, &now);
    dsr_tc::send_on(ctx, &pkt, m.slot)
}

/// A datagram's addresses and ports, network byte order.
pub struct Ends {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport_be: u16,
    pub dport_be: u16,
}

impl Ends {
    #[inline(always)]
    pub fn of(src: &[u32; 4], sport_be: u16, dst: &[u32; 4], dport_be: u16) -> Self {
        Self {
            src: *src,
            dst: *dst,
            sport_be,
            dport_be,
        }
    }
}

/// Copies the datagram (whose headers read `now`) to `service`'s shadow
/// target: rewrite it there, clone it out, rewrite it back. The clone is
/// made from the rewritten skb; the helpers that rewrite it back unshare
/// the original's headers first, so the copy keeps its own.
#[inline(always)]
pub fn copy(ctx: &TcContext, pkt: &Packet, service: u32, now: &Ends) {
    let Some(s) = stats(service) else { return };
    let Some(t) = SHADOW_TARGETS.get(service).copied() else {
        return;
    };
    if t.family != pkt.family {
        return;
    }
    let to = Ends::of(&t.src_be, t.src_port_be, &t.dst_be, t.dst_port_be);
    // The device TC runs on: the copy is routed as if it arrived there,
    // like the original (forwarding must be on, as for steering).
    let ingress = unsafe { (*ctx.skb.skb).ifindex };
    let q = FibQuery {
        family: pkt.family,
        proto: PROTO_UDP,
        tos: 0,
        ifindex: ingress,
        src: t.src_be,
        dst: t.dst_be,
        dport_be: t.dst_port_be,
        tot_len: (ctx.len() as usize - pkt.l3_off) as u16,
    };
    let (rc, fib) = fib_lookup(ctx, &q);
    if rc != BPF_FIB_LKUP_RET_SUCCESS {
        s.no_route += 1;
        return;
    }
    let Ok(eth) = ptr_at::<EthHdr, _>(ctx, 0) else {
        s.copy_failed += 1;
        return;
    };
    // SAFETY: bounds checked by ptr_at.
    let (dmac, smac) = unsafe { ((*eth).dst_addr, (*eth).src_addr) };
    if rewrite(ctx, pkt, now, &to, &fib.dmac, &fib.smac).is_err() {
        // Nothing was changed unless the writes went through: undo them.
        let _ = rewrite(ctx, pkt, &to, now, &dmac, &smac);
        s.copy_failed += 1;
        return;
    }
    match ctx.clone_redirect(fib.ifindex, 0) {
        Ok(()) => {
            s.copied += 1;
            s.bytes += u64::from(ctx.len());
        }
        Err(_) => s.copy_failed += 1,
    }
    if rewrite(ctx, pkt, &to, now, &dmac, &smac).is_err() {
        // Cannot happen once the same rewrite went through one way; if it
        // did, the kernel's checksum check drops what would be corrupt.
        s.copy_failed += 1;
    }
}

/// Rewrites addresses, ports and MACs from `from` to `to`, fixing the IP
/// and UDP checksums through the kernel's helpers (partial checksums of
/// same-host senders included). Writes come first: the helpers invalidate
/// packet pointers.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    pkt: &Packet,
    from: &Ends,
    to: &Ends,
    dmac: &[u8; 6],
    smac: &[u8; 6],
) -> Result<(), ()> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| ())?;
    let ports: *mut [u16; 2] = ptr_at(ctx, pkt.l4_off).map_err(|_| ())?;
    let v4 = pkt.family == FAMILY_IPV4;
    if v4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, pkt.l3_off).map_err(|_| ())?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            (*ip).src_addr = to.src[0].to_ne_bytes();
            (*ip).dst_addr = to.dst[0].to_ne_bytes();
        }
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, pkt.l3_off).map_err(|_| ())?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            (*ip).src_addr = bytes(to.src);
            (*ip).dst_addr = bytes(to.dst);
        }
    }
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        *ports = [to.sport_be, to.dport_be];
        (*eth).dst_addr = *dmac;
        (*eth).src_addr = *smac;
    }
    let mangled = u64::from(BPF_F_MARK_MANGLED_0);
    let check = pkt.l4_off + UDP_CHECK_OFF;
    let mut old = [0u32; 8];
    let mut new = [0u32; 8];
    let words: u32 = if v4 { 2 } else { 8 };
    if v4 {
        (old[0], old[1]) = (from.src[0], from.dst[0]);
        (new[0], new[1]) = (to.src[0], to.dst[0]);
    } else {
        let mut i = 0;
        while i < 4 {
            old[i] = from.src[i];
            old[i + 4] = from.dst[i];
            new[i] = to.src[i];
            new[i + 4] = to.dst[i];
            i += 1;
        }
    }
    // SAFETY: two stack buffers of at least `words` words.
    let addrs =
        unsafe { bpf_csum_diff(old.as_mut_ptr(), words * 4, new.as_mut_ptr(), words * 4, 0) };
    let mut old_ports = [u32::from(from.sport_be) | (u32::from(from.dport_be) << 16)];
    let mut new_ports = [u32::from(to.sport_be) | (u32::from(to.dport_be) << 16)];
    // SAFETY: two one-word stack buffers.
    let ports = unsafe { bpf_csum_diff(old_ports.as_mut_ptr(), 4, new_ports.as_mut_ptr(), 4, 0) };
    if addrs < 0 || ports < 0 {
        return Err(());
    }
    if v4 {
        ctx.l3_csum_replace(pkt.l3_off + 10, 0, addrs as u64, 0)
            .map_err(|_| ())?;
    }
    ctx.l4_csum_replace(
        check,
        0,
        addrs as u64,
        u64::from(BPF_F_PSEUDO_HDR) | mangled,
    )
    .map_err(|_| ())?;
    ctx.l4_csum_replace(check, 0, ports as u64, mangled)
        .map_err(|_| ())
}
