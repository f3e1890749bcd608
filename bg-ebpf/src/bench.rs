//! `bg-bench-ebpf`: programs for the benchmarks and the tests' labs, built
//! as an object of their own so the agent's object (`bg-ebpf`) holds only
//! what steers. The generator, the counting sink, a plain forwarder,
//! no-op baselines (and the pass program a veth peer needs to receive
//! redirected frames), and a tunnel decapsulator for labs without one.
#![no_std]
#![no_main]

use bg_common::{FAMILY_IPV4, FlowKey, FlowValue, PROTO_TCP};

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::generated::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::{classifier, map, xdp},
    maps::{Array, DevMap, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};

/// Largest frame the generator writes.
pub const GEN_FRAME_MAX: usize = 640;

/// Distinct (source address, source port) pairs the generator cycles
/// through: 64 addresses times 64 ports, like a fleet of syslog senders.
const GEN_FLOWS: u32 = 4096;

/// The frame the generator sends: its length, then its bytes.
#[repr(C)]
pub struct GenTemplate {
    pub len: u32,
    pub bytes: [u8; GEN_FRAME_MAX],
}

#[map]
pub static GEN_TEMPLATE: Array<GenTemplate> = Array::with_max_entries(1, 0);

/// Per-CPU frame counter, used to vary the source address and port.
#[map]
pub static GEN_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The colour a frame generated now must reach, written into its last
/// payload byte: b'B', b'G', or b'?' while a flip is in progress. Zero
/// keeps the template's byte.
#[map]
pub static GEN_EXPECT: Array<u8> = Array::with_max_entries(1, 0);

/// Per-CPU counts of a sink: 0 tagged UDP frames, 1 of them tagged for the
/// other colour, 2 untagged UDP (probes, strays).
#[map]
pub static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// The sink's own colour letter (b'B' or b'G'), slot 0.
#[map]
pub static SINK_COLOUR: Array<u8> = Array::with_max_entries(1, 0);

/// The one interface the ceiling program forwards to (slot 0).
#[map]
pub static FWD_TO: DevMap = DevMap::with_max_entries(1, 0);

fn bump(slot: u32) {
    if let Some(c) = SINK_COUNT.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot.
        unsafe { *c += 1 };
    }
}

/// An IP header's protocol (IPv4) or next header (IPv6), and the length
/// of its packet, headers included.
struct Ip {
    proto: u8,
    len: u32,
    /// A dsr-ipip outer header: its own length (IPv4 without options,
    /// protocol 4; IPv6, next header 41), else 0.
    tunnel: u32,
}

/// The IP header at `off`, by its version nibble.
fn ip_at(ctx: &XdpContext, off: u32) -> Option<Ip> {
    let mut h = [0u8; 40];
    // SAFETY: the helper bounds-checks the offset against the frame.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, off, h.as_mut_ptr().cast(), 40) } != 0 {
        return None;
    }
    match h[0] >> 4 {
        4 => Some(Ip {
            proto: h[9],
            len: u32::from(u16::from_be_bytes([h[2], h[3]])),
            tunnel: if h[9] == 4 { 20 } else { 0 },
        }),
        6 => Some(Ip {
            proto: h[6],
            len: 40 + u32::from(u16::from_be_bytes([h[4], h[5]])),
            tunnel: if h[6] == 41 { 40 } else { 0 },
        }),
        _ => None,
    }
}

/// Counting sink on a backend's veth: count UDP by the tag in its last
/// byte, then drop it. Exact and cheap. A dsr-ipip frame counts by its
/// inner packet, a dsr-l2 one as it is. Everything else (ARP, neighbour
/// discovery) passes, so the steering host can resolve the backend.
#[xdp]
pub fn bg_sink(ctx: XdpContext) -> u32 {
    let mut e = [0u8; 2];
    // SAFETY: the helper bounds-checks the offset against the frame.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 12, e.as_mut_ptr().cast(), 2) } != 0
        || !matches!(u16::from_be_bytes(e), 0x0800 | 0x86dd)
    {
        return xdp_action::XDP_PASS;
    }
    let Some(outer) = ip_at(&ctx, 14) else {
        return xdp_action::XDP_PASS;
    };
    let tunnel = outer.tunnel;
    let ip = if tunnel == 0 {
        outer
    } else {
        match ip_at(&ctx, 14 + tunnel) {
            Some(inner) => inner,
            None => return xdp_action::XDP_PASS,
        }
    };
    if ip.proto != 17 {
        return xdp_action::XDP_PASS;
    }
    // The frame's end by the (inner) IP length (Ethernet padding aside).
    let len = 14 + tunnel + ip.len;
    // The tag is the last byte, or the one before a newline that a relay
    // (HAProxy) appends.
    let mut last = [0u8; 2];
    // SAFETY: the helper bounds-checks the offset against the frame.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            len.wrapping_sub(2) & 0xffff,
            last.as_mut_ptr().cast(),
            2,
        )
    };
    let tag = if last[1] == b'\n' { last[0] } else { last[1] };
    let own = SINK_COLOUR.get(0).copied().unwrap_or(0);
    if rc != 0 || !matches!(tag, b'B' | b'G' | b'?') {
        bump(2);
    } else {
        bump(0);
        if tag != b'?' && tag != own {
            bump(1);
        }
    }
    xdp_action::XDP_DROP
}

