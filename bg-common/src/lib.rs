//! Map keys, values and constants shared by the XDP/TC programs and `bgctl`.
//!
//! Every type is `#[repr(C)]` with explicit padding so the kernel and user
//! space agree on the layout byte for byte. Addresses and ports are stored in
//! network byte order; fields that hold them end in `_be`.
#![no_std]

pub mod shadow;
pub mod stage_cut;

/// Colour index of the blue environment.
pub const COLOUR_BLUE: u32 = 0;
/// Colour index of the green environment.
pub const COLOUR_GREEN: u32 = 1;
/// Number of colours; `BACKENDS` and `STATS` hold this many slots per service.
pub const COLOURS: u32 = 2;

/// Most services one agent can steer. Service ids run from 0 to this - 1.
pub const MAX_SERVICES: u32 = 256;
/// Size of the devmap used for redirects (keyed by ifindex).
pub const MAX_REDIRECT_IFACES: u32 = 256;
/// Default number of TCP flows in `FLOWS` (issue 3); kept here so user
/// space and docs agree.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 262_144;

/// Address family tags used in keys and backends.
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// IP protocol numbers.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// `PORTS` is indexed by `port_index(family, proto, port)`: one slot per
/// (family, protocol, port). A slot holds the id + 1 of the service that
/// listens on any address there (0: none) in its low 16 bits, and
/// `PORT_HAS_SPECIFIC` when some service listens on a specific address of
/// that port, which only then costs a `SERVICES` hash lookup.
pub const PORT_SLOTS: u32 = 4 * 65536;
pub const PORT_ANY_MASK: u32 = 0xffff;
pub const PORT_HAS_SPECIFIC: u32 = 1 << 31;

/// Slot of `PORTS` for a family (`FAMILY_*`), protocol (`PROTO_*`) and port
/// in host byte order. Other protocols have no slot.
#[inline(always)]
pub const fn port_index(family: u8, proto: u8, port: u16) -> Option<u32> {
    let fam = if family == FAMILY_IPV6 { 2 } else { 0 };
    let pr = match proto {
        PROTO_UDP => 0,
        PROTO_TCP => 1,
        _ => return None,
    };
    Some(((fam + pr) << 16) | port as u32)
}

/// How long a cached next hop (`NEXT_HOPS`) is used before the FIB is asked
/// again, in jiffies: 48 ms at the common HZ=250 (12 ms at HZ=1000, 120 ms
/// at HZ=100). Bounds how long a route or neighbour change goes unseen.
/// Jiffies because `bpf_jiffies64` is nearly free, while a nanosecond clock
/// read cost as much as the rest of the fast path.
pub const NEXT_HOP_TTL_JIFFIES: u64 = 12;

/// What the FIB said for a backend, cached per CPU at `service_id * 2 + colour`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// `bpf_jiffies64` when the FIB answered.
    pub stamp_jiffies: u64,
    /// The backend address the answer is for; a changed backend misses.
    pub addr_be: [u32; 4],
    /// Egress ifindex for `HOP_FORWARD`.
    pub ifindex: u32,
    /// One of the `HOP_*` kinds; 0 means the entry is empty.
    pub kind: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// The egress route's MTU (`bpf_fib_lookup`'s `mtu_result`); 0: unknown.
    pub mtu: u16,
    /// 1 when the backend is the next hop itself (no gateway): what
    /// `dsr-l2` needs, as it keeps the service address as destination.
    pub on_link: u8,
    pub _pad: u8,
}

/// Next hop kinds.
pub const HOP_FORWARD: u32 = 1;
pub const HOP_LOCAL: u32 = 2;
pub const HOP_FWD_DISABLED: u32 = 3;
pub const HOP_KERNEL: u32 = 4;
/// The FIB names an egress interface missing from the redirect devmap.
pub const HOP_NO_DEVMAP: u32 = 5;

/// TCP flow table key. In `FLOWS` the server side is the service address
/// the client connected to; in `REV_FLOWS` it is the backend the flow was
/// steered to, which is what replies carry. Network byte order throughout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub client_be: [u32; 4],
    pub server_be: [u32; 4],
    pub client_port_be: u16,
    pub server_port_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// `FLOWS4` key: an IPv4 TCP connection's client and service address and
