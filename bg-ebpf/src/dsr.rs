//! Direct server return: the client's IP header goes to the backend as it
//! came, the service address still its destination, so the backend (which
//! holds that address on a local interface) answers the client itself and
//! replies never cross the steering node. `dsr-l2` changes only the MACs
//! (`deliver`); `dsr-ipip`, here, puts an outer IP header in front.
use aya_ebpf::{helpers::generated::bpf_xdp_adjust_head, programs::XdpContext};
use bg_common::{Backend, FAMILY_IPV4, NextHop, TunnelSource, mode};

use crate::csum::{fold, word_sum};
use crate::field::{set16, set32, set128};
use crate::parse::{ETH_P_IP, ETH_P_IPV6, Frame, Packet, ptr_at};

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
/// IP protocol numbers of what the outer header carries.
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
/// The outer header's TTL / hop limit, as Linux's own tunnels default to.
const OUTER_TTL: u8 = 64;

/// Bytes `backend`'s mode puts in front of the IP header.
#[inline(always)]
pub fn outer_len(backend: &Backend) -> usize {
    match (backend.mode, backend.family) {
        (mode::DSR_IPIP, FAMILY_IPV4) => IPV4_LEN,
        (mode::DSR_IPIP, _) => IPV6_LEN,
        _ => 0,
    }
}

/// What the outer header copies from the inner IP header's first eight
/// bytes: the TOS / traffic class (bytes 0 and 1) and IPv4's
/// don't-fragment bit (byte 6).
#[derive(Clone, Copy)]
pub struct Inner {
    pub b0: u8,
    pub b1: u8,
    pub b6: u8,
    /// The inner packet's length, headers included.
    pub len: u16,
}

impl Inner {
    /// Reads it from the IP header after the Ethernet header.
    #[inline(always)]
    pub fn of<F: Frame>(frame: &F) -> Result<Self, ()> {
        let ip: *const u8 = ptr_at::<[u8; 8], _>(frame, ETH_LEN).map_err(|_| ())?.cast();
        // SAFETY: 8 bytes ptr_at checked.
        let (b0, b1, b6) = unsafe { (*ip, *ip.add(1), *ip.add(6)) };
        Ok(Self {
            b0,
            b1,
            b6,
            len: (frame.total_len() - ETH_LEN) as u16,
        })
    }
}

/// Puts an outer IP header from `tunnel` to `backend` in front of the
/// packet's (IPv4 in IPv4, IPv6 in IPv6) and a new Ethernet header for
/// `hop`. The inner packet is not touched: its checksums stay valid, and
/// its TTL is the backend's to see. `pkt` has no VLAN tag. On `Err` the
/// frame is as it came.
#[inline(always)]
pub fn encapsulate(
    ctx: &XdpContext,
    pkt: &Packet,
    backend: &Backend,
    tunnel: &TunnelSource,
    hop: &NextHop,
) -> Result<(), ()> {
    let inner = Inner::of(ctx)?;
    let outer = if pkt.family == FAMILY_IPV4 {
        IPV4_LEN
    } else {
        IPV6_LEN
    };
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        return Err(());
    }
    // Both families' frames were longer than 54 bytes before they grew.
    let Ok(head) = ptr_at::<[u8; ETH_LEN + IPV6_LEN], _>(ctx, 0) else {
        // Cannot happen (the frame grew by `outer`); give the bytes back.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, outer as i32) };
        return Err(());
    };
    // SAFETY: ETH_LEN + IPV6_LEN writable bytes, checked above.
    unsafe { write_outer(head.cast(), pkt.family, &inner, backend, tunnel, hop) };
    Ok(())
}

/// Writes the Ethernet header for `hop` and the outer IP header from
/// `tunnel` to `backend` (of `family`) carrying `inner`.
///
/// # Safety
/// ETH_LEN + IPV6_LEN writable bytes at `head` (an IPv4 outer header
/// writes only its 20), at an even offset.
#[inline(always)]
pub unsafe fn write_outer(
    head: *mut u8,
    family: u8,
    inner: &Inner,
    backend: &Backend,
    tunnel: &TunnelSource,
    hop: &NextHop,
) {
    let Inner { b0, b1, b6, len } = *inner;
    // SAFETY (every write): inside the bytes the caller vouches for.
    unsafe {
        write_mac(head, hop.dmac);
        write_mac(head.add(6), hop.smac);
        let ip = head.add(ETH_LEN);
        if family == FAMILY_IPV4 {
            set16(head.add(12), ETH_P_IP.to_be());
            let tot_len = (len + IPV4_LEN as u16).to_be();
            let frag = if b6 & 0x40 != 0 { 0x4000u16.to_be() } else { 0 };
            let words = [
                u16::from_ne_bytes([0x45, b1]),
                tot_len,
                0,
                frag,
                u16::from_ne_bytes([OUTER_TTL, IPPROTO_IPIP]),
            ];
            let mut sum = word_sum(tunnel.addr_be[0]) + word_sum(backend.addr_be[0]);
            let mut i = 0;
            while i < words.len() {
                set16(ip.add(2 * i), words[i]);
                sum += u32::from(words[i]);
                i += 1;
            }
            set16(ip.add(10), !fold(sum));
            set32(ip.add(12), tunnel.addr_be[0]);
            set32(ip.add(16), backend.addr_be[0]);
        } else {
            set16(head.add(12), ETH_P_IPV6.to_be());
            // The traffic class spans the first two bytes, after the version.
            let class = (b0 << 4) | (b1 >> 4);
            set16(ip, u16::from_ne_bytes([0x60 | (class >> 4), class << 4]));
            set16(ip.add(2), 0);
            set16(ip.add(4), len.to_be());
            set16(ip.add(6), u16::from_ne_bytes([IPPROTO_IPV6, OUTER_TTL]));
            set128(ip.add(8), tunnel.addr_be);
            set128(ip.add(24), backend.addr_be);
        }
    }
}

/// # Safety
/// Six writable bytes at `p`, at an even offset.
#[inline(always)]
unsafe fn write_mac(p: *mut u8, mac: [u8; 6]) {
    unsafe {
        set16(p, u16::from_ne_bytes([mac[0], mac[1]]));
        set16(p.add(2), u16::from_ne_bytes([mac[2], mac[3]]));
        set16(p.add(4), u16::from_ne_bytes([mac[4], mac[5]]));
    }
}
