//! Programs for `cargo xtask bench` only; the agent never loads them.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_store_bytes,
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
};

/// Largest frame the generator writes.
pub const GEN_FRAME_MAX: usize = 640;

/// The frame the generator sends: its length, then its bytes.
#[repr(C)]
pub struct GenTemplate {
    pub len: u32,
    pub bytes: [u8; GEN_FRAME_MAX],
}

#[map]
pub static GEN_TEMPLATE: Array<GenTemplate> = Array::with_max_entries(1, 0);

/// Per-CPU frame counter, used to vary the UDP source port.
#[map]
pub static GEN_SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Frames a counting sink saw, per CPU (slot 0).
#[map]
pub static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The one interface the ceiling program forwards to (slot 0).
#[map]
pub static FWD_TO: DevMap = DevMap::with_max_entries(1, 0);

/// Counting sink on a backend's veth: count UDP, then drop it. Exact and
/// cheap. Everything else (ARP, neighbour discovery) passes, so the
/// steering host can resolve the backend and use its fast path.
#[xdp]
pub fn bg_sink(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 + 40 > end {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: bounds checked above (Ethernet plus the larger IP header).
    let (ether_type, v4_proto, v6_next) = unsafe {
        let p = start as *const u8;
        (
            u16::from_be_bytes([*p.add(12), *p.add(13)]),
            *p.add(14 + 9),
            *p.add(14 + 6),
        )
    };
    let udp = (ether_type == 0x0800 && v4_proto == 17) || (ether_type == 0x86dd && v6_next == 17);
    if !udp {
        return xdp_action::XDP_PASS;
    }
    if let Some(c) = SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

/// Traffic generator: run through BPF_PROG_TEST_RUN with live frames, each
/// injected frame is transmitted out of the interface given in the context.
///
/// Live frames recycle their pages, and whatever the receiving side wrote
/// (a DNAT, a TTL decrement) comes back on the next run. So every run
/// rewrites the frame from `GEN_TEMPLATE`, then gives it the next UDP
/// source port (the template carries UDP checksum 0, so no fix-up).
#[xdp]
pub fn bg_gen(ctx: XdpContext) -> u32 {
    let Some(t) = GEN_TEMPLATE.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a map value pointer; the helper bounds-checks the packet.
    let len = unsafe { (*t).len } as usize;
    if len == 0 || len > GEN_FRAME_MAX || ctx.data() + len > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let rc = unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, (*t).bytes.as_mut_ptr().cast(), len as u32) };
    if rc != 0 {
        return xdp_action::XDP_ABORTED;
    }
    if let Some(seq) = GEN_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        let n = unsafe {
            *seq = (*seq).wrapping_add(1);
            *seq
        };
        // Source port of an untagged IPv4 frame without options: byte 34.
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + 36 <= end {
            let port = 1024 + (n % 60000) as u16;
            // SAFETY: bounds checked above.
            unsafe { *((start + 34) as *mut [u8; 2]) = port.to_be_bytes() };
        }
    }
    xdp_action::XDP_TX
}

/// The ceiling: redirect every frame to one interface without parsing.
#[xdp]
pub fn bg_fwd(_ctx: XdpContext) -> u32 {
    FWD_TO.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}