/// Adds the change of one 16-bit word from `old` to `new` to a ones'
/// complement checksum (RFC 1624, eqn. 3).
fn csum_replace(check: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Traffic generator: run through BPF_PROG_TEST_RUN with live frames, each
/// injected frame is transmitted out of the interface given in the context.
///
/// Live frames recycle their pages, and whatever the receiving side wrote
/// (a DNAT, a TTL decrement) comes back on the next run. So every run
/// rewrites the frame from `GEN_TEMPLATE`, then gives it the next source
/// address and port and the expected colour, fixing the checksums up.
#[xdp]
pub fn bg_gen(ctx: XdpContext) -> u32 {
    let Some(t) = GEN_TEMPLATE.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a map value pointer; the helper bounds-checks the packet.
    let len = unsafe { (*t).len } as usize;
    // Two explicit bounds: the range form compiles to one unsigned compare
    // of len - 64, which leaves the verifier without a lower bound on len.
    #[allow(clippy::manual_range_contains)]
    let bad = len < 64 || len > GEN_FRAME_MAX;
    if bad || ctx.data() + len > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let rc = unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, (*t).bytes.as_mut_ptr().cast(), len as u32) };
    if rc != 0 {
        return xdp_action::XDP_ABORTED;
    }
    let n = match GEN_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        Some(seq) => unsafe {
            *seq = (*seq).wrapping_add(1);
            *seq
        },
        None => 0,
    };
    let flow = n % GEN_FLOWS;
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 64 > end {
        return xdp_action::XDP_ABORTED;
    }
    let p = start as *mut u8;
    // SAFETY: every offset below is under 64, checked above.
    unsafe {
        let ether_type = u16::from_be_bytes([*p.add(12), *p.add(13)]);
        // (last word of the source address, UDP header)
        let (addr_word, l4) = match ether_type {
            0x0800 => (28usize, 34usize),
            0x86dd => (36, 54),
            _ => return xdp_action::XDP_TX,
        };
        let rd = |o: usize| u16::from_be_bytes([*p.add(o), *p.add(o + 1)]);
        let wr = |o: usize, v: u16| {
            let b = v.to_be_bytes();
            *p.add(o) = b[0];
            *p.add(o + 1) = b[1];
        };
        let old_addr = rd(addr_word);
        let new_addr = (old_addr & 0xff00) | (2 + (flow % 64)) as u16;
        let old_port = rd(l4);
        let new_port = 10000 + (flow / 64) as u16;
        wr(addr_word, new_addr);
        wr(l4, new_port);
        if ether_type == 0x0800 {
            wr(24, csum_replace(rd(24), old_addr, new_addr));
        }
        let mut udp_check = rd(l4 + 6);
        let checked = udp_check != 0;
        udp_check = csum_replace(udp_check, old_addr, new_addr);
        udp_check = csum_replace(udp_check, old_port, new_port);
        // The expected colour, in the last payload byte.
        let expect = GEN_EXPECT.get(0).copied().unwrap_or(0);
        let last = len - 1;
        if expect != 0 && last < GEN_FRAME_MAX {
            let old = (*t).bytes[last];
            let shift = if (last - l4).is_multiple_of(2) { 8 } else { 0 };
            if bpf_xdp_store_bytes(ctx.ctx, last as u32, (&raw const expect) as *mut _, 1) != 0 {
                return xdp_action::XDP_ABORTED;
            }
            udp_check = csum_replace(
                udp_check,
                u16::from(old) << shift,
                u16::from(expect) << shift,
            );
        }
        if checked {
            // A computed zero goes out as all ones (RFC 768).
            wr(l4 + 6, if udp_check == 0 { 0xffff } else { udp_check });
        }
    }
    xdp_action::XDP_TX
}

/// Room for the one flow the key-size bench looks up. Every lab loads this
/// object, so the tables stay small here; the bench loads them at `FLOWS`'
/// size (`DEFAULT_FLOW_TABLE_SIZE`).
const LOOKUP_ENTRIES: u32 = 64;