/// ports, network byte order. 12 bytes against `FlowKey`'s 40: the
/// established lookup every segment pays hashes and compares a third as
/// much (`bench --prog`, "the flow lookup by key size").
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey4 {
    pub client_be: u32,
    pub server_be: u32,
    pub client_port_be: u16,
    pub server_port_be: u16,
}

impl FlowKey4 {
    /// The IPv4 part of a `FlowKey` whose family is IPv4.
    pub fn of(key: &FlowKey) -> Self {
        Self {
            client_be: key.client_be[0],
            server_be: key.server_be[0],
            client_port_be: key.client_port_be,
            server_port_be: key.server_port_be,
        }
    }
}

/// `FLOWS` and `FLOWS4` value: the colour a TCP connection was steered to
/// at its SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    /// `bpf_jiffies64` of the last segment from the client.
    pub last_seen_jiffies: u64,
    pub colour: u32,
    /// `FLOW_SYN`, `FLOW_OPEN` or `FLOW_CLOSING`.
    pub state: u32,
}

/// `FLOWS`: an established connection (its handshake completed).
/// `PENDING_FLOWS`: a flow on probation, seen mid-stream without a
/// handshake (older than the program, or evicted): it keeps its colour
/// while its entry lasts, but never enters `FLOWS`.
pub const FLOW_OPEN: u32 = 1;
/// A FIN or RST was seen in either direction; the entry ages out.
pub const FLOW_CLOSING: u32 = 2;
/// `PENDING_FLOWS`: only the SYN seen so far; a SYN now is a
/// retransmission and keeps the colour. (Older agents kept this state in
/// `FLOWS`; such entries are treated as open.)
pub const FLOW_SYN: u32 = 3;

/// `PENDING_FLOWS` value: a TCP flow not (yet) established. Embryonic and
/// probation flows live apart from `FLOWS`, in a smaller LRU table, so a
/// flood of spoofed SYNs or ACKs evicts only its own kind. A flow enters
/// `FLOWS` when the client acknowledges the server's SYN-ACK: its ACK
/// number must be the server's initial sequence number + 1, which a blind
/// spoofer cannot know.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PendingFlow {
    /// `bpf_jiffies64` of the last segment from the client.
    pub last_seen_jiffies: u64,
    pub colour: u32,
    /// `FLOW_SYN`, `FLOW_OPEN` (probation) or `FLOW_CLOSING`.
    pub state: u32,
    /// The server's initial sequence number, from its SYN-ACK (bg_unnat),
    /// in host byte order.
    pub server_isn: u32,
    /// 1 once `server_isn` holds the SYN-ACK's sequence number.
    pub isn_seen: u32,
}

/// Default number of entries of `PENDING_FLOWS` and `PENDING_REV`.
pub const DEFAULT_PENDING_TABLE_SIZE: u32 = 65_536;

/// Slots of the pinned `TCP_SETTINGS` array, which the agent writes on
/// each start and the data path reads on SYNs only. Jiffies, because the
/// data path keeps time in jiffies.
pub mod tcp_setting {
    /// A flow with no client segment for this long is idle: a SYN on it
    /// starts a new connection. 0: never idle.
    pub const IDLE_JIFFIES: u32 = 0;
    /// A closing flow (FIN or RST seen) takes a SYN as a new connection
    /// only after this long without a client segment, so a spoofed RST
    /// followed by a spoofed SYN cannot move a connection that still sends.
    /// 0: at once.
    pub const CLOSE_GRACE_JIFFIES: u32 = 1;
    pub const SLOTS: u32 = 4;
}

/// Indexes of the per-CPU `TCP_EVENTS` array: what the flow tables did
/// with TCP segments, beyond the per-colour counts in `STATS`.
pub mod tcp_event {
    /// A SYN for a live established flow: it kept the flow's colour and
    /// changed nothing (a spoofed SYN, or a stray retransmission).
    pub const SYN_ON_LIVE_FLOW: u32 = 0;
    /// A SYN on a closed (and quiet) or idle flow: a new connection reusing
    /// the ports, on the active colour.
    pub const REOPENED: u32 = 1;
    /// The client acknowledged the server's SYN-ACK: the flow entered
    /// the established table.
    pub const ADMITTED: u32 = 2;
    /// A segment of a handshake in progress whose ACK number was not the
    /// server's ISN + 1 (spoofed, or ahead of the SYN-ACK): refused
    /// admission, steered by its pending entry.
    pub const ADMISSION_REFUSED: u32 = 3;
    /// A reverse-NAT entry that was missing (evicted) was written again
    /// from its established forward flow.
    pub const REVERSE_RESTORED: u32 = 4;
    /// A segment with no entry in either table: put on probation on the
    /// active colour. Flows evicted under pressure end up here.
    pub const PROBATION: u32 = 5;
    pub const COUNT: u32 = 16;
    pub const NAMES: [&str; 6] = [
        "tcp_syn_on_live_flow",
        "tcp_reopened",
        "tcp_admitted",
        "tcp_admission_refused",
        "tcp_reverse_restored",
        "tcp_probation",
    ];
}

