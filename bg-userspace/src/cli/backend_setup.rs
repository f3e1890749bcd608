//! `bgctl backend-setup`: the commands a backend needs for its colour's
//! mode, as a shell script an operator reads and runs on that backend
//! (Debian, rsyslog). Direct server return fails quietly when the backend
//! lacks the service address or answers ARP for it, so the script says
//! each step and why.
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::{
    config::{Service, dsr::Mode},
    model::{AppProtocol, Colour, Protocol},
};

/// The set-up script for `colour`'s backend of `svc`, reached by `mode`.
pub fn script(svc: &Service, colour: Colour, mode: Mode) -> String {
    let backend = match colour {
        Colour::Blue => svc.blue,
        Colour::Green => svc.green,
    };
    let vip = svc.listen.ip();
    let v4 = vip.is_ipv4();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# bluegreen backend set-up: service {:?} ({} {}), {colour} backend {backend}, mode {mode}",
        svc.name, svc.protocol, svc.listen
    );
    let _ = writeln!(
        s,
        "# Run as root on {}. Persist the sysctls in /etc/sysctl.d/90-bluegreen.conf and the\n# addresses and devices in /etc/network/interfaces.d/ (or systemd-networkd) for reboots.",
        backend.ip()
    );
    match mode {
        Mode::Nat => {
            let _ = writeln!(
                s,
                "\n# nat: nothing to add on the backend. Its replies must route back through the\n# steering node (its default route, or a route to the clients), which puts the\n# service address back as their source. Backends routed elsewhere need dsr-l2 or dsr-ipip."
            );
        }
        Mode::DsrL2 | Mode::DsrIpip => {
            if mode == Mode::DsrIpip {
                ipip_device(&mut s, v4);
            }
            service_address(&mut s, mode, v4, &vip.to_string());
            if mode == Mode::DsrIpip {
                mtu_note(&mut s, svc, v4);
            }
        }
    }
    rsyslog(&mut s, svc, backend, mode);
    s
}

fn ipip_device(s: &mut String, v4: bool) {
    if v4 {
        let _ = writeln!(
            s,
            "\n# dsr-ipip: the steering node sends each packet inside an IPv4 header (protocol 4).\n# tunl0 (made when the ipip module loads) takes every IP-in-IP packet and hands the\n# inner one, with the client's own source address, to the stack.\nmodprobe ipip\nip link set tunl0 up"
        );
    } else {
        let _ = writeln!(
            s,
            "\n# dsr-ipip: the steering node sends each packet inside an IPv6 header (next header 41).\n# ip6tnl0 (made when the ip6_tunnel module loads) takes them once its mode allows\n# IPv6 in IPv6, and hands the inner packet, with the client's address, to the stack.\nmodprobe ip6_tunnel\nip -6 tunnel change ip6tnl0 mode ip6ip6\nip link set ip6tnl0 up"
        );
    }
}

fn service_address(s: &mut String, mode: Mode, v4: bool, vip: &str) {
    if v4 {
        let _ = writeln!(
            s,
            "\n# The service address, on loopback: the backend accepts packets for it, and its\n# replies leave from it, straight to the client.\nip addr add {vip}/32 dev lo\n# Never answer ARP for it (or the router would send every client here, past the\n# steering node), and never use it as an ARP source.\nsysctl -w net.ipv4.conf.all.arp_ignore=1\nsysctl -w net.ipv4.conf.all.arp_announce=2\n# Clients' packets arrive from the steering node, where the route back to them\n# need not point: loose reverse-path filtering (the higher of all and the\n# interface's value counts, so strict interfaces become loose).\nsysctl -w net.ipv4.conf.all.rp_filter=2"
        );
    } else {
        let _ = writeln!(
            s,
            "\n# The service address, on loopback: the backend accepts packets for it, and its\n# replies leave from it, straight to the client. Linux answers neighbour\n# solicitations only for addresses on the asking interface, so loopback stays quiet.\nip -6 addr add {vip}/128 dev lo"
        );
    }
    if mode == Mode::DsrL2 {
        let _ = writeln!(
            s,
            "# dsr-l2: this backend must be on the steering node's L2 segment; the frames it\n# gets keep the service address as destination, only their MACs change."
        );
    }
}

fn mtu_note(s: &mut String, svc: &Service, v4: bool) {
    let outer = if v4 { 20 } else { 40 };
    let _ = writeln!(
        s,
        "\n# MTU: the outer header adds {outer} bytes. The path from the steering node to this\n# backend needs the clients' MTU + {outer} (1500 + {outer} = {}), or the steering node hands\n# bigger packets to its kernel untouched and counts them as dsr_too_big.",
        1500 + outer
    );
    if svc.protocol == Protocol::Tcp {
        let mss = 1500 - outer - if v4 { 40 } else { 60 };
        let _ = writeln!(
            s,
            "# Where the path stays at 1500, announce a smaller MSS to TCP clients instead:\n#   nft add table inet bluegreen\n#   nft add chain inet bluegreen out '{{ type filter hook output priority mangle; }}'\n#   nft add rule inet bluegreen out tcp sport {} tcp flags syn tcp option maxseg size set {mss}",
            svc.listen.port()
        );
    }
}

