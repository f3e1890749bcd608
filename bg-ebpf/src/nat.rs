//! Destination rewrite (DNAT) with incremental checksum updates.
use bg_common::{Backend, FAMILY_IPV4, PROTO_UDP};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::csum::{replace, word_sum, word_sum_complement};
use crate::field::{get16, set16, set32, set128};
use crate::parse::{Frame, Packet, Skip, TCP_CHECK_OFF, UDP_CHECK_OFF, ptr_at};
use aya_ebpf::programs::XdpContext;

/// Rewrites the destination address and port of `pkt` (UDP or TCP) to `backend`.
#[inline(always)]
pub fn dnat(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Result<(), Skip> {
    // Every bounds check comes before the first write: a Skip leaves the
    // packet untouched, as its contract says.
    let port: *mut u8 = ptr_at::<[u8; 2], _>(ctx, pkt.l4_off + 2)?.cast();
    let check_off = if pkt.proto == PROTO_UDP {
        UDP_CHECK_OFF
    } else {
        TCP_CHECK_OFF
    };
    let check: *mut u8 = ptr_at::<[u8; 2], _>(ctx, pkt.l4_off + check_off)?.cast();
    // Sums of what leaves and what arrives in the pseudo-header.
    let mut removed: u32 = 0;
    let mut added: u32 = 0;
    // SAFETY (every field access): inside headers ptr_at checked.
    if pkt.family == FAMILY_IPV4 {
        let ip: *mut u8 = ptr_at::<Ipv4Hdr, _>(ctx, pkt.l3_off)?.cast();
        let new = backend.addr_be[0];
        removed += word_sum_complement(pkt.dst_be[0]);
        added += word_sum(new);
        unsafe {
            set32(ip.add(16), new);
            let check = get16(ip.add(10));
            set16(ip.add(10), replace(check, removed, added));
        }
    } else {
        let ip: *mut u8 = ptr_at::<Ipv6Hdr, _>(ctx, pkt.l3_off)?.cast();
        let mut i = 0;
        while i < 4 {
            removed += word_sum_complement(pkt.dst_be[i]);
            added += word_sum(backend.addr_be[i]);
            i += 1;
        }
        unsafe { set128(ip.add(24), backend.addr_be) };
    }
    removed += u32::from(!pkt.dst_port_be);
    added += u32::from(backend.port_be);
    // The destination port is at offset 2 in both UDP and TCP headers.
    unsafe {
        set16(port, backend.port_be);
        let old = get16(check);
        // A UDP checksum of 0 ("none") stays 0, as on TC: over IPv6 it is
        // legal only where the receiver opted in (RFC 6936), and a made-up
        // sum would turn what it accepts into what it drops.
        if pkt.proto == PROTO_UDP && old == 0 {
            return Ok(());
        }
        let mut new = replace(old, removed, added);
        if new == 0 && pkt.proto == PROTO_UDP {
            new = 0xffff; // RFC 768: a computed 0 is sent as all ones
        }
        set16(check, new);
    }
    Ok(())
}

/// Decrements the IPv4 TTL (updating the header checksum) or the IPv6 hop
/// limit before forwarding. Returns false when the packet must not be
/// forwarded by us (TTL would expire): the kernel then sends the ICMP error.
#[inline(always)]
pub fn decrement_ttl<F: Frame>(ctx: &F, pkt: &Packet) -> Result<bool, Skip> {
    if pkt.family == FAMILY_IPV4 {
        let ip: *mut u8 = ptr_at::<Ipv4Hdr, _>(ctx, pkt.l3_off)?.cast();
        // SAFETY: inside the header ptr_at checked.
        unsafe {
            // TTL is the high byte of its 16-bit word (with the protocol)
            // in network order.
            let old = u16::from_be(get16(ip.add(8)));
            if old >> 8 <= 1 {
                return Ok(false);
            }
            let new = old - 0x100;
            set16(ip.add(8), new.to_be());
            let check = u16::from_be(get16(ip.add(10)));
            set16(
                ip.add(10),
                replace(check, u32::from(!old), u32::from(new)).to_be(),
            );
        }
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, pkt.l3_off)?;
        unsafe {
            if (*ip).hop_limit <= 1 {
                return Ok(false);
            }
            (*ip).hop_limit -= 1;
        }
    }
    Ok(true)
}