/// `REV_FLOWS` value: the service address and port to put back as the
/// source of replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RevValue {
    pub service_be: [u32; 4],
    pub service_port_be: u16,
    pub _pad: [u8; 2],
}

/// `PATH_QUERY` slot 0: the agent asks where the data path would send a
/// packet for a backend, runs `bg_path` once, and reads the answer from the
/// same slot. This is how health probes see what the data path sees.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PathQuery {
    /// The backend, network byte order; IPv4 in word 0.
    pub addr_be: [u32; 4],
    /// The steering interface: the packets' ingress.
    pub ifindex: u32,
    pub port_be: u16,
    pub family: u8,
    pub proto: u8,
    /// Answer: bpf_fib_lookup's return code (`BPF_FIB_LKUP_RET_*`).
    pub rc: u32,
    /// Answer: the egress interface, when the FIB found one.
    pub egress_ifindex: u32,
    /// Answer: the next hop's MAC and the egress interface's.
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

/// Slot of the `CLOCK` array that `bg_clock` fills with `bpf_jiffies64`, so
/// user space can age flows on the data path's own clock.
pub const CLOCK_SLOT: u32 = 0;

/// Index of the single slot of the `ACTIVE` array map.
pub const ACTIVE_SLOT: u32 = 0;

/// The `ACTIVE` word: the active colour, and optionally a split (issue 14).
/// One aligned u32, so a packet sees the colour and the weight of one write:
/// - bit 0: the active colour (`COLOUR_*`), the only bit older agents wrote;
/// - bit 1: `SPLIT`: new senders are split by `green_weight`, not all sent
///   to the active colour;
/// - bits 16..31: green's weight in basis points, 1 to 9,999 while split.
///
/// Weight 0 and 10,000 are never written as splits: they are plain blue and
/// green, at exactly the unsplit cost.
pub mod split {
    pub const COLOUR: u32 = 1;
    pub const SPLIT: u32 = 1 << 1;
    pub const WEIGHT_SHIFT: u32 = 16;
    /// The whole: 100 % in basis points.
    pub const WEIGHT_FULL: u32 = 10_000;

    /// The word for `colour` with green at `green_bp` basis points. Weights
    /// at or beyond the ends are the plain colours.
    #[inline(always)]
    pub const fn word(colour: u32, green_bp: u32) -> u32 {
        if green_bp == 0 {
            super::COLOUR_BLUE
        } else if green_bp >= WEIGHT_FULL {
            super::COLOUR_GREEN
        } else {
            (colour & COLOUR) | SPLIT | (green_bp << WEIGHT_SHIFT)
        }
    }

    /// Green's weight a word carries: 0 or 10,000 unless it is a split.
    #[inline(always)]
    pub const fn green_weight(word: u32) -> u32 {
        if word & SPLIT == 0 {
            (word & COLOUR) * WEIGHT_FULL
        } else {
            word >> WEIGHT_SHIFT
        }
    }

    /// A sender's bucket, 0 to 9,999: a keyed hash of its source address
    /// alone (not its port), so every stream of one sender lands together.
    /// The words are folded through multiplications by odd constants
    /// (independent of one another, so they run side by side; rotations
    /// alone let structured IPv6 addresses collide), then mixed by
    /// MurmurHash3's finaliser, a bijection with full avalanche. IPv4 uses
    /// word 0 only; the others are zero and fold to nothing.
    #[inline(always)]
    pub const fn bucket(seed: u32, addr_be: &[u32; 4]) -> u32 {
        let mut h = addr_be[0]
            ^ addr_be[1].wrapping_mul(0x9e37_79b1)
            ^ addr_be[2].wrapping_mul(0x85eb_ca77)
            ^ addr_be[3].wrapping_mul(0xc2b2_ae3d);
        h ^= seed;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        ((h as u64 * WEIGHT_FULL as u64) >> 32) as u32
    }

