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
    maps::{Array, PerCpuArray, PerCpuHashMap},
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

/// Steered frames the kernel dropped, by the interface they were headed
/// for: refused redirects and untaken frames. Health probes read it to tell
/// that a backend's path loses traffic.
#[map]
pub static REDIRECT_DROPS: PerCpuHashMap<u32, u64> =
    PerCpuHashMap::with_max_entries(bg_common::MAX_REDIRECT_IFACES, 0);

fn add_for(ifindex: u32, n: u64) {
    match REDIRECT_DROPS.get_ptr_mut(ifindex) {
        // SAFETY: a per-CPU value.
        Some(c) => unsafe { *c += n },
        None => {
            let _ = REDIRECT_DROPS.insert(ifindex, n, 0);
        }
    }
}

/// The `ifindex` of a `struct net_device *`, read at the BTF offset.
fn ifindex_of(dev: u64) -> Option<u32> {
    let offset = filter(FILTER_IFINDEX_OFFSET);
    if offset == 0 || dev == 0 {
        return None;
    }
    let field = (dev + u64::from(offset)) as *const i32;
    // SAFETY: a kernel read that fails cleanly on a bad address.
    unsafe { bpf_probe_read_kernel(field) }
        .ok()
        .map(|i| i as u32)
}

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
    let ifindex = filter(FILTER_IFINDEX);
    ifindex != 0 && ifindex_of(dev) == Some(ifindex)
}

/// `xdp_redirect_err(dev, xdp, tgt, err, map_type, map_id, index)`: a
/// redirect through our devmap that the kernel refused.
#[raw_tracepoint(tracepoint = "xdp_redirect_err")]
pub fn bg_redirect_err(ctx: RawTracePointContext) -> i32 {
    let map_id = ctx.arg::<u64>(5) as u32;
    let ours = filter(FILTER_MAP_ID);
    if ours != 0 && map_id == ours {
        add(REDIRECT_ERR, 1);
        // Our devmap is keyed by ifindex: the index is the target.
        add_for(ctx.arg::<u64>(6) as u32, 1);
    }
    0
}

/// `xdp_devmap_xmit(from_dev, to_dev, sent, drops, err)`.
#[raw_tracepoint(tracepoint = "xdp_devmap_xmit")]
pub fn bg_devmap_xmit(ctx: RawTracePointContext) -> i32 {
    let drops = ctx.arg::<u64>(3) as i32;
    if drops > 0 && is_steering_dev(ctx.arg::<u64>(0)) {
        add(XMIT_DROPS, drops as u64);
        if let Some(to) = ifindex_of(ctx.arg::<u64>(1)) {
            add_for(to, drops as u64);
        }
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
