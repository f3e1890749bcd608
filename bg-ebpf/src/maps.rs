//! The steering maps (services, backends, colour, flows, counters), pinned by
//! name so that a restarted or upgraded agent adopts them and traffic never
//! sees an empty table. Maps private to one concern live beside its code:
//! `drops.rs` (kernel-drop counting), `path.rs` (the route query) and
//! `bench.rs` (the benchmark's generator and sink).
use crate::flow::TcpEvent;
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use bg_common::{
    Backend, COLOURS, ColourStats, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_PENDING_TABLE_SIZE, FlowKey,
    FlowKey4, FlowValue, MAX_REDIRECT_IFACES, MAX_SERVICES, NextHop, PORT_SLOTS, PendingFlow,
    RevValue, ServiceKey, ServiceValue, TunnelSource, counter, dsr_event,
    shadow::{self, ShadowBucket, ShadowStats, ShadowTarget},
    tcp_event, tcp_setting,
};

/// (listen address, port, protocol) -> service id.
#[map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);

/// (family, protocol, port) -> "any address" service id + 1, and whether
/// specific-address services exist there. See `bg_common::port_index`.
#[map]
pub static PORTS: Array<u32> = Array::pinned(PORT_SLOTS, 0);

/// `service_id * 2 + colour` -> the FIB's last answer for that backend, per CPU.
/// Not pinned: a cache that a new program may start empty.
#[map]
pub static NEXT_HOPS: PerCpuArray<NextHop> =
    PerCpuArray::with_max_entries(MAX_SERVICES * COLOURS, 0);

/// `service_id * 2 + colour` -> backend address and port.
#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(MAX_SERVICES * COLOURS, 0);

/// `service_id * 2 + colour` -> the outer source of a `dsr-ipip`
/// colour's tunnel. A map of its own beside `BACKENDS`, whose pinned
/// layout older agents share.
#[map]
pub static TUNNELS: Array<TunnelSource> = Array::pinned(MAX_SERVICES * COLOURS, 0);

/// Per-CPU counts of what direct server return did (`bg_common::dsr_event`).
#[map]
pub static DSR_EVENTS: PerCpuArray<u64> = PerCpuArray::pinned(dsr_event::COUNT, 0);

/// One u32: the active colour and the split, if any (`bg_common::split`).
/// A flip or a shift is one write to slot 0.
#[map]
pub static ACTIVE: Array<u32> = Array::pinned(1, 0);

/// One u32: the key of the split's source-address hash. The agent writes
/// it before any split, and a fleet shares it, so every node splits alike.
#[map]
pub static SPLIT_SEED: Array<u32> = Array::pinned(1, 0);

/// The share of senders whose UDP datagrams are copied to the shadow
/// targets, in basis points (0 is off), and XDP's budget of copies per
/// second per CPU (`bg_common::shadow`).
#[map]
pub static SHADOW: Array<u32> = Array::pinned(shadow::SLOTS, 0);

/// Devmap broadcast copies: blue's egress (no program) and the shadow
/// target's egress (with `bg_shadow_copy`), while `BROADCAST_SLOT` is set.
#[map]
pub static SHADOW_DEVMAP: DevMapHash = DevMapHash::pinned(2, 0);

/// Broadcast copies: (the active colour's backend, UDP) -> service id.
/// Both copies of a broadcast leave addressed to that backend; the one on
/// the target's interface is the copy, found by this, not by metadata
/// (which drivers may have no room for).
#[map]
pub static SHADOW_BY_BLUE: HashMap<ServiceKey, u32> = HashMap::pinned(MAX_SERVICES, 0);

/// Per CPU: the token bucket of that budget.
#[map]
pub static SHADOW_BUDGET: PerCpuArray<ShadowBucket> = PerCpuArray::pinned(1, 0);

/// `service_id` -> where its copies go; family 0: not copied.
#[map]
pub static SHADOW_TARGETS: Array<ShadowTarget> = Array::pinned(MAX_SERVICES, 0);

/// `service_id` -> per-CPU counts of its copies.
#[map]
pub static SHADOW_STATS: PerCpuArray<ShadowStats> = PerCpuArray::pinned(MAX_SERVICES, 0);

/// `service_id * 2 + colour` -> per-CPU packet and byte counters.
#[map]
pub static STATS: PerCpuArray<ColourStats> = PerCpuArray::pinned(MAX_SERVICES * COLOURS, 0);

/// Per-CPU counters of what happened to packets, indexed by `bg_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);

/// Interfaces packets may be redirected to, keyed by ifindex.
#[map]
pub static REDIRECT_IFACES: DevMapHash = DevMapHash::pinned(MAX_REDIRECT_IFACES, 0);

/// TCP, established connections only: (client, service) -> colour chosen
/// at the SYN, state, last seen. A flow enters at its handshake's final
/// ACK, so floods of spoofed segments cannot evict these. IPv6 flows, and
/// IPv4 flows admitted by an older program (before `FLOWS4`): they age
/// out here. The agent sets the size from the config before loading.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// `FLOWS` for IPv4 flows, on a 12-byte key: what every established IPv4
/// segment looks up. Same size as `FLOWS`.
#[map]
pub static FLOWS4: LruHashMap<FlowKey4, FlowValue> = LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// TCP: (client, backend) -> service address and port, for reverse NAT of
/// established connections.
#[map]
pub static REV_FLOWS: LruHashMap<FlowKey, RevValue> =
    LruHashMap::pinned(DEFAULT_FLOW_TABLE_SIZE, 0);

/// TCP flows not established: handshakes in progress and flows on
/// probation, apart from `FLOWS` (see `bg_common::PendingFlow`).
#[map]
pub static PENDING_FLOWS: LruHashMap<FlowKey, PendingFlow> =
    LruHashMap::pinned(DEFAULT_PENDING_TABLE_SIZE, 0);

/// `REV_FLOWS` for the flows of `PENDING_FLOWS`: the SYN-ACK needs it.
#[map]
pub static PENDING_REV: LruHashMap<FlowKey, RevValue> =
    LruHashMap::pinned(DEFAULT_PENDING_TABLE_SIZE, 0);

/// Timeouts the agent writes (`bg_common::tcp_setting`), read on SYNs.
#[map]
pub static TCP_SETTINGS: Array<u64> = Array::pinned(tcp_setting::SLOTS, 0);

/// Per-CPU counts of what the flow tables did (`bg_common::tcp_event`).
#[map]
pub static TCP_EVENTS: PerCpuArray<u64> = PerCpuArray::pinned(tcp_event::COUNT, 0);

/// One u64 written by `bg_clock`: the data path's clock, read by the agent.
#[map]
pub static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn count_tcp(index: u32) {
    if let Some(slot) = TCP_EVENTS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, see `count`.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn count_dsr(index: u32) {
    if let Some(slot) = DSR_EVENTS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, see `count`.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn tcp_setting(slot: u32) -> u64 {
    TCP_SETTINGS.get(slot).copied().unwrap_or(0)
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Counts a steered packet, and its TCP event if any, with one lookup.
#[inline(always)]
pub fn count_steered(slot: u32, bytes: u64, tcp: Option<TcpEvent>) {
    if let Some(stats) = STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, see `count`.
        let s = unsafe { &mut *stats };
        s.packets += 1;
        s.bytes += bytes;
        if let Some(e) = tcp {
            s.tcp_new += u64::from(e.new);
            s.tcp_established += u64::from(e.established);
            s.tcp_flow_miss += u64::from(e.miss);
            s.tcp_closing += u64::from(e.closing);
        }
    }
}
