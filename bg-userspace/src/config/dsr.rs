//! A service's `mode`, `mode_blue`, `mode_green` and `tunnel_source`: how
//! each colour's packets reach its backend, NAT or direct server return.
use std::net::{IpAddr, SocketAddr};

use super::AttachRequest;
use crate::model::{Colour, FieldProblem};

pub use crate::model::Mode;

/// Serde's test for fields left out when false.
pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

/// Whether both colours use NAT, as every service did before modes.
pub(super) fn all_nat(modes: &[Mode; 2]) -> bool {
    modes.iter().all(|m| !m.is_dsr())
}

/// What the raw service says about its modes.
pub(super) struct RawModes<'a> {
    pub mode: Option<&'a str>,
    pub mode_blue: Option<&'a str>,
    pub mode_green: Option<&'a str>,
    pub tunnel_source: Option<&'a str>,
    pub probe_service_address: Option<bool>,
}

/// A service's validated modes, by colour index, its tunnels' source, and
/// whether DSR backends are also probed through the service address.
pub(super) struct Modes {
    pub modes: [Mode; 2],
    pub tunnel_source: Option<IpAddr>,
    pub probe_service_address: bool,
}

/// Checks the modes of service `at` (a field prefix such as `service[0]`)
/// against its listen address, its backends and where steering runs.
pub(super) fn validate(
    at: &dyn Fn(&str) -> String,
    raw: &RawModes,
    listen: SocketAddr,
    backends: [SocketAddr; 2],
    attach: AttachRequest,
) -> Result<Modes, FieldProblem> {
    let parse = |field: &str, text: Option<&str>, default: Mode| match text {
        None => Ok(default),
        Some(t) => Mode::parse(t)
            .ok_or_else(|| FieldProblem::new(at(field), t, "unknown mode", Mode::ACCEPTED)),
    };
    let both = parse("mode", raw.mode, Mode::Nat)?;
    let modes = [
        parse("mode_blue", raw.mode_blue, both)?,
        parse("mode_green", raw.mode_green, both)?,
    ];
    for colour in Colour::ALL {
        let mode = modes[colour.index() as usize];
        if !mode.is_dsr() {
            continue;
        }
        let field = mode_field(raw, colour);
        if attach != AttachRequest::Xdp {
            return Err(FieldProblem::new(
                at(field),
                mode.name(),
                format!(
                    "direct server return rewrites MACs or adds an outer header, which only XDP steering does; [dataplane] attach is {:?}",
                    attach.name()
                ),
                "\"nat\", or attach = \"xdp\" (the default) in [dataplane]",
            ));
        }
        if listen.ip().is_unspecified() {
            return Err(FieldProblem::new(
                at(field),
                mode.name(),
                format!(
                    "the backends must hold the service address, and listen {listen} names none"
                ),
                "a specific listen address with direct server return, e.g. \"198.18.0.10:514\"",
            ));
        }
        let backend = backends[colour.index() as usize];
        if backend.port() != listen.port() {
            return Err(FieldProblem::new(
                at(colour.as_str()),
                backend.to_string(),
                format!(
                    "{mode} keeps the packet's destination port, {}, and this backend listens on {}",
                    listen.port(),
                    backend.port()
                ),
                format!(
                    "a backend on port {} with {mode}, or mode \"nat\" to rewrite the port",
                    listen.port()
                ),
            ));
        }
    }
    let ipip = modes.contains(&Mode::DsrIpip);
    let tunnel_source = match (raw.tunnel_source, ipip) {
        (None, false) => None,
        (None, true) => {
            return Err(FieldProblem::new(
                at("tunnel_source"),
                "",
                "missing: dsr-ipip sends each packet inside an outer header, which needs a source address",
                "an address of this steering node, of the listen address's family, e.g. tunnel_source = \"198.18.0.1\"",
            ));
        }
        (Some(t), false) => {
            return Err(FieldProblem::new(
                at("tunnel_source"),
                t,
                "no colour of this service uses dsr-ipip, so nothing would use it",
                "no tunnel_source, or mode = \"dsr-ipip\" (or mode_blue / mode_green)",
            ));
        }
        (Some(t), true) => Some(tunnel_source(t, listen).map_err(|reason| {
            FieldProblem::new(
                at("tunnel_source"),
                t,
                reason,
                "a specific unicast address of this steering node, of the listen address's family",
            )
        })?),
    };
    // On by default with DSR: a backend without the service address passes
    // its own probe and drops every client packet.
    let dsr = modes.iter().any(|m| m.is_dsr());
    let probe_service_address = match raw.probe_service_address {
        None => dsr,
        Some(true) if !dsr => {
            return Err(FieldProblem::new(
                at("probe_service_address"),
                "true",
                "the probe through the service address checks direct server return backends, and no colour uses it",
                "no probe_service_address with mode \"nat\" (NAT backends need not hold the service address)",
            ));
        }
        Some(v) => v,
    };
    Ok(Modes {
        modes,
        tunnel_source,
        probe_service_address,
    })
}

