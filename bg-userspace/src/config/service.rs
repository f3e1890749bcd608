//! One `[[service]]`: its name, protocol, addresses, what its backends
//! speak, their TLS and their probe.
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::{
    AttachRequest,
    dsr::{self, Mode, RawModes},
    health::{self, HealthCheck},
    raw::{RawService, RawTls},
};
use crate::{
    model::{AppProtocol, FieldProblem, Protocol, STEERED_PROTOCOLS},
    probe::{RawHealth, Speaks},
    transport::tls::{TlsClient, TlsSettings, Verify},
};

/// One validated service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    pub name: String,
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub blue: SocketAddr,
    pub green: SocketAddr,
    /// How both backends are probed.
    pub health: HealthCheck,
    /// What the backends speak: probes and the gate speak it too.
    pub app: AppProtocol,
    /// TLS to the backends: for `app = "tls"`, and RELP over TLS.
    pub tls: Option<TlsClient>,
    /// UDP: where each colour's shadow copies go (`shadow_blue`,
    /// `shadow_green`), if not to its backend: a listener of its own, so
    /// copies stay out of the production store.
    pub shadow: [Option<SocketAddr>; 2],
    /// How each colour's packets reach its backend, by colour index.
    /// Left out of the serialised config when both are NAT, so the
    /// fleet's digest of a config written before modes existed stays
    /// what older nodes compute.
    #[serde(skip_serializing_if = "dsr::all_nat")]
    pub modes: [Mode; 2],
    /// The outer source address of `dsr-ipip` tunnels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_source: Option<IpAddr>,
    /// DSR colours: also probe each backend through the service address
    /// (a TCP SYN as the data path sends it), so one without the address
    /// shows as down. On by default with DSR.
    #[serde(skip_serializing_if = "dsr::is_false")]
    pub probe_service_address: bool,
}

impl Service {
    /// The `i`th `[[service]]`; `defaults` is `[health]`, `attach` where
    /// steering runs. Rules across services (unique names and listen
    /// addresses) are the caller's.
    pub(super) fn validate(
        i: usize,
        s: &RawService,
        defaults: &RawHealth,
        attach: AttachRequest,
    ) -> Result<Self, FieldProblem> {
        let at = |f: &str| format!("service[{i}].{f}");
        if !valid_name(&s.name) {
            return Err(FieldProblem::new(
                at("name"),
                &s.name,
                "not a usable service name",
                "1 to 64 characters of letters, digits, '-', '_' and '.'",
            ));
        }
        let protocol = match s.protocol.as_str() {
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            _ => {
                return Err(FieldProblem::new(
                    at("protocol"),
                    &s.protocol,
                    "unknown protocol",
                    "\"udp\" or \"tcp\"",
                ));
            }
        };
        if !STEERED_PROTOCOLS.contains(&protocol) {
            return Err(FieldProblem::new(
                at("protocol"),
                &s.protocol,
                "this build does not steer this protocol yet",
                "\"udp\" or \"tcp\"",
            ));
        }
        let listen = parse_addr(&s.listen)
            .map_err(|reason| FieldProblem::new(at("listen"), &s.listen, &reason, ADDR_ACCEPTED))?;
        let blue = parse_backend(&s.blue, listen)
            .map_err(|reason| FieldProblem::new(at("blue"), &s.blue, &reason, BACKEND_ACCEPTED))?;
        let green = parse_backend(&s.green, listen).map_err(|reason| {
            FieldProblem::new(at("green"), &s.green, &reason, BACKEND_ACCEPTED)
        })?;
        if blue == green {
            return Err(FieldProblem::new(
                at("green"),
                &s.green,
                "the same backend as blue",
                "a backend different from blue, so a flip moves traffic",
            ));
        }
        let modes = dsr::validate(
            &at,
            &RawModes {
                mode: s.mode.as_deref(),
                mode_blue: s.mode_blue.as_deref(),
                mode_green: s.mode_green.as_deref(),
                tunnel_source: s.tunnel_source.as_deref(),
                probe_service_address: s.probe_service_address,
            },
            listen,
            [blue, green],
            attach,
        )?;
        let app = match s.app.as_deref() {
            None => AppProtocol::default_for(protocol, listen.port()),
            Some("syslog") => AppProtocol::Syslog,
            Some("relp") => AppProtocol::Relp,
            Some("tls") => AppProtocol::Tls,
            Some(other) => {
                return Err(FieldProblem::new(
                    at("app"),
                    other,
                    "unknown application protocol",
                    AppProtocol::ACCEPTED,
                ));
            }
        };
        if protocol == Protocol::Udp && app != AppProtocol::Syslog {
            return Err(FieldProblem::new(
                at("app"),
                app.to_string(),
                "RELP and TLS run over TCP",
                "\"syslog\" for a UDP service",
            ));
        }
        let tls = match (app, &s.tls) {
            // Configs written before `app` existed: say why 6514 now
            // needs a CA, and how to keep the old plain TCP probe.
            (AppProtocol::Tls, None) if s.app.is_none() => {
                return Err(FieldProblem::new(
                    at("tls"),
                    "",
                    "missing: TCP 6514 speaks syslog over TLS (RFC 5425) by default, so probes and the deployment gate need the backends' CA",
                    "[service.tls] with ca = \"/path/to/ca.pem\" (or verify = \"none\"), or app = \"syslog\" for plain TCP probes as before",
                ));
            }
            (AppProtocol::Syslog, Some(_)) => {
                return Err(FieldProblem::new(
                    at("tls"),
                    "",
                    "TLS settings on a plain syslog service",
                    "app = \"tls\" (syslog over TLS) or app = \"relp\" (RELP over TLS) with [service.tls]",
                ));
            }
            (AppProtocol::Relp, None) | (AppProtocol::Syslog, None) => None,
            (AppProtocol::Tls, raw_tls) | (AppProtocol::Relp, raw_tls @ Some(_)) => {
                Some(tls_client(raw_tls.as_ref()).map_err(|p| p.within(&at("tls")))?)
            }
        };
        let shadow = [("shadow_blue", &s.shadow_blue), ("shadow_green", &s.shadow_green)].map(
            |(field, raw)| -> Result<Option<SocketAddr>, FieldProblem> {
                let Some(raw) = raw else { return Ok(None) };
                if protocol != Protocol::Udp {
                    return Err(FieldProblem::new(
                        at(field),
                        raw,
                        "shadow copies are UDP only: TCP segments cannot be copied to a backend that never saw the handshake",
                        "no shadow listener on a TCP service (validate TCP with the deployment gate and a canary step)",
                    ));
                }
                let addr = parse_addr(raw)
                    .map_err(|reason| FieldProblem::new(at(field), raw, &reason, ADDR_ACCEPTED))?;
                if addr.ip().is_unspecified() || addr.port() == 0 || addr.is_ipv4() != listen.is_ipv4() {
                    return Err(FieldProblem::new(
                        at(field),
                        raw,
                        "not a usable shadow listener",
                        "a specific address and port of the listen address's family, e.g. \"198.18.2.2:5514\"",
                    ));
                }
                Ok(Some(addr))
            },
        );
        let [shadow_blue, shadow_green] = shadow;
        let shadow = [shadow_blue?, shadow_green?];
        let health = health::validate(
            &at("health"),
            Speaks {
                protocol,
                app,
                tls: tls.as_ref(),
            },
            s.health.as_ref(),
            defaults,
        )?;
        Ok(Self {
            name: s.name.clone(),
            protocol,
            listen,
            blue,
            green,
            health,
            app,
            tls,
            shadow,
            modes: modes.modes,
            tunnel_source: modes.tunnel_source,
            probe_service_address: modes.probe_service_address,
        })
    }

