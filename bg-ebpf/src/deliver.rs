//! After DNAT (or, for direct server return, instead of it): find the next
//! hop and pick XDP_TX, XDP_REDIRECT or XDP_PASS.
//!
//! The FIB's answer is cached per CPU and per backend for
//! `NEXT_HOP_TTL_JIFFIES`, keyed on the backend address: `bpf_fib_lookup`
//! costs more than the rest of the program. Unresolved neighbours are never
//! cached, so the kernel's resolution is retried on every packet.
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, BPF_FIB_LKUP_RET_FWD_DISABLED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::{bpf_fib_lookup, bpf_jiffies64},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use bg_common::{
    Backend, FAMILY_IPV4, HOP_FORWARD, HOP_FWD_DISABLED, HOP_KERNEL, HOP_LOCAL, HOP_NO_DEVMAP,
    NEXT_HOP_TTL_JIFFIES, NextHop, counter, dsr_event, mode,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::dsr;
use crate::maps::{NEXT_HOPS, REDIRECT_IFACES, SHADOW_DEVMAP, TUNNELS, count, count_dsr};
use crate::nat::decrement_ttl;
use crate::parse::{Packet, Skip, ptr_at};
use crate::shadow;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// What becomes of a packet after its DNAT: one action and one counter.
/// Nothing past the DNAT can skip steering, so a steered packet is counted
/// once, as steered, and once here.
#[derive(Clone, Copy)]
pub enum Delivery {
    /// Sent back out of the ingress interface (`counter::TX`).
    Tx,
    /// Redirected through the devmap (`counter::REDIRECT`); the action
    /// `bpf_redirect_map` returned.
    Redirect(u32),
    /// Handed to the kernel, rewritten only by the DNAT; the counter says
    /// why (a `PASS_*` reason, or `REDIRECT_FAILED`).
    Kernel(u32),
    /// Handed to the kernel for its shadow copy (counted in
    /// `SHADOW_STATS`); the action is XDP_PASS.
    Shadow(u32),
    /// The benchmark stopped the program early (`BG_STAGE_CUT`): passed,
    /// counted nowhere. The agent's program never takes it.
    Cut,
}

impl Delivery {
    /// Counts the delivery and gives the XDP action.
    #[inline(always)]
    pub fn action(self) -> u32 {
        match self {
            Delivery::Tx => {
                count(counter::TX);
                xdp_action::XDP_TX
            }
            Delivery::Redirect(action) => {
                count(counter::REDIRECT);
                action
            }
            Delivery::Kernel(reason) => {
                count(reason);
                xdp_action::XDP_PASS
            }
            Delivery::Shadow(action) => action,
            Delivery::Cut => xdp_action::XDP_PASS,
        }
    }
}

/// Delivers a packet towards `backend` (at `slot`): rewritten by the DNAT
/// (`mode::NAT`), or as the client sent it (direct server return; the
/// frame is untouched on every path to the kernel then).
/// `shadow`: its service, when it is tagged for a shadow copy: a frame
/// redirected out of blue's interface goes by devmap broadcast (to blue
/// and to the target, rewritten there by `bg_shadow_copy`); else, within
/// the budget, to the kernel for `bg_shadow_tc`; else on without a copy.
#[inline(always)]
pub fn deliver(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    slot: u32,
    shadow: Option<u32>,
) -> Delivery {
    let dsr = backend.mode != mode::NAT;
    // A tagged frame belongs to a VLAN device; let the kernel route it there.
    if pkt.vlan {
        if dsr {
            count_dsr(dsr_event::UNSUPPORTED);
        }
        return Delivery::Kernel(counter::PASS_KERNEL_ROUTE);
    }
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let now = unsafe { bpf_jiffies64() };
    let Some(hop) = NEXT_HOPS.get_ptr_mut(slot) else {
        return Delivery::Kernel(counter::PASS_KERNEL_ROUTE);
    };
    // SAFETY: per-CPU slot; only this CPU touches it while the program runs.
    let hop = unsafe { &mut *hop };
    let fresh = hop.kind != 0
        && now.wrapping_sub(hop.stamp_jiffies) < NEXT_HOP_TTL_JIFFIES
        && hop.addr_be == backend.addr_be;
    if !fresh {
        match refresh(ctx, pkt, backend, ingress, now, hop) {
            Ok(true) => {}
            Ok(false) => return Delivery::Kernel(counter::PASS_NO_NEIGH),
            Err(_) => return Delivery::Kernel(counter::PASS_KERNEL_ROUTE),
        }
    }
    match hop.kind {
        HOP_FORWARD => {}
        HOP_LOCAL => return Delivery::Kernel(counter::PASS_LOCAL),
        HOP_FWD_DISABLED => return Delivery::Kernel(counter::PASS_FWD_DISABLED),
        // Not redirectable: the kernel forwards it, unchanged but for the DNAT.
        HOP_NO_DEVMAP => return Delivery::Kernel(counter::REDIRECT_FAILED),
        _ => return Delivery::Kernel(counter::PASS_KERNEL_ROUTE),
    }
    // Too big for the route once sent (with its outer header, if any): the
    // kernel fragments it or tells the sender. Sent as it is, the egress
    // device would drop it uncounted.
    let l3_len = ctx.data_end() - ctx.data() - pkt.l3_off + dsr::outer_len(backend);
    if hop.mtu != 0 && l3_len > usize::from(hop.mtu) {
        if dsr {
            count_dsr(dsr_event::TOO_BIG);
        }
        return Delivery::Kernel(counter::PASS_KERNEL_ROUTE);
    }
    // dsr-l2 keeps the service address as destination: only a backend on
    // the segment itself can take the frame by its MAC.
    if backend.mode == mode::DSR_L2 && hop.on_link == 0 {
        count_dsr(dsr_event::NOT_ON_LINK);
        return Delivery::Kernel(counter::PASS_KERNEL_ROUTE);
    }
    let tunnel = match backend.mode {
        mode::DSR_IPIP => match TUNNELS.get(slot) {
            Some(t) if t.family == backend.family => Some(*t),
            _ => {
                count_dsr(dsr_event::UNSUPPORTED);
                return Delivery::Kernel(counter::PASS_KERNEL_ROUTE);
            }
        },
        _ => None,
    };
    // Ask for the redirect before touching TTL or MACs: if the interface
    // left the devmap since the lookup, the frame still goes to the kernel
    // as the DNAT left it, and nothing is lost.
    let shadow = shadow.filter(|&service| shadow::within_budget(service));
    let broadcast = match shadow {
        // The broadcast copier takes NAT's rewritten frame only.
        Some(service) if !dsr && hop.ifindex != ingress && shadow::broadcast_from(hop.ifindex) => {
            let flags = u64::from(BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS);
            let r = SHADOW_DEVMAP.redirect(0, flags).ok();
            if r.is_some() {
                shadow::broadcast(service);
            }
            r
        }
        _ => None,
    };
    // The kernel's path: the service and slot go in the metadata for
    // `bg_shadow_tc` (which sends a DSR original on); no room for them,
    // and the datagram goes on uncopied. A DSR frame leaves untouched.
    if broadcast.is_none()
        && let Some(service) = shadow
        && shadow::hand_over(service)
        && shadow::tag(ctx, service, slot)
    {
        return Delivery::Shadow(xdp_action::XDP_PASS);
    }
    // Only now: a failed `tag` (bpf_xdp_adjust_meta) invalidated pointers.
    let Ok(eth) = ptr_at::<EthHdr, _>(ctx, 0) else {
        return Delivery::Kernel(counter::PASS_KERNEL_ROUTE);
    };
    let delivery = if let Some(action) = broadcast {
        Delivery::Redirect(action)
    } else if hop.ifindex == ingress {
        Delivery::Tx
    } else {
        match REDIRECT_IFACES.redirect(hop.ifindex, 0) {
            Ok(action) => Delivery::Redirect(action),
            Err(_) => {
                debug!(
                    ctx,
                    "ifindex {} left the redirect map; the kernel forwards the frame", hop.ifindex
                );
                hop.kind = 0;
                return Delivery::Kernel(counter::REDIRECT_FAILED);
            }
        }
    };
    // The inner packet of a tunnel keeps its TTL, as in Linux's tunnels.
    if let Some(tunnel) = tunnel {
        if dsr::encapsulate(ctx, pkt, backend, &tunnel, hop).is_err() {
            return Delivery::Kernel(counter::PASS_KERNEL_ROUTE);
        }
        count_dsr(dsr_event::IPIP);
        return delivery;
    }
    match decrement_ttl(ctx, pkt) {
        Ok(true) => {}
        // Expiring (the kernel sends the ICMP error), or unreadable.
        _ => return Delivery::Kernel(counter::PASS_KERNEL_ROUTE),
    }
    unsafe {
        (*eth).dst_addr = hop.dmac;
        (*eth).src_addr = hop.smac;
    }
    if dsr {
        count_dsr(dsr_event::L2);
    }
    delivery
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

/// What the FIB's successful answer for `backend` says of the way there:
/// whether the backend is on the link (no gateway), and the route's MTU.
#[inline(always)]
pub fn route_facts(fib: &FibParams, backend: &Backend) -> (bool, u16) {
    // SAFETY: plain integers in unions the kernel filled: on success it
    // puts the MTU over `tot_len` and the gateway, if any, over `dst`.
    unsafe {
        let on_link = if backend.family == FAMILY_IPV4 {
            fib.__bindgen_anon_4.ipv4_dst == backend.addr_be[0]
        } else {
            fib.__bindgen_anon_4.ipv6_dst == backend.addr_be
        };
        (on_link, fib.__bindgen_anon_1.mtu_result)
    }
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
    let mut q = FibQuery {
        family: pkt.family,
        proto: pkt.proto,
        tos: 0,
        ifindex: ingress,
        src: [0; 4],
        dst: backend.addr_be,
        dport_be: backend.port_be,
        // 0 passes the FIB's MTU check whatever the route's MTU: the
        // answer, cached for every packet of the slot, holds the MTU in
        // `mtu_result`, and `deliver` compares each packet with it.
        tot_len: 0,
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
    let (on_link, mtu) = route_facts(&fib, backend);
    (hop.on_link, hop.mtu) = (u8::from(on_link), mtu);
    hop.addr_be = backend.addr_be;
    hop.stamp_jiffies = now;
    Ok(true)
}
