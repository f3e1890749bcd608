//! Raw tracepoint programs that count steered packets the kernel dropped
//! after `bg_steer` returned: a refused redirect, or frames a device did not
//! take. The XDP program cannot see these; without them a loss would go
//! uncounted.
//!
//! Raw tracepoints attach by name through bpf() alone, so they work on hosts
//! without tracefs. They see the tracepoint's C arguments (TP_PROTO), not a
//! formatted record: scalars directly, and `struct net_device *` pointers,
//! whose `ifindex` is read at the offset the agent found in the kernel's BTF.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::RawTracePointContext,
};
use bg_common::kernel_drop::{
    COUNT, FILTER_IFINDEX, FILTER_IFINDEX_OFFSET, FILTER_MAP_ID, FILTER_SLOTS, REDIRECT_ERR,
    TX_DROPS, XMIT_DROPS,
};

/// Pinned, so the counts survive an agent restart like the other counters.
#[map]
pub static KERNEL_DROPS: PerCpuArray<u64> = PerCpuArray::pinned(COUNT, 0);

/// What is ours, set by the agent on each start: the redirect devmap's id,
/// the steering ifindex, and where `ifindex` sits in `struct net_device`.
#[map]
pub static TRACE_FILTER: Array<u32> = Array::with_max_entries(FILTER_SLOTS, 0);

fn add(slot: u32, n: u64) {
    if let Some(c) = KERNEL_DROPS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot.
        unsafe { *c += n };
    }
}

fn filter(slot: u32) -> u32 {
    TRACE_FILTER.get(slot).copied().unwrap_or(0)
}

/// Whether `dev` (a `struct net_device *`) is the steering interface.
fn is_steering_dev(dev: u64) -> bool {
    let (ifindex, offset) = (filter(FILTER_IFINDEX), filter(FILTER_IFINDEX_OFFSET));
    if ifindex == 0 || offset == 0 || dev == 0 {
        return false;
    }
    let field = (dev + u64::from(offset)) as *const i32;
    // SAFETY: a kernel read that fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(field) }.is_ok_and(|i| i as u32 == ifindex)
}

/// `xdp_redirect_err(dev, xdp, tgt, err, map_type, map_id, index)`: a
/// redirect through our devmap that the kernel refused.
#[raw_tracepoint(tracepoint = "xdp_redirect_err")]
pub fn bg_redirect_err(ctx: RawTracePointContext) -> i32 {
    let map_id = ctx.arg::<u64>(5) as u32;
    let ours = filter(FILTER_MAP_ID);
    if ours != 0 && map_id == ours {
        add(REDIRECT_ERR, 1);
    }
    0
}

/// `xdp_devmap_xmit(from_dev, to_dev, sent, drops, err)`.
#[raw_tracepoint(tracepoint = "xdp_devmap_xmit")]
pub fn bg_devmap_xmit(ctx: RawTracePointContext) -> i32 {
    let drops = ctx.arg::<u64>(3) as i32;
    if drops > 0 && is_steering_dev(ctx.arg::<u64>(0)) {
        add(XMIT_DROPS, drops as u64);
    }
    0
}

/// `xdp_bulk_tx(dev, sent, drops, err)`: XDP_TX frames not sent.
#[raw_tracepoint(tracepoint = "xdp_bulk_tx")]
pub fn bg_bulk_tx(ctx: RawTracePointContext) -> i32 {
    let drops = ctx.arg::<u64>(2) as i32;
    if drops > 0 && is_steering_dev(ctx.arg::<u64>(0)) {
        add(TX_DROPS, drops as u64);
    }
    0
}
