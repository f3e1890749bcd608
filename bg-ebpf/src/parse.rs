//! Header parsing with one bounds check per header, for XDP frames and
//! (linear parts of) socket buffers alike.
use aya_ebpf::programs::{TcContext, XdpContext};
use bg_common::{FAMILY_IPV4, FAMILY_IPV6, counter};

use crate::field::{get16, get32, get128};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

/// Why a packet is not steered; each maps to a `COUNTERS` slot.
#[derive(Clone, Copy)]
pub struct Skip(pub u32);

/// The parts of a packet the steering code needs. Offsets are from the start
/// of the frame.
pub struct Packet {
    pub family: u8,
    pub proto: u8,
    pub vlan: bool,
    pub l3_off: usize,
    pub l4_off: usize,
    /// Destination address, network byte order; IPv4 uses word 0.
    pub dst_be: [u32; 4],
    pub dst_port_be: u16,
    /// Source address and port, network byte order.
    pub src_be: [u32; 4],
    pub src_port_be: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// TCP acknowledgement number, host byte order (0 for UDP).
    pub tcp_ack_seq: u32,
}

/// Packet memory a program may read and write directly: an XDP frame, or
/// the linear part of a socket buffer.
pub trait Frame {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// The whole packet's length. A socket buffer may hold more than its
    /// linear part (a GSO packet from a local sender): lengths in the
    /// headers are checked against this, not against what is readable.
    fn total_len(&self) -> usize;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.data_end() - self.data()
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len() as usize
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Offset of the checksum field within the L4 header.
pub const UDP_CHECK_OFF: usize = 6;
pub const TCP_CHECK_OFF: usize = 16;

/// The 16 bytes of an address given as four words (network order), as a
/// header holds them.
#[inline(always)]
pub fn bytes(w: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = w[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

/// Returns a pointer to a `T` at `off`, or an error when the frame is too short.
#[inline(always)]
pub fn ptr_at<T, F: Frame>(ctx: &F, off: usize) -> Result<*mut T, Skip> {
    let start = ctx.start();
    let end = ctx.end();
    if start + off + core::mem::size_of::<T>() > end {
        return Err(Skip(counter::PASS_MALFORMED));
    }
    Ok((start + off) as *mut T)
}

#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    // hop-by-hop, routing, fragment, ESP, AH, destination options, mobility, HIP, shim6, experimental
    matches!(
        next,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

/// Parses Ethernet, one optional VLAN tag, IPv4 or IPv6, and locates the L4
/// header of UDP and TCP packets. Anything else is a `Skip` with its reason.
#[inline(always)]
pub fn parse<F: Frame>(ctx: &F) -> Result<Packet, Skip> {
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3_off = EthHdr::LEN;
    let mut vlan = false;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag: *const VlanHdr = ptr_at(ctx, l3_off)?;
        ether_type = u16::from_be(unsafe { (*tag).ether_type });
        l3_off += VlanHdr::LEN;
        vlan = true;
    }
    let frame_len = ctx.total_len();
    // ip_end: where the IP packet ends (the frame may carry padding after it).
    let (family, proto, l4_off, ip_end, dst_be, src_be) = match ether_type {
        ETH_P_IP => {
            let ip: *const Ipv4Hdr = ptr_at(ctx, l3_off)?;
            let vihl = unsafe { (*ip).vihl };
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
                return Err(Skip(counter::PASS_MALFORMED));
            }
            let raw = ip as *const u8;
            // SAFETY (every field read): inside the header ptr_at checked.
            let tot_len = u16::from_be(unsafe { get16(raw.add(2)) }) as usize;
            if tot_len < ihl || l3_off + tot_len > frame_len {
                return Err(Skip(counter::PASS_MALFORMED));
            }
            let frags = u16::from_be(unsafe { get16(raw.add(6)) });
            // MF set or a non-zero offset: a fragment, whose ports may be absent.
            if frags & 0x3fff != 0 {
                return Err(Skip(counter::PASS_FRAGMENT));
            }
            let dst = unsafe { get32(raw.add(16)) };
            let src = unsafe { get32(raw.add(12)) };
            (
                FAMILY_IPV4,
                unsafe { (*ip).proto },
                l3_off + ihl,
                l3_off + tot_len,
                [dst, 0, 0, 0],
                [src, 0, 0, 0],
            )
        }
        ETH_P_IPV6 => {
            let ip: *const Ipv6Hdr = ptr_at(ctx, l3_off)?;
            if unsafe { (*ip).vcf[0] } >> 4 != 6 {
                return Err(Skip(counter::PASS_MALFORMED));
            }
            let raw = ip as *const u8;
            // SAFETY (every field read): inside the header ptr_at checked.
            let payload_len = u16::from_be(unsafe { get16(raw.add(4)) }) as usize;
            let ip_end = l3_off + Ipv6Hdr::LEN + payload_len;
            if ip_end > frame_len {
                return Err(Skip(counter::PASS_MALFORMED));
            }
            let next = unsafe { (*ip).next_hdr };
            if is_ipv6_extension(next) {
                return Err(Skip(counter::PASS_IPV6_EXT));
            }
            (
                FAMILY_IPV6,
                next,
                l3_off + Ipv6Hdr::LEN,
                ip_end,
                unsafe { get128(raw.add(24)) },
                unsafe { get128(raw.add(8)) },
            )
        }
        _ => return Err(Skip(counter::PASS_NO_SERVICE)),
    };
    let (src_port_be, dst_port_be, tcp_flags, tcp_ack_seq) = match proto {
        bg_common::PROTO_UDP => {
            let udp: *const u8 = ptr_at::<UdpHdr, _>(ctx, l4_off)?.cast();
            // SAFETY (every field read): inside the header ptr_at checked.
            let len = u16::from_be(unsafe { get16(udp.add(4)) }) as usize;
            if len < UdpHdr::LEN || l4_off + len > ip_end {
                return Err(Skip(counter::PASS_MALFORMED));
            }
            (unsafe { get16(udp) }, unsafe { get16(udp.add(2)) }, 0, 0)
        }
        bg_common::PROTO_TCP => {
            let tcp: *const TcpHdr = ptr_at(ctx, l4_off)?;
            // Byte 12: data offset in 32-bit words (high nibble); byte 13: flags.
            let raw: *const [u8; TcpHdr::LEN] = tcp.cast();
            let doff = ((unsafe { (*raw)[12] } >> 4) as usize) * 4;
            if doff < TcpHdr::LEN || l4_off + doff > ip_end {
                return Err(Skip(counter::PASS_MALFORMED));
            }
            (
                unsafe { get16(raw.cast()) },
                unsafe { get16(raw.cast::<u8>().add(2)) },
                unsafe { (*raw)[13] },
                u32::from_be(unsafe { get32(raw.cast::<u8>().add(8)) }),
            )
        }
        _ => return Err(Skip(counter::PASS_NO_SERVICE)),
    };
    Ok(Packet {
        family,
        proto,
        vlan,
        l3_off,
        l4_off,
        dst_be,
        dst_port_be,
        src_be,
        src_port_be,
        tcp_flags,
        tcp_ack_seq,
    })
}