    /// The colour a new sender takes under `word`: the active colour, or
    /// under a split green for buckets below the weight. Raising the
    /// weight therefore only ever moves senders from blue to green.
    #[inline(always)]
    pub const fn colour(word: u32, seed: u32, addr_be: &[u32; 4]) -> u32 {
        if word & SPLIT == 0 {
            word & COLOUR
        } else if bucket(seed, addr_be) < word >> WEIGHT_SHIFT {
            super::COLOUR_GREEN
        } else {
            super::COLOUR_BLUE
        }
    }
}

/// Names of the maps and programs; user space pins them under these names.
pub mod names {
    pub const SERVICES: &str = "SERVICES";
    pub const PORTS: &str = "PORTS";
    pub const NEXT_HOPS: &str = "NEXT_HOPS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const ACTIVE: &str = "ACTIVE";
    pub const SPLIT_SEED: &str = "SPLIT_SEED";
    pub const STATS: &str = "STATS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const REDIRECT_IFACES: &str = "REDIRECT_IFACES";
    pub const PROG_STEER: &str = "bg_steer";
    pub const PROG_UNNAT: &str = "bg_unnat";
    pub const PROG_STEER_TC: &str = "bg_steer_tc";
    pub const PROG_CLOCK: &str = "bg_clock";
    pub const PROG_PATH: &str = "bg_path";
    pub const PATH_QUERY: &str = "PATH_QUERY";
    pub const REDIRECT_DROPS: &str = "REDIRECT_DROPS";
    pub const FLOWS: &str = "FLOWS";
    pub const FLOWS4: &str = "FLOWS4";
    pub const TUNNELS: &str = "TUNNELS";
    pub const DSR_EVENTS: &str = "DSR_EVENTS";
    pub const REV_FLOWS: &str = "REV_FLOWS";
    pub const PENDING_FLOWS: &str = "PENDING_FLOWS";
    pub const PENDING_REV: &str = "PENDING_REV";
    pub const TCP_SETTINGS: &str = "TCP_SETTINGS";
    pub const TCP_EVENTS: &str = "TCP_EVENTS";
    pub const CLOCK: &str = "CLOCK";
    pub const KERNEL_DROPS: &str = "KERNEL_DROPS";
    pub const TRACE_FILTER: &str = "TRACE_FILTER";
    pub const PROG_REDIRECT_ERR: &str = "bg_redirect_err";
    pub const PROG_DEVMAP_XMIT: &str = "bg_devmap_xmit";
    pub const PROG_BULK_TX: &str = "bg_bulk_tx";
    pub const SHADOW: &str = "SHADOW";
    pub const SHADOW_TARGETS: &str = "SHADOW_TARGETS";
    pub const SHADOW_STATS: &str = "SHADOW_STATS";
    pub const SHADOW_BUDGET: &str = "SHADOW_BUDGET";
    pub const SHADOW_DEVMAP: &str = "SHADOW_DEVMAP";
    pub const SHADOW_BY_BLUE: &str = "SHADOW_BY_BLUE";
    pub const PROG_SHADOW_COPY: &str = "bg_shadow_copy";
    pub const PROG_SHADOW_TC: &str = "bg_shadow_tc";
}

/// Steered packets the kernel dropped after `bg_steer` returned, counted by
/// raw tracepoint programs into the per-CPU `KERNEL_DROPS` array. bg_steer
/// cannot see these itself: the redirect or transmit happens after it returns.
pub mod kernel_drop {
    /// `xdp_redirect_err`: XDP_REDIRECT through our devmap refused.
    pub const REDIRECT_ERR: u32 = 0;
    /// `xdp_devmap_xmit`: frames a redirect target did not take (its
    /// ring full, or a veth peer without NAPI).
    pub const XMIT_DROPS: u32 = 1;
    /// `xdp_bulk_tx`: XDP_TX frames the steering interface did not send.
    pub const TX_DROPS: u32 = 2;
    /// Slots of `KERNEL_DROPS` (room to grow without resizing a pinned map).
    pub const COUNT: u32 = 8;
    pub const NAMES: [&str; 3] = ["kernel_redirect_err", "xmit_drops", "tx_drops"];
    /// The raw tracepoint each counter comes from, by `NAMES` index.
    pub const TRACEPOINTS: [&str; 3] = ["xdp_redirect_err", "xdp_devmap_xmit", "xdp_bulk_tx"];
    /// `TRACE_FILTER` slots: the id of the redirect devmap (`REDIRECT_IFACES`),
    /// the steering ifindex, and the byte offset of `ifindex` in the kernel's
    /// `struct net_device` (0: unknown, so device-based counts stay off).
    pub const FILTER_MAP_ID: u32 = 0;
    pub const FILTER_IFINDEX: u32 = 1;
    pub const FILTER_IFINDEX_OFFSET: u32 = 2;
    pub const FILTER_SLOTS: u32 = 4;
}

