//! Where `bg-bench --prog` stops `bg_steer` to time its stages one by one:
//! the cut programs `bg_steer_cut_*`, built from the same code with the
//! cut as a constant. Each passes the frame after its stage and counts
//! nothing more. The agent loads only `bg_steer` (`NONE`).

/// The whole program: `bg_steer`.
pub const NONE: u32 = 0;
/// After parsing the headers.
pub const PARSE: u32 = 1;
/// After the service, colour and backend are known (TCP: its flow too).
pub const DECIDE: u32 = 2;
/// After the destination rewrite and its checksums.
pub const DNAT: u32 = 3;
/// After the colour's packet and byte counters.
pub const COUNT: u32 = 4;
/// After the shadow-copy check.
pub const SHADOW: u32 = 5;

/// Every stage in program order: its program and what it has run so far.
/// The whole program comes last.
pub const STAGES: [(&str, &str); 6] = [
    ("bg_steer_cut_parse", "parse"),
    ("bg_steer_cut_decide", "+ service, colour, backend"),
    ("bg_steer_cut_dnat", "+ DNAT and checksums"),
    ("bg_steer_cut_count", "+ colour counters"),
    ("bg_steer_cut_shadow", "+ shadow check"),
    ("bg_steer", "+ next hop and delivery (whole program)"),
];