    /// How `colour`'s packets reach its backend.
    pub fn mode(&self, colour: crate::model::Colour) -> Mode {
        self.modes[colour.index() as usize]
    }

    /// Why `addr` cannot be `colour`'s backend, if it cannot: direct server
    /// return keeps the destination port, so the backend must listen on
    /// the service's. (Deploys and restores check backends put in place
    /// of the config's; the config's own are checked when it is read.)
    pub fn port_problem(&self, colour: crate::model::Colour, addr: SocketAddr) -> Option<String> {
        let mode = self.mode(colour);
        (mode.is_dsr() && addr.port() != self.listen.port()).then(|| {
            format!(
                "{colour} uses {mode}, which keeps the destination port {}, and {addr} listens on {}",
                self.listen.port(),
                addr.port()
            )
        })
    }
}

/// Builds the TLS client of `[service.tls]` (defaults when absent): reads
/// the CA and the client certificate, so a bad path or file is a config
/// error naming the field.
fn tls_client(raw: Option<&RawTls>) -> Result<TlsClient, FieldProblem> {
    let verify = match raw.and_then(|r| r.verify.as_deref()) {
        None => Verify::default(),
        Some(v) => Verify::parse(v).ok_or_else(|| {
            FieldProblem::new("verify", v, "unknown verification", Verify::ACCEPTED)
        })?,
    };
    if let Some(name) = raw.and_then(|r| r.server_name.as_deref())
        && rustls::pki_types::ServerName::try_from(name).is_err()
    {
        return Err(FieldProblem::new(
            "server_name",
            name,
            "not a host name or address",
            "the DNS name (or IP address) the backends' certificates carry",
        ));
    }
    let settings = TlsSettings {
        ca: raw.and_then(|r| r.ca.clone()),
        verify,
        server_name: raw.and_then(|r| r.server_name.clone()),
        cert: raw.and_then(|r| r.cert.clone()),
        key: raw.and_then(|r| r.key.clone()),
    };
    TlsClient::new(settings).map_err(|p| {
        let accepted = match p.field {
            "ca" => "a readable PEM file of the CA certificates that sign the backends' (or verify = \"none\")",
            "cert" | "key" => "readable PEM files: the client certificate chain and its private key, both or neither",
            _ => Verify::ACCEPTED,
        };
        FieldProblem::new(p.field, p.value, p.reason, accepted)
    })
}

const ADDR_ACCEPTED: &str =
    "ADDR:PORT with an IPv4 or [IPv6] address (0.0.0.0 or [::] for any) and a port from 1 to 65535";
const BACKEND_ACCEPTED: &str =
    "ADDR:PORT of a specific address, of the same family as listen, with a port from 1 to 65535";

pub(super) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| "not an address with a port".to_string())?;
    if addr.port() == 0 {
        return Err("port 0".into());
    }
    Ok(addr)
}

fn parse_backend(text: &str, listen: SocketAddr) -> Result<SocketAddr, String> {
    let addr = parse_addr(text)?;
    if addr.ip().is_unspecified() {
        return Err("a backend needs a specific address".into());
    }
    if addr.is_ipv4() != listen.is_ipv4() {
        return Err(format!(
            "backend family differs from listen {listen} (address family translation is not supported)"
        ));
    }
    if let IpAddr::V4(v4) = addr.ip()
        && (v4.is_broadcast() || v4.is_multicast())
    {
        return Err("broadcast or multicast".into());
    }
    if let IpAddr::V6(v6) = addr.ip()
        && v6.is_multicast()
    {
        return Err("multicast".into());
    }
    Ok(addr)
}