/// Key of the `SERVICES` hash map: where a service listens.
///
/// `addr_be` holds an IPv4 address in its first word (rest zero) or an IPv6
/// address in all four, in network byte order. An all-zero address means
/// "any address of this family" and is looked up after the exact match.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    pub addr_be: [u32; 4],
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of the `SERVICES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// Index of the service: its backends live at `id * 2 + colour`.
    pub id: u32,
}

/// One backend (an entry of the `BACKENDS` array, at `service_id * 2 + colour`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// Address in network byte order; IPv4 uses the first word.
    pub addr_be: [u32; 4],
    pub port_be: u16,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`; 0 means the slot is empty.
    pub family: u8,
    /// How packets reach it (`mode::*`). Agents before direct server
    /// return wrote 0 here, which is NAT, what they did.
    pub mode: u8,
}

/// `Backend::mode`: how a colour's packets reach its backend.
pub mod mode {
    /// Destination rewritten to the backend (DNAT); replies come back
    /// through the steering node for `bg_unnat`.
    pub const NAT: u8 = 0;
    /// Direct server return on one L2 segment (IPVS's DR): the IP header
    /// stays as the client sent it, only the MACs change.
    pub const DSR_L2: u8 = 1;
    /// Direct server return through an IP-in-IP tunnel (IPVS's TUN,
    /// Katran): an outer header from `TUNNELS`' source to the backend.
    pub const DSR_IPIP: u8 = 2;
    pub const NAMES: [&str; 3] = ["nat", "dsr-l2", "dsr-ipip"];
}

/// `TUNNELS[service_id * 2 + colour]`: the outer source address of a
/// `dsr-ipip` colour's tunnel. Family 0: none configured, and the data
/// path hands such packets to the kernel untouched.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TunnelSource {
    pub addr_be: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Per-CPU `DSR_EVENTS`: what direct server return did, beside the
/// `COUNTERS` slot every packet also takes.
pub mod dsr_event {
    /// Sent on with the MACs changed (`dsr-l2`).
    pub const L2: u32 = 0;
    /// Sent on inside an outer IP header (`dsr-ipip`).
    pub const IPIP: u32 = 1;
    /// Too big for the egress MTU once encapsulated (or at all): handed
    /// to the kernel untouched.
    pub const TOO_BIG: u32 = 2;
    /// `dsr-l2` whose backend is behind a gateway, not on the segment:
    /// handed to the kernel untouched.
    pub const NOT_ON_LINK: u32 = 3;
    /// A DSR colour the path cannot serve (a VLAN-tagged frame, TC
    /// steering, no tunnel source, or a shadow hand-over the TC program
    /// could not send on): handed to the kernel untouched.
    pub const UNSUPPORTED: u32 = 4;
    /// TCP on a DSR colour: the server's SYN-ACK never passes the
    /// steering node, so the handshake's ACK is admitted unchecked.
    pub const ADMITTED_UNVERIFIED: u32 = 5;
    pub const COUNT: u32 = 16;
    pub const NAMES: [&str; 6] = [
        "dsr_l2",
        "dsr_ipip",
        "dsr_too_big",
        "dsr_not_on_link",
        "dsr_unsupported",
        "dsr_admitted_unverified",
    ];
}

impl Backend {
    pub const fn is_set(&self) -> bool {
        self.family != 0
    }
}

