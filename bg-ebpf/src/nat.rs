//! Destination rewrite (DNAT) with incremental checksum updates.
use bg_common::{Backend, FAMILY_IPV4, PROTO_UDP};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};

use crate::csum::{fold, replace, word_sum, word_sum_complement};
use crate::parse::{Packet, Skip, TCP_CHECK_OFF, UDP_CHECK_OFF, bytes, ptr_at};
use aya_ebpf::programs::XdpContext;

/// Rewrites the destination address and port of `pkt` (UDP or TCP) to `backend`.
#[inline(always)]
pub fn dnat(ctx: &XdpContext, pkt: &Packet, backend: &Backend) -> Result<(), Skip> {
    // Every bounds check comes before the first write: a Skip leaves the
    // packet untouched, as its contract says.
    let port: *mut [u8; 2] = ptr_at(ctx, pkt.l4_off + 2)?;
    let check_off = if pkt.proto == PROTO_UDP {
        UDP_CHECK_OFF
    } else {
        TCP_CHECK_OFF
    };
    let check: *mut [u8; 2] = ptr_at(ctx, pkt.l4_off + check_off)?;
    // Sums of what leaves and what arrives in the pseudo-header.
    let mut removed: u32 = 0;
    let mut added: u32 = 0;
    if pkt.family == FAMILY_IPV4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, pkt.l3_off)?;
        let old = pkt.dst_be[0];
        let new = backend.addr_be[0];
        removed += word_sum_complement(old);
        added += word_sum(new);
        unsafe {
            (*ip).dst_addr = new.to_ne_bytes();
            let check = u16::from_ne_bytes((*ip).check);
            (*ip).check = replace(check, removed, added).to_ne_bytes();
        }
    } else {
        let ip: *mut Ipv6Hdr = ptr_at(ctx, pkt.l3_off)?;
        let mut i = 0;
        while i < 4 {
            removed += word_sum_complement(pkt.dst_be[i]);
            added += word_sum(backend.addr_be[i]);
            i += 1;
        }
        unsafe { (*ip).dst_addr = bytes(backend.addr_be) };
    }
    removed += u32::from(!pkt.dst_port_be);
    added += u32::from(backend.port_be);
    // The destination port is at offset 2 in both UDP and TCP headers.
    unsafe {
        *port = backend.port_be.to_ne_bytes();
        let old = u16::from_ne_bytes(*check);
        // IPv4 UDP may carry no checksum (0); it stays 0. IPv6 UDP and TCP always have one.
        if pkt.proto == PROTO_UDP && old == 0 && pkt.family == FAMILY_IPV4 {
            return Ok(());
        }
        let mut new = replace(old, fold(removed) as u32, fold(added) as u32);
        if new == 0 && pkt.proto == PROTO_UDP {
            new = 0xffff; // RFC 768: a computed 0 is sent as all ones
        }
        *check = new.to_ne_bytes();
    }
    Ok(())
}

/// Decrements the IPv4 TTL (updating the header checksum) or the IPv6 hop
/// limit before forwarding. Returns false when the packet must not be
/// forwarded by us (TTL would expire): the kernel then sends the ICMP error.
#[inline(always)]
pub fn decrement_ttl(ctx: &XdpContext, pkt: &Packet) -> Result<bool, Skip> {
    if pkt.family == FAMILY_IPV4 {
        let ip: *mut Ipv4Hdr = ptr_at(ctx, pkt.l3_off)?;
        unsafe {
            let ttl = (*ip).ttl;
            if ttl <= 1 {
                return Ok(false);
            }
            // TTL is the high byte of its 16-bit word in network order.
            let old = u16::from_be_bytes([ttl, (*ip).proto]);
            let new = u16::from_be_bytes([ttl - 1, (*ip).proto]);
            (*ip).ttl = ttl - 1;
            let check = u16::from_be_bytes((*ip).check);
            (*ip).check = replace(check, u32::from(!old), u32::from(new)).to_be_bytes();
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
