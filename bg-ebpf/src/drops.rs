//! Tracepoint programs that count steered packets the kernel dropped after
//! `bg_steer` returned: a refused redirect, or frames a device did not take.
//! The XDP program cannot see these; without them a loss would go uncounted.
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::{Array, PerCpuArray},
    programs::TracePointContext,
};
use bg_common::kernel_drop::{
    COUNT, FILTER_IFINDEX, FILTER_PROG_ID, REDIRECT_ERR, TX_DROPS, XMIT_DROPS,
};

/// Pinned, so the counts survive an agent restart like the other counters.
#[map]
pub static KERNEL_DROPS: PerCpuArray<u64> = PerCpuArray::pinned(COUNT, 0);

/// Which program and interface are ours; the agent sets it on each start.
#[map]
pub static TRACE_FILTER: Array<u32> = Array::with_max_entries(2, 0);

fn add(slot: u32, n: u64) {
    if let Some(c) = KERNEL_DROPS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot.
        unsafe { *c += n };
    }
}

fn ours(slot: u32, value: i32) -> bool {
    TRACE_FILTER
        .get(slot)
        .is_some_and(|v| *v != 0 && *v == value as u32)
}

/// `xdp:xdp_redirect_err`: prog_id at offset 8.
#[tracepoint]
pub fn bg_redirect_err(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    if let Ok(prog_id) = unsafe { ctx.read_at::<i32>(8) }
        && ours(FILTER_PROG_ID, prog_id)
    {
        add(REDIRECT_ERR, 1);
    }
    0
}

/// `xdp:xdp_devmap_xmit`: from_ifindex at 8, drops at 20.
#[tracepoint]
pub fn bg_devmap_xmit(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let fields = unsafe { (ctx.read_at::<i32>(8), ctx.read_at::<i32>(20)) };
    if let (Ok(from), Ok(drops)) = fields
        && drops > 0
        && ours(FILTER_IFINDEX, from)
    {
        add(XMIT_DROPS, drops as u64);
    }
    0
}

/// `xdp:xdp_bulk_tx`: ifindex at 8, drops at 16.
#[tracepoint]
pub fn bg_bulk_tx(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file.
    let fields = unsafe { (ctx.read_at::<i32>(8), ctx.read_at::<i32>(16)) };
    if let (Ok(ifindex), Ok(drops)) = fields
        && drops > 0
        && ours(FILTER_IFINDEX, ifindex)
    {
        add(TX_DROPS, drops as u64);
    }
    0
}