/// One lookup in an LRU hash table like `FLOWS`, keyed as `FLOWS` is
/// today: the 40-byte `FlowKey`, IPv4 addresses in the first of four words.
#[map]
pub static LOOKUP_KEY40: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(LOOKUP_ENTRIES, 0);

/// The same table keyed by an IPv4-only 4-tuple: client and server
/// address, then client and server port, as the 12 bytes sit in the
/// frame (network byte order).
#[map]
pub static LOOKUP_KEY12: LruHashMap<[u32; 3], FlowValue> =
    LruHashMap::with_max_entries(LOOKUP_ENTRIES, 0);

/// The addresses and ports of an IPv4 TCP frame without IP options, as
/// three words straight from the frame; `None` for anything else.
#[inline(always)]
fn ipv4_tcp_tuple(ctx: &XdpContext) -> Option<[u32; 3]> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 38 > end {
        return None;
    }
    // SAFETY: every offset read is under 38, checked above; the kernel
    // starts frames 2-byte aligned, so 16-bit loads are aligned.
    unsafe {
        let p = start as *const u8;
        let half = |o: usize| (p.add(o) as *const u16).read();
        let ihl_ok = *p.add(14) == 0x45;
        if half(12) != 0x0008 || !ihl_ok || *p.add(23) != PROTO_TCP {
            return None;
        }
        let word = |o: usize| u32::from(half(o)) | u32::from(half(o + 2)) << 16;
        Some([word(26), word(30), word(34)])
    }
}

/// `bench --prog`'s price of the established flow lookup by key size:
/// parses the 4-tuple as the steering program would and looks it up with
/// today's 40-byte key. XDP_PASS on a hit, XDP_DROP on a miss (the bench
/// requires hits), XDP_ABORTED for a frame that is not IPv4 TCP.
#[xdp]
pub fn bg_lookup_key40(ctx: XdpContext) -> u32 {
    let Some(t) = ipv4_tcp_tuple(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let key = FlowKey {
        client_be: [t[0], 0, 0, 0],
        server_be: [t[1], 0, 0, 0],
        client_port_be: t[2] as u16,
        server_port_be: (t[2] >> 16) as u16,
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    match LOOKUP_KEY40.get_ptr_mut(key) {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}

/// The same with the 12-byte IPv4 key.
#[xdp]
pub fn bg_lookup_key12(ctx: XdpContext) -> u32 {
    let Some(t) = ipv4_tcp_tuple(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    match LOOKUP_KEY12.get_ptr_mut(t) {
        Some(_) => xdp_action::XDP_PASS,
        None => xdp_action::XDP_DROP,
    }
}

/// The ceiling: redirect every frame to one interface without parsing.
#[xdp]
pub fn bg_fwd(_ctx: XdpContext) -> u32 {
    FWD_TO.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

/// Baseline for the program micro-benchmark: does nothing but pass. Also
/// what a veth peer runs so that frames redirected to it are received.
#[xdp]
pub fn bg_noop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Packets `bg_count_tc` saw, per CPU (slot 0).
#[map]
pub static TC_SEEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Counts every packet and hands it on (tcx's TCX_NEXT, -1): the tests
/// attach it after bluegreen's TC programs, as another tool's program
/// would be, to see what reaches the rest of the chain.
#[classifier]
pub fn bg_count_tc(_ctx: TcContext) -> i32 {
    if let Some(c) = TC_SEEN.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *c += 1 };
    }
    -1
}

/// A backend's `tunl0` / `ip6tnl0`, for the labs: this kernel has neither
/// (no modules), so on TC ingress this strips an outer IPv4 header that
/// carries IPv4 (protocol 4), or an outer IPv6 one that carries IPv6 (next
/// header 41), as the kernel's tunnels would, and hands the inner packet
/// to the stack. Anything else passes as it came.
#[classifier]
pub fn bg_decap_tc(ctx: TcContext) -> i32 {
    // Ethertype at 12; IPv4: version/IHL at 14, protocol at 23; IPv6:
    // next header at 20.
    let outer = match ctx.load::<u16>(12).map(u16::from_be) {
        Ok(0x0800) if ctx.load::<u8>(14) == Ok(0x45) && ctx.load::<u8>(23) == Ok(4) => 20,
        Ok(0x86dd) if ctx.load::<u8>(20) == Ok(41) => 40,
        _ => return TC_ACT_OK,
    };
    // BPF_ADJ_ROOM_MAC (1): take the bytes right after the MAC header.
    let _ = ctx.adjust_room(-outer, 1, 0);
    TC_ACT_OK
}

/// The same baseline for the TC programs.
#[classifier]
pub fn bg_noop_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
