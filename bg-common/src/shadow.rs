//! Shadow copies (issue 15): while blue serves every packet, a copy of each
//! sampled sender's UDP datagram goes to the new colour's shadow target.
//!
//! Maps: `SHADOW` (`SHARE_SLOT`: the share of senders copied, in basis
//! points, 0 is off; `BUDGET_SLOT`: XDP's copies per second per CPU, 0
//! is no limit), `SHADOW_BUDGET` (per CPU: the token bucket), `SHADOW_TARGETS` (per service: where the copy goes and the
//! steering host's address it comes from) and `SHADOW_STATS` (per service,
//! per CPU: what became of the copies).
//!
//! The XDP program cannot clone a frame, so it hands a sampled datagram to
//! the kernel with `ShadowMeta` in the XDP metadata: rewritten towards blue
//! by NAT, or as the client sent it when blue's mode is direct server
//! return. The TC ingress program that reads the metadata makes the copy
//! with `bpf_clone_redirect`, then sends a DSR original on itself (the
//! kernel would route it by the service address). Under `attach = "tc"`
//! the steering program copies inline.

pub const SHARE_SLOT: u32 = 0;
pub const BUDGET_SLOT: u32 = 1;
/// The ifindex blue's backends are redirected to while XDP copies by
/// devmap broadcast (`SHADOW_DEVMAP`: that interface, and the target's
/// with `bg_shadow_copy`); 0: copies take the kernel's path.
pub const BROADCAST_SLOT: u32 = 2;
pub const SLOTS: u32 = 4;
/// The bucket holds this much of a second's budget: bursts of 100 ms.
pub const BURST_NS: u64 = 100_000_000;

/// Written before a frame's data (XDP metadata) for the TC program.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShadowMeta {
    /// `META_MAGIC`: metadata another program wrote is never taken for ours.
    pub magic: u32,
    pub service: u32,
    /// The backend slot (`BACKENDS`) the datagram is steered to.
    pub slot: u32,
}

/// "BGSH".
pub const META_MAGIC: u32 = 0x4247_5348;
/// Bytes of `ShadowMeta` (the kernel wants a multiple of 4).
pub const META_LEN: usize = core::mem::size_of::<ShadowMeta>();

/// Where one service's copies go (`SHADOW_TARGETS[service_id]`). Addresses
/// and ports in network byte order; IPv4 uses word 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShadowTarget {
    /// The shadow listener (by default the new colour's backend).
    pub dst_be: [u32; 4],
    /// The copy's source: an address of the steering host and the port of
    /// the agent's socket that collects the target's ICMP errors, so they
    /// never reach the real sender.
    pub src_be: [u32; 4],
    pub dst_port_be: u16,
    pub src_port_be: u16,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`; 0: this service is not copied.
    pub family: u8,
    pub _pad: [u8; 3],
    /// Broadcast copies: the next hop's MAC and the egress interface's,
    /// from the agent's route query at the start.
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub _pad2: [u8; 4],
}

/// Per-CPU counts of one service's copies (`SHADOW_STATS[service_id]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShadowStats {
    /// Copies sent towards the target.
    pub copied: u64,
    /// Their bytes, from the Ethernet header.
    pub bytes: u64,
    /// Copies the kernel refused (`bpf_clone_redirect` failed) or the
    /// frame could not be rewritten: the original went on regardless.
    pub copy_failed: u64,
    /// No usable route or neighbour towards the target: not copied.
    pub no_route: u64,
    /// XDP: datagrams handed to the kernel for their copy instead of being
    /// redirected by XDP.
    pub handed_to_tc: u64,
    /// XDP: datagrams sent by devmap broadcast, to blue and (rewritten by
    /// `bg_shadow_copy`, which counts `copied`) to the target.
    pub broadcast: u64,
    /// XDP: the driver refused the metadata; the datagram went to blue
    /// as usual, without a copy.
    pub no_metadata: u64,
    /// XDP: past this CPU's budget of copies (`BUDGET_SLOT`): sent on
    /// by XDP as usual, without a copy, so no copier takes more than it
    /// carries.
    pub over_budget: u64,
}

/// Per-CPU token bucket of XDP's copies (`SHADOW_BUDGET[0]`), in
/// "nano-datagrams": a copy costs 1e9, a nanosecond adds the budget.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ShadowBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

/// Refills `b` for `now_ns` at `per_s` hand-overs per second and takes one
/// if it can.
#[inline(always)]
pub fn take(b: &mut ShadowBucket, now_ns: u64, per_s: u64) -> bool {
    let elapsed = now_ns.wrapping_sub(b.last_ns).min(BURST_NS);
    b.last_ns = now_ns;
    // At least one hand-over, however small the budget.
    let cap = (per_s * BURST_NS).max(1_000_000_000);
    b.tokens = (b.tokens + elapsed * per_s).min(cap);
    if b.tokens >= 1_000_000_000 {
        b.tokens -= 1_000_000_000;
        true
    } else {
        false
    }
}

/// Whether a sender at `addr_be` is in the copied share: the split's
/// keyed hash, so a shadow at p % copies the senders a canary at p %
/// would move first.
#[inline(always)]
pub const fn sampled(weight_bp: u32, seed: u32, addr_be: &[u32; 4]) -> bool {
    weight_bp >= crate::split::WEIGHT_FULL || crate::split::bucket(seed, addr_be) < weight_bp
}