fn tunnel_source(text: &str, listen: SocketAddr) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .parse()
        .map_err(|_| "not an IP address (no port)".to_string())?;
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err("not a unicast address".into());
    }
    if ip.is_ipv4() != listen.is_ipv4() {
        return Err(format!(
            "of another family than listen {listen}: the outer header is of the inner one's family"
        ));
    }
    Ok(ip)
}

/// The field that set `colour`'s mode, for errors.
fn mode_field(raw: &RawModes, colour: Colour) -> &'static str {
    match colour {
        Colour::Blue if raw.mode_blue.is_some() => "mode_blue",
        Colour::Green if raw.mode_green.is_some() => "mode_green",
        _ => "mode",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Mode;
    use crate::config::Config;

    fn service(extra: &str) -> String {
        format!(
            "[[service]]\nname = \"s\"\nprotocol = \"tcp\"\nlisten = \"198.18.0.10:514\"\nblue = \"198.18.1.2:514\"\ngreen = \"198.18.2.2:514\"\n{extra}"
        )
    }

    fn error_for(text: &str) -> String {
        Config::parse(Path::new("bg.toml"), text)
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn modes_default_to_nat_and_each_colour_may_differ() {
        let c = Config::parse(Path::new("bg.toml"), &service("")).unwrap();
        assert_eq!(c.services[0].modes, [Mode::Nat, Mode::Nat]);
        let text = service(
            "mode = \"dsr-l2\"\nmode_green = \"dsr-ipip\"\ntunnel_source = \"198.18.0.1\"\n",
        );
        let c = Config::parse(Path::new("bg.toml"), &text).unwrap();
        assert_eq!(c.services[0].modes, [Mode::DsrL2, Mode::DsrIpip]);
        assert_eq!(
            c.services[0].tunnel_source,
            Some("198.18.0.1".parse().unwrap())
        );
    }

    /// What deploys and restores ask before they put a backend in place.
    #[test]
    fn a_dsr_colour_takes_backends_on_the_service_port_only() {
        use crate::model::Colour;
        let text = service("mode_green = \"dsr-l2\"\n");
        let svc = Config::parse(Path::new("bg.toml"), &text).unwrap().services[0].clone();
        let on =
            |port: u16| -> std::net::SocketAddr { format!("198.18.2.9:{port}").parse().unwrap() };
        let problem = svc.port_problem(Colour::Green, on(1514)).expect("refused");
        assert!(
            problem.contains("green uses dsr-l2") && problem.contains("port 514"),
            "{problem}"
        );
        assert_eq!(svc.port_problem(Colour::Green, on(514)), None);
        assert_eq!(
            svc.port_problem(Colour::Blue, on(1514)),
            None,
            "blue is NAT"
        );
    }

    #[test]
    fn a_nat_only_config_digests_as_before_modes_existed() {
        let plain = Config::parse(Path::new("bg.toml"), &service("")).unwrap();
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("modes") && !json.contains("tunnel_source"),
            "{json}"
        );
        let dsr = Config::parse(Path::new("bg.toml"), &service("mode = \"dsr-l2\"\n")).unwrap();
        assert_ne!(
            plain.digest(),
            dsr.digest(),
            "a mode is part of what nodes agree on"
        );
    }

    #[test]
    fn bad_modes_name_the_field_the_value_and_what_is_accepted() {
        let cases = [
            (
                service("mode = \"dr\"\n"),
                "service[0].mode = \"dr\"",
                "\"dsr-l2\" or \"dsr-ipip\"",
            ),
            (
                service("mode_blue = \"dsr-l2\"\n").replace("198.18.1.2:514", "198.18.1.2:1514"),
                "service[0].blue = \"198.18.1.2:1514\"",
                "a backend on port 514",
            ),
            (
                service("mode = \"dsr-l2\"\n").replace("198.18.0.10:514", "0.0.0.0:514"),
                "service[0].mode = \"dsr-l2\"",
                "a specific listen address",
            ),
            (
                service("mode = \"dsr-ipip\"\n"),
                "service[0].tunnel_source",
                "e.g. tunnel_source",
            ),
            (
                service("tunnel_source = \"198.18.0.1\"\n"),
                "service[0].tunnel_source = \"198.18.0.1\"",
                "no tunnel_source",
            ),
            (
                service("mode = \"dsr-ipip\"\ntunnel_source = \"2001:db8::1\"\n"),
                "service[0].tunnel_source = \"2001:db8::1\"",
                "of the listen address's family",
            ),
            (
                service("probe_service_address = true\n"),
                "service[0].probe_service_address = \"true\"",
                "NAT backends need not hold the service address",
            ),
            (
                service("mode_green = \"dsr-l2\"\n[dataplane]\nattach = \"tc\"\n"),
                "service[0].mode_green = \"dsr-l2\"",
                "attach = \"xdp\"",
            ),
        ];
        for (text, field, accepted) in cases {
            let e = error_for(&text);
            assert!(e.contains(field) && e.contains(accepted), "{field}: {e}");
        }
    }
}
