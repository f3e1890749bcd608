//! `bg_path`: the data path's own view of a backend's route, for health
//! probes. The agent runs it once through BPF_PROG_TEST_RUN with a query in
//! `PATH_QUERY`; it asks the FIB exactly as `deliver` does and writes the
//! answer back. A probe can then tell an unresolved neighbour or a missing
//! route from a backend that answers.
use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use bg_common::PathQuery;

use crate::deliver::{FibQuery, fib_lookup};

/// One slot: the question, then the answer.
#[map]
pub static PATH_QUERY: Array<PathQuery> = Array::with_max_entries(1, 0);

#[xdp]
pub fn bg_path(ctx: XdpContext) -> u32 {
    if let Some(q) = PATH_QUERY.get_ptr_mut(0) {
        // SAFETY: the map's only slot; the agent runs one query at a time.
        let q = unsafe { &mut *q };
        let (rc, fib) = fib_lookup(
            &ctx,
            &FibQuery {
                family: q.family,
                proto: q.proto,
                tos: 0,
                ifindex: q.ifindex,
                src: [0; 4],
                dst: q.addr_be,
                dport_be: q.port_be,
                // A small packet: the MTU is not the question.
                tot_len: 128,
            },
        );
        q.rc = rc;
        q.egress_ifindex = fib.ifindex;
        q.dmac = fib.dmac;
        q.smac = fib.smac;
    }
    xdp_action::XDP_PASS
}