fn rsyslog(s: &mut String, svc: &Service, backend: SocketAddr, mode: Mode) {
    // NAT rewrites the port; direct server return keeps the service's.
    let port = if mode.is_dsr() {
        svc.listen.port()
    } else {
        backend.port()
    };
    let _ = writeln!(
        s,
        "\n# rsyslog, listening on every address (the service address included);\n# %fromhost-ip% is the sender's own address in every mode. Add\n# global(net.enableDNS=\"off\") to rsyslog.conf if senders have no reverse DNS.\ncat > /etc/rsyslog.d/10-bluegreen.conf <<'BLUEGREEN'"
    );
    let input = match (svc.protocol, svc.app) {
        (Protocol::Udp, _) => {
            format!("module(load=\"imudp\")\ninput(type=\"imudp\" port=\"{port}\")")
        }
        (Protocol::Tcp, AppProtocol::Relp) => {
            format!("module(load=\"imrelp\")\ninput(type=\"imrelp\" port=\"{port}\")")
        }
        (Protocol::Tcp, AppProtocol::Tls) => format!(
            "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"/etc/rsyslog.d/ca.pem\"\n       DefaultNetstreamDriverCertFile=\"/etc/rsyslog.d/cert.pem\" DefaultNetstreamDriverKeyFile=\"/etc/rsyslog.d/key.pem\")\nmodule(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\ninput(type=\"imtcp\" port=\"{port}\")"
        ),
        (Protocol::Tcp, AppProtocol::Syslog) => {
            format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\")")
        }
    };
    let _ = writeln!(s, "{input}\nBLUEGREEN\nsystemctl restart rsyslog");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn service(extra: &str, protocol: &str, listen: &str, [blue, green]: [&str; 2]) -> Service {
        let text = format!(
            "[[service]]\nname = \"s\"\nprotocol = \"{protocol}\"\nlisten = \"{listen}\"\nblue = \"{blue}\"\ngreen = \"{green}\"\n{extra}"
        );
        let c = Config::parse(Path::new("bg.toml"), &text).unwrap();
        c.services[0].clone()
    }

    /// The lines of `script` that are commands, not comments.
    fn commands(script: &str) -> Vec<&str> {
        script
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    }

    #[test]
    fn dsr_ipip_over_ipv4_brings_up_tunl0_and_holds_the_address_quietly() {
        let svc = service(
            "mode = \"dsr-ipip\"\ntunnel_source = \"198.18.0.1\"\n",
            "tcp",
            "198.18.0.10:601",
            ["198.18.5.3:601", "198.18.5.4:601"],
        );
        let s = script(&svc, Colour::Blue, svc.mode(Colour::Blue));
        let c = commands(&s);
        for want in [
            "modprobe ipip",
            "ip link set tunl0 up",
            "sysctl -w net.ipv4.conf.all.rp_filter=2",
            "ip addr add 198.18.0.10/32 dev lo",
            "sysctl -w net.ipv4.conf.all.arp_ignore=1",
            "sysctl -w net.ipv4.conf.all.arp_announce=2",
            "input(type=\"imtcp\" port=\"601\")",
        ] {
            assert!(c.contains(&want), "{want:?} missing from:\n{s}");
        }
        // TCP over a 1500-byte path: MSS 1500 - 20 - 40.
        assert!(s.contains("maxseg size set 1440"), "{s}");
        // A script `sh` runs: the rsyslog lines go through a here-document.
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", &s])
            .status()
            .unwrap();
        assert!(check.success(), "sh -n refuses:\n{s}");
    }

    #[test]
    fn dsr_l2_over_ipv6_needs_no_arp_sysctls_and_nat_needs_nothing() {
        let svc = service(
            "mode = \"dsr-l2\"\n",
            "udp",
            "[2001:db8::10]:514",
            ["[2001:db8:1::2]:514", "[2001:db8:1::3]:514"],
        );
        let s = script(&svc, Colour::Green, Mode::DsrL2);
        let c = commands(&s);
        assert!(c.contains(&"ip -6 addr add 2001:db8::10/128 dev lo"), "{s}");
        assert!(!s.contains("arp_ignore") && !s.contains("modprobe"), "{s}");
        assert!(c.contains(&"input(type=\"imudp\" port=\"514\")"));
        // NAT: only the rsyslog input, on the backend's own port.
        let nat = service(
            "",
            "udp",
            "0.0.0.0:514",
            ["198.18.1.2:5514", "198.18.1.3:5514"],
        );
        let s = script(&nat, Colour::Blue, Mode::Nat);
        assert_eq!(
            commands(&s),
            [
                "cat > /etc/rsyslog.d/10-bluegreen.conf <<'BLUEGREEN'",
                "module(load=\"imudp\")",
                "input(type=\"imudp\" port=\"5514\")",
                "BLUEGREEN",
                "systemctl restart rsyslog",
            ]
        );
    }
}