/// Per-CPU counters for one service and colour (`STATS[service_id * 2 + colour]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ColourStats {
    /// Packets steered (DNATed) to this colour.
    pub packets: u64,
    /// Bytes of those packets, counted from the Ethernet header.
    pub bytes: u64,
    /// TCP: SYNs that opened a flow on this colour.
    pub tcp_new: u64,
    /// TCP: segments of established flows kept on this colour.
    pub tcp_established: u64,
    /// TCP: mid-stream segments with no flow entry, sent to the active colour.
    pub tcp_flow_miss: u64,
    /// TCP: FIN or RST seen; the flow is closing.
    pub tcp_closing: u64,
}

/// Indexes of the per-CPU `COUNTERS` array: what the data path did with
/// packets, including every path that declined to steer.
pub mod counter {
    /// Not IPv4/IPv6, or no service matched: passed untouched.
    pub const PASS_NO_SERVICE: u32 = 0;
    /// Truncated or malformed headers: passed untouched.
    pub const PASS_MALFORMED: u32 = 1;
    /// IPv4 fragment: passed untouched.
    pub const PASS_FRAGMENT: u32 = 2;
    /// IPv6 with an extension header: passed untouched.
    pub const PASS_IPV6_EXT: u32 = 3;
    /// Service matched but the active colour has no backend: passed untouched.
    pub const PASS_NO_BACKEND: u32 = 4;
    /// Steered, then handed to the kernel: local backend.
    pub const PASS_LOCAL: u32 = 5;
    /// Steered, then handed to the kernel: no neighbour entry yet.
    pub const PASS_NO_NEIGH: u32 = 6;
    /// Steered, then handed to the kernel: FIB said no route, forwarding
    /// disabled, TTL expiring, VLAN-tagged, or another reason to let it route.
    pub const PASS_KERNEL_ROUTE: u32 = 7;
    /// Steered and sent back out of the ingress interface.
    pub const TX: u32 = 8;
    /// Steered and redirected to another interface.
    pub const REDIRECT: u32 = 9;
    /// `bpf_redirect_map` refused (interface not in the devmap): passed instead.
    pub const REDIRECT_FAILED: u32 = 10;
    /// Backend family differs from the packet's (never configured by bgctl).
    pub const PASS_FAMILY_MISMATCH: u32 = 11;
    /// Steered, then handed to the kernel: IP forwarding is disabled on the
    /// ingress interface, so the FIB gives no next hop (local backends work).
    pub const PASS_FWD_DISABLED: u32 = 12;
    /// TC: a reply of a steered TCP flow got its service source back.
    pub const UNNAT: u32 = 13;
    /// TC: a packet that belongs to no steered flow, passed untouched.
    pub const UNNAT_PASS: u32 = 14;
    /// Steered by the TC program (`attach = "tc"`), then routed by the kernel.
    pub const TC_TO_KERNEL: u32 = 15;
    /// Total counter slots.
    pub const COUNT: u32 = 16;

