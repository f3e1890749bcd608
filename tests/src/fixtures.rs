//! Config fixtures in one place: one `[[service]]` table, the probe and
//! deployment timings the tests use, and the service sets the program
//! tests and the benchmarks load.
use std::fmt::Display;

/// One `[[service]]` table; `more` follows it as is (`app = ...`,
/// `[service.health]`, `[service.tls]`).
pub fn service(
    name: &str,
    protocol: &str,
    listen: impl Display,
    blue: impl Display,
    green: impl Display,
    more: &str,
) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nlisten = \"{listen}\"\nblue = \"{blue}\"\ngreen = \"{green}\"\n{more}\n"
    )
}

/// Probes every 100 ms, rise 2, fall 2: a backend changes state within a
/// few hundred milliseconds instead of seconds.
pub const FAST_HEALTH: &str = "[health]\ninterval_ms = 100\nrise = 2\nfall = 2\n";

/// A deployment that gives up or finishes in seconds: `healthy_timeout_s`,
/// `bake_s`, no time kept warm, and `validate_messages` for the gate.
pub fn quick_deploy(healthy_timeout_s: u64, bake_s: u64, validate_messages: u32) -> String {
    format!(
        "[deploy]\nhealthy_timeout_s = {healthy_timeout_s}\nbake_s = {bake_s}\nkeep_warm_s = 0\nvalidate_messages = {validate_messages}\n"
    )
}

/// `xdp_prog`: UDP on any address, on a specific address, and over IPv6;
/// green on other ports, so a rewrite to it shows.
pub const XDP_SERVICES: &str = r#"
[[service]]
name = "v4-any"
protocol = "udp"
listen = "0.0.0.0:514"
blue = "198.18.1.2:514"
green = "198.18.2.2:5514"

[[service]]
name = "v4-specific"
protocol = "udp"
listen = "198.18.0.10:514"
blue = "198.18.1.10:1514"
green = "198.18.2.10:2514"

[[service]]
name = "v6"
protocol = "udp"
listen = "[2001:db8::1]:514"
blue = "[2001:db8:1::2]:514"
green = "[2001:db8:2::2]:6514"
"#;

/// `tc_prog`: the same on TC, with a TCP service.
pub const TC_SERVICES: &str = r#"
[[service]]
name = "v4"
protocol = "udp"
listen = "0.0.0.0:514"
blue = "198.18.1.2:514"
green = "198.18.2.2:5514"

[[service]]
name = "v6"
protocol = "udp"
listen = "[2001:db8::1]:514"
blue = "[2001:db8:1::2]:514"
green = "[2001:db8:2::2]:6514"

[[service]]
name = "tcp"
protocol = "tcp"
listen = "0.0.0.0:601"
blue = "198.18.1.2:601"
green = "198.18.2.2:1601"
"#;

/// `tcp_prog`: TCP over IPv4 and IPv6 (6514 as plain syslog).
pub const TCP_SERVICES: &str = r#"
[[service]]
name = "tcp-601"
protocol = "tcp"
listen = "0.0.0.0:601"
blue = "198.18.1.2:601"
green = "198.18.2.2:1601"

[[service]]
name = "tcp6-6514"
protocol = "tcp"
app = "syslog"
listen = "[::]:6514"
blue = "[2001:db8:1::2]:6514"
green = "[2001:db8:2::2]:7514"
"#;

/// The program benchmark's services: UDP over both families, and TCP.
pub const BENCH_SERVICES: &str = r#"
[[service]]
name = "syslog-udp"
protocol = "udp"
listen = "0.0.0.0:514"
blue = "198.18.1.2:514"
green = "198.18.2.2:514"

[[service]]
name = "syslog-udp6"
protocol = "udp"
listen = "[::]:514"
blue = "[2001:db8:1::2]:514"
green = "[2001:db8:2::2]:514"

[[service]]
name = "syslog-tcp"
protocol = "tcp"
listen = "0.0.0.0:601"
blue = "198.18.1.2:601"
green = "198.18.2.2:601"
"#;

/// `dsr_prog` and `bench --prog`'s delivery modes: every mode, with
/// backends on `wire_dsr_lab`'s segment and behind its gateway.
pub const DSR_SERVICES: &str = r#"
[[service]]
name = "l2"
protocol = "udp"
listen = "198.18.0.10:514"
blue = "198.18.1.2:514"
green = "198.18.5.2:514"
mode = "dsr-l2"

[[service]]
name = "ipip"
protocol = "udp"
listen = "198.18.0.11:514"
blue = "198.18.5.3:514"
green = "198.18.1.3:514"
mode = "dsr-ipip"
tunnel_source = "198.18.1.1"

[[service]]
name = "ipip6"
protocol = "udp"
listen = "[2001:db8::11]:514"
blue = "[2001:db8:5::3]:514"
green = "[2001:db8:1::3]:514"
mode = "dsr-ipip"
tunnel_source = "2001:db8:1::1"

[[service]]
name = "tcp"
protocol = "tcp"
listen = "198.18.0.12:601"
blue = "198.18.5.4:601"
green = "198.18.5.5:1601"
mode_blue = "dsr-ipip"
tunnel_source = "198.18.1.1"

[[service]]
name = "nat"
protocol = "udp"
listen = "198.18.0.13:514"
blue = "198.18.1.4:5514"
green = "198.18.1.5:5514"
"#;