    /// Display names, indexed by counter.
    pub const NAMES: [&str; 16] = [
        "pass_no_service",
        "pass_malformed",
        "pass_fragment",
        "pass_ipv6_ext",
        "pass_no_backend",
        "pass_local",
        "pass_no_neigh",
        "pass_kernel_route",
        "tx",
        "redirect",
        "redirect_failed",
        "pass_family_mismatch",
        "pass_fwd_disabled",
        "unnat",
        "unnat_pass",
        "tc_to_kernel",
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), Copy, and have no implicit padding.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::ColourStats {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowKey4 {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::RevValue {}
    unsafe impl aya::Pod for super::PendingFlow {}
    unsafe impl aya::Pod for super::PathQuery {}
    unsafe impl aya::Pod for super::TunnelSource {}
    unsafe impl aya::Pod for super::shadow::ShadowTarget {}
    unsafe impl aya::Pod for super::shadow::ShadowStats {}
    unsafe impl aya::Pod for super::shadow::ShadowBucket {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    // Sizes are the sum of the field sizes: no implicit padding anywhere.
    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 16 + 2 + 1 + 1);
        assert_eq!(size_of::<ServiceValue>(), 4);
        assert_eq!(size_of::<Backend>(), 16 + 2 + 1 + 1);
        assert_eq!(size_of::<ColourStats>(), 6 * 8);
        assert_eq!(align_of::<ServiceKey>(), 4);
        assert_eq!(size_of::<NextHop>(), 8 + 16 + 4 + 4 + 6 + 6 + 2 + 1 + 1);
        assert_eq!(size_of::<TunnelSource>(), 16 + 1 + 3);
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(size_of::<FlowKey4>(), 4 + 4 + 2 + 2);
        assert_eq!(size_of::<FlowValue>(), 8 + 4 + 4);
        assert_eq!(size_of::<RevValue>(), 16 + 2 + 2);
        assert_eq!(size_of::<PendingFlow>(), 8 + 4 * 4);
        assert_eq!(size_of::<PathQuery>(), 16 + 4 + 2 + 1 + 1 + 4 + 4 + 6 + 6);
        assert_eq!(
            size_of::<shadow::ShadowTarget>(),
            16 + 16 + 2 + 2 + 1 + 3 + 6 + 6 + 4
        );
        assert_eq!(size_of::<shadow::ShadowStats>(), 8 * 8);
        assert_eq!(size_of::<shadow::ShadowBucket>(), 2 * 8);
        assert_eq!(size_of::<shadow::ShadowMeta>(), shadow::META_LEN);
        assert_eq!(
            shadow::META_LEN % 4,
            0,
            "the kernel wants metadata in words"
        );
    }

    #[test]
    fn split_words_round_trip_and_the_ends_are_plain_colours() {
        assert_eq!(split::word(COLOUR_GREEN, 0), COLOUR_BLUE);
        assert_eq!(split::word(COLOUR_BLUE, 10_000), COLOUR_GREEN);
        assert_eq!(split::word(COLOUR_BLUE, 12_000), COLOUR_GREEN);
        for w in [1, 500, 5_000, 9_999] {
            for c in [COLOUR_BLUE, COLOUR_GREEN] {
                let word = split::word(c, w);
                assert_eq!(word & split::COLOUR, c);
                assert_eq!(split::green_weight(word), w);
            }
        }
        assert_eq!(split::green_weight(COLOUR_BLUE), 0);
        assert_eq!(split::green_weight(COLOUR_GREEN), 10_000);
    }

    #[test]
    fn buckets_depend_on_the_seed_and_stay_in_range() {
        let a = [0x0100_12c6, 0, 0, 0];
        let mut differ = 0;
        for seed in 0..1000u32 {
            let b = split::bucket(seed, &a);
            assert!(b < split::WEIGHT_FULL);
            if b != split::bucket(seed + 1, &a) {
                differ += 1;
            }
        }
        assert!(differ > 990, "the seed barely moves a bucket: {differ}");
    }

    #[test]
    fn the_shadow_bucket_gives_its_rate_and_bursts_of_100_ms() {
        use shadow::{ShadowBucket, take};
        let mut b = ShadowBucket::default();
        // 1000 per second, offered 10,000 over one second, evenly.
        let took = (1..=10_000u64)
            .filter(|i| take(&mut b, i * 100_000, 1000))
            .count();
        assert!((999..=1001).contains(&took), "{took}");
        // Idle for a minute: at most 100 ms' worth at once.
        let later = 60_000_000_000;
        let burst = (0..1000).filter(|i| take(&mut b, later + i, 1000)).count();
        assert_eq!(burst, 100);
    }

    #[test]
    fn port_slots_are_distinct_per_family_and_protocol() {
        let a = port_index(FAMILY_IPV4, PROTO_UDP, 514).unwrap();
        let b = port_index(FAMILY_IPV4, PROTO_TCP, 514).unwrap();
        let c = port_index(FAMILY_IPV6, PROTO_UDP, 514).unwrap();
        let d = port_index(FAMILY_IPV6, PROTO_TCP, 65535).unwrap();
        assert_eq!(
            (a, b, c, d),
            (514, 65536 + 514, 2 * 65536 + 514, 4 * 65536 - 1)
        );
        assert!(d < PORT_SLOTS);
        assert_eq!(port_index(FAMILY_IPV4, 1, 514), None);
    }

    #[test]
    fn counter_names_cover_every_counter() {
        assert_eq!(counter::NAMES.len(), counter::TC_TO_KERNEL as usize + 1);
        assert!(counter::NAMES.len() <= counter::COUNT as usize);
        assert_eq!(tcp_event::NAMES.len(), tcp_event::PROBATION as usize + 1);
        assert!(tcp_event::NAMES.len() <= tcp_event::COUNT as usize);
        assert_eq!(
            dsr_event::NAMES.len(),
            dsr_event::ADMITTED_UNVERIFIED as usize + 1
        );
        assert!(dsr_event::NAMES.len() <= dsr_event::COUNT as usize);
    }
}
