//! The agent's TOML configuration and its validation.
//!
//! Parsing is serde's job; everything serde cannot express (address syntax,
//! ports, cross-field rules) is checked here so that every error names the
//! file, the field, the value and what is accepted.
use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    attach::AttachRequest,
    deploy::DeploySettings,
    health_check::{self, HealthCheck, RawHealth},
    tls::{TlsClient, TlsSettings, Verify},
};

/// Largest number of services, fixed by the size of the data-path maps.
pub const MAX_SERVICES: usize = bg_common::MAX_SERVICES as usize;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: {field} = {value:?} is invalid: {reason}; accepted: {accepted}")]
    Field {
        file: PathBuf,
        field: String,
        value: String,
        reason: String,
        accepted: String,
    },
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    pub const fn ip_proto(self) -> u8 {
        match self {
            Self::Udp => bg_common::PROTO_UDP,
            Self::Tcp => bg_common::PROTO_TCP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

/// Protocols this build can steer.
pub const STEERED_PROTOCOLS: &[Protocol] = &[Protocol::Udp, Protocol::Tcp];

/// Accepted range of `tcp.flow_table_size`.
pub const FLOW_TABLE_SIZES: std::ops::RangeInclusive<u32> = 1024..=16_777_216;
/// Accepted range of `tcp.idle_timeout` (seconds).
pub const IDLE_TIMEOUTS: std::ops::RangeInclusive<u64> = 1..=86_400;
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 120;

/// The file as written: strings, checked later so errors can quote them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
    #[serde(default)]
    tcp: RawTcp,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    deploy: RawDeploy,
    #[serde(default)]
    dataplane: RawDataplane,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    attach: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeploy {
    healthy_timeout_s: Option<i64>,
    bake_s: Option<i64>,
    keep_warm_s: Option<i64>,
    validate_messages: Option<i64>,
    validate_rate: Option<i64>,
    min_delivered_ratio: Option<f64>,
    max_p99_ms: Option<f64>,
    min_throughput: Option<f64>,
    pre_switch: Option<Vec<String>>,
    post_switch: Option<Vec<String>>,
    rollback: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    flow_table_size: Option<i64>,
    pending_table_size: Option<i64>,
    idle_timeout: Option<i64>,
    #[serde(default)]
    reverse_nat_interfaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    protocol: String,
    listen: String,
    blue: String,
    green: String,
    health: Option<RawHealth>,
    app: Option<String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Option<PathBuf>,
    verify: Option<String>,
    server_name: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// What a TCP service's backends speak on top of TCP: how probes and the
/// deployment gate talk to them (the data path steers every kind at L4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// Plain syslog: RFC 6587 framing over TCP, or datagrams over UDP.
    Syslog,
    /// RELP (rsyslog's imrelp), over TCP or, with `[service.tls]`, TLS.
    Relp,
    /// Syslog over TLS (RFC 5425).
    Tls,
}

impl AppProtocol {
    pub const ACCEPTED: &str = "\"syslog\", \"relp\" or \"tls\"";

    /// The default for a service: TLS on TCP 6514 (RFC 5425's port),
    /// plain syslog elsewhere.
    pub fn default_for(protocol: Protocol, port: u16) -> Self {
        if protocol == Protocol::Tcp && port == 6514 {
            Self::Tls
        } else {
            Self::Syslog
        }
    }
}

impl fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syslog => "syslog",
            Self::Relp => "relp",
            Self::Tls => "tls",
        })
    }
}

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
}

/// TCP flow tracking settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcpSettings {
    /// Entries of the established-connection table (and of its reverse-NAT
    /// table).
    pub flow_table_size: u32,
    /// Entries of the table of handshakes in progress and flows on
    /// probation (and of its reverse-NAT table).
    pub pending_table_size: u32,
    /// A flow with no client segment for this long is not counted as live.
    pub idle_timeout_s: u64,
    /// More interfaces whose egress rewrites replies (asymmetric routing);
    /// the steering interface always does.
    pub reverse_nat_interfaces: Vec<String>,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            flow_table_size: bg_common::DEFAULT_FLOW_TABLE_SIZE,
            pending_table_size: bg_common::DEFAULT_PENDING_TABLE_SIZE,
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            reverse_nat_interfaces: Vec::new(),
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub services: Vec<Service>,
    pub tcp: TcpSettings,
    pub deploy: DeploySettings,
    /// `[dataplane] attach`: where the steering program runs.
    pub attach: AttachRequest,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (used in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let field_error =
            |field: String, value: &str, reason: &str, accepted: &str| ConfigError::Field {
                file: path.to_owned(),
                field,
                value: value.to_owned(),
                reason: reason.to_owned(),
                accepted: accepted.to_owned(),
            };
        if raw.services.is_empty() {
            return Err(field_error(
                "service".into(),
                "",
                "no [[service]] table",
                "at least one [[service]] with name, protocol, listen, blue and green",
            ));
        }
        if raw.services.len() > MAX_SERVICES {
            return Err(field_error(
                "service".into(),
                &raw.services.len().to_string(),
                "too many services",
                &format!("at most {MAX_SERVICES}"),
            ));
        }
        // `[health]` holds timing defaults only; what to probe is per service.
        let h = &raw.health;
        for (name, set) in [
            ("kind", h.kind.is_some()),
            ("port", h.port.is_some()),
            ("path", h.path.is_some()),
            ("expect_body", h.expect_body.is_some()),
            ("command", h.command.is_some()),
        ] {
            if set {
                return Err(field_error(
                    format!("health.{name}"),
                    "",
                    "what to probe is set per service",
                    "interval_ms, fastinter_ms, timeout_ms, rise and fall in [health]; the rest in [service.health]",
                ));
            }
        }
        // `[health]` is checked on its own so its errors name it, not a service.
        health_check::validate(
            "health",
            Protocol::Tcp,
            health_check::Speaks {
                app: AppProtocol::Syslog,
                tls: None,
            },
            Some(&raw.health),
            &RawHealth::default(),
        )
        .map_err(|(field, value, reason, accepted)| {
            field_error(field, &value, &reason, &accepted)
        })?;
        let mut names = HashSet::new();
        let mut listens = HashSet::new();
        let mut services = Vec::with_capacity(raw.services.len());
        for (i, s) in raw.services.iter().enumerate() {
            let at = |f: &str| format!("service[{i}].{f}");
            if !valid_name(&s.name) {
                return Err(field_error(
                    at("name"),
                    &s.name,
                    "not a usable service name",
                    "1 to 64 characters of letters, digits, '-', '_' and '.'",
                ));
            }
            if !names.insert(s.name.clone()) {
                return Err(field_error(
                    at("name"),
                    &s.name,
                    "duplicate service name",
                    "a name used by no other service",
                ));
            }
            let protocol = match s.protocol.as_str() {
                "udp" => Protocol::Udp,
                "tcp" => Protocol::Tcp,
                _ => {
                    return Err(field_error(
                        at("protocol"),
                        &s.protocol,
                        "unknown protocol",
                        "\"udp\" or \"tcp\"",
                    ));
                }
            };
            if !STEERED_PROTOCOLS.contains(&protocol) {
                return Err(field_error(
                    at("protocol"),
                    &s.protocol,
                    "this build does not steer this protocol yet",
                    "\"udp\" or \"tcp\"",
                ));
            }
            let listen = parse_addr(&s.listen)
                .map_err(|reason| field_error(at("listen"), &s.listen, &reason, ADDR_ACCEPTED))?;
            let blue = parse_backend(&s.blue, listen)
                .map_err(|reason| field_error(at("blue"), &s.blue, &reason, BACKEND_ACCEPTED))?;
            let green = parse_backend(&s.green, listen)
                .map_err(|reason| field_error(at("green"), &s.green, &reason, BACKEND_ACCEPTED))?;
            if blue == green {
                return Err(field_error(
                    at("green"),
                    &s.green,
                    "the same backend as blue",
                    "a backend different from blue, so a flip moves traffic",
                ));
            }
            if !listens.insert((listen, protocol)) {
                return Err(field_error(
                    at("listen"),
                    &s.listen,
                    &format!("duplicate service: another {protocol} service listens here"),
                    "one service per listen address, port and protocol",
                ));
            }
            let app = match s.app.as_deref() {
                None => AppProtocol::default_for(protocol, listen.port()),
                Some("syslog") => AppProtocol::Syslog,
                Some("relp") => AppProtocol::Relp,
                Some("tls") => AppProtocol::Tls,
                Some(other) => {
                    return Err(field_error(
                        at("app"),
                        other,
                        "unknown application protocol",
                        AppProtocol::ACCEPTED,
                    ));
                }
            };
            if protocol == Protocol::Udp && app != AppProtocol::Syslog {
                return Err(field_error(
                    at("app"),
                    &app.to_string(),
                    "RELP and TLS run over TCP",
                    "\"syslog\" for a UDP service",
                ));
            }
            let tls = match (app, &s.tls) {
                // Configs written before `app` existed: say why 6514 now
                // needs a CA, and how to keep the old plain TCP probe.
                (AppProtocol::Tls, None) if s.app.is_none() => {
                    return Err(field_error(
                        at("tls"),
                        "",
                        "missing: TCP 6514 speaks syslog over TLS (RFC 5425) by default, so probes and the deployment gate need the backends' CA",
                        "[service.tls] with ca = \"/path/to/ca.pem\" (or verify = \"none\"), or app = \"syslog\" for plain TCP probes as before",
                    ));
                }
                (AppProtocol::Syslog, Some(_)) => {
                    return Err(field_error(
                        at("tls"),
                        "",
                        "TLS settings on a plain syslog service",
                        "app = \"tls\" (syslog over TLS) or app = \"relp\" (RELP over TLS) with [service.tls]",
                    ));
                }
                (AppProtocol::Relp, None) | (AppProtocol::Syslog, None) => None,
                (AppProtocol::Tls, raw_tls) | (AppProtocol::Relp, raw_tls @ Some(_)) => Some(
                    tls_client(raw_tls.as_ref()).map_err(|(field, value, reason, accepted)| {
                        field_error(at(&format!("tls.{field}")), &value, &reason, &accepted)
                    })?,
                ),
            };
            let health = health_check::validate(
                &at("health"),
                protocol,
                health_check::Speaks {
                    app,
                    tls: tls.as_ref(),
                },
                s.health.as_ref(),
                &raw.health,
            )
            .map_err(|(field, value, reason, accepted)| {
                field_error(field, &value, &reason, &accepted)
            })?;
            services.push(Service {
                name: s.name.clone(),
                protocol,
                listen,
                blue,
                green,
                health,
                app,
                tls,
            });
        }
        // A whole number within `range`, or an error naming the field.
        let ranged = |field: &str, value: i64, range: (i64, i64), unit: &str| {
            if (range.0..=range.1).contains(&value) {
                Ok(value)
            } else {
                Err(field_error(
                    field.into(),
                    &value.to_string(),
                    "out of range",
                    &format!("{unit} from {} to {}", range.0, range.1),
                ))
            }
        };
        let mut tcp = TcpSettings::default();
        if let Some(size) = raw.tcp.flow_table_size {
            let range = (
                i64::from(*FLOW_TABLE_SIZES.start()),
                i64::from(*FLOW_TABLE_SIZES.end()),
            );
            tcp.flow_table_size = ranged(
                "tcp.flow_table_size",
                size,
                range,
                "a whole number of flows",
            )? as u32;
        }
        if let Some(size) = raw.tcp.pending_table_size {
            let range = (
                i64::from(*FLOW_TABLE_SIZES.start()),
                i64::from(*FLOW_TABLE_SIZES.end()),
            );
            tcp.pending_table_size = ranged(
                "tcp.pending_table_size",
                size,
                range,
                "a whole number of flows",
            )? as u32;
        }
        if let Some(idle) = raw.tcp.idle_timeout {
            let range = (*IDLE_TIMEOUTS.start() as i64, *IDLE_TIMEOUTS.end() as i64);
            tcp.idle_timeout_s = ranged("tcp.idle_timeout", idle, range, "whole seconds")? as u64;
        }
        for (i, name) in raw.tcp.reverse_nat_interfaces.iter().enumerate() {
            // IFNAMSIZ is 16 with the NUL; the agent checks existence at start.
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(field_error(
                    format!("tcp.reverse_nat_interfaces[{i}]"),
                    name,
                    "not an interface name",
                    "1 to 15 characters without '/' or spaces",
                ));
            }
        }
        tcp.reverse_nat_interfaces = raw.tcp.reverse_nat_interfaces;
        let deploy =
            Self::deploy_settings(&raw.deploy).map_err(|(field, value, reason, accepted)| {
                field_error(format!("deploy.{field}"), &value, &reason, &accepted)
            })?;
        let attach = match raw.dataplane.attach.as_deref() {
            None => AttachRequest::default(),
            Some(text) => AttachRequest::parse(text).ok_or_else(|| {
                field_error(
                    "dataplane.attach".into(),
                    text,
                    "unknown attach point",
                    AttachRequest::ACCEPTED,
                )
            })?,
        };
        Ok(Self {
            services,
            tcp,
            deploy,
            attach,
        })
    }

    fn deploy_settings(raw: &RawDeploy) -> Result<DeploySettings, health_check::FieldProblem> {
        let p = |f: &str, v: String, reason: &str, acc: String| {
            (f.to_owned(), v, reason.to_owned(), acc)
        };
        let int = |f: &str, v: Option<i64>, default: u64, lo: i64, hi: i64, unit: &str| match v {
            None => Ok(default),
            Some(v) if (lo..=hi).contains(&v) => Ok(v as u64),
            Some(v) => Err(p(
                f,
                v.to_string(),
                "out of range",
                format!("{unit} from {lo} to {hi}"),
            )),
        };
        let d = DeploySettings::default();
        let ratio = raw.min_delivered_ratio.unwrap_or(d.min_delivered_ratio);
        if !(0.0..=1.0).contains(&ratio) {
            return Err(p(
                "min_delivered_ratio",
                ratio.to_string(),
                "out of range",
                "a fraction from 0.0 to 1.0".into(),
            ));
        }
        let p99 = raw.max_p99_ms.unwrap_or(d.max_p99_ms);
        if p99.is_nan() || p99 <= 0.0 {
            return Err(p(
                "max_p99_ms",
                p99.to_string(),
                "not positive",
                "milliseconds above 0".into(),
            ));
        }
        let tput = raw.min_throughput.unwrap_or(d.min_throughput);
        if tput.is_nan() || tput < 0.0 {
            return Err(p(
                "min_throughput",
                tput.to_string(),
                "negative",
                "messages per second, 0 to disable".into(),
            ));
        }
        let hook = |f: &str, v: &Option<Vec<String>>| match v {
            Some(c) if c.first().is_none_or(|x| x.is_empty()) => Err(p(
                f,
                format!("{c:?}"),
                "no program to run",
                "a list: the program, then its arguments".into(),
            )),
            other => Ok(other.clone()),
        };
        Ok(DeploySettings {
            healthy_timeout_s: int(
                "healthy_timeout_s",
                raw.healthy_timeout_s,
                d.healthy_timeout_s,
                1,
                3600,
                "seconds",
            )?,
            bake_s: int("bake_s", raw.bake_s, d.bake_s, 0, 86_400, "seconds")?,
            keep_warm_s: int(
                "keep_warm_s",
                raw.keep_warm_s,
                d.keep_warm_s,
                0,
                86_400,
                "seconds",
            )?,
            validate_messages: int(
                "validate_messages",
                raw.validate_messages,
                d.validate_messages.into(),
                0,
                1_000_000,
                "messages",
            )? as u32,
            validate_rate: int(
                "validate_rate",
                raw.validate_rate,
                d.validate_rate.into(),
                1,
                1_000_000,
                "messages per second",
            )? as u32,
            min_delivered_ratio: ratio,
            max_p99_ms: p99,
            min_throughput: tput,
            pre_switch: hook("pre_switch", &raw.pre_switch)?,
            post_switch: hook("post_switch", &raw.post_switch)?,
            rollback: hook("rollback", &raw.rollback)?,
        })
    }
}

/// Builds the TLS client of `[service.tls]` (defaults when absent): reads
/// the CA and the client certificate, so a bad path or file is a config
/// error naming the field.
fn tls_client(raw: Option<&RawTls>) -> Result<TlsClient, health_check::FieldProblem> {
    let verify = match raw.and_then(|r| r.verify.as_deref()) {
        None => Verify::default(),
        Some(v) => Verify::parse(v).ok_or_else(|| {
            (
                "verify".to_owned(),
                v.to_owned(),
                "unknown verification".to_owned(),
                Verify::ACCEPTED.to_owned(),
            )
        })?,
    };
    if let Some(name) = raw.and_then(|r| r.server_name.as_deref())
        && rustls::pki_types::ServerName::try_from(name).is_err()
    {
        return Err((
            "server_name".into(),
            name.into(),
            "not a host name or address".into(),
            "the DNS name (or IP address) the backends' certificates carry".into(),
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
        (p.field.to_owned(), p.value, p.reason, accepted.to_owned())
    })
}

const ADDR_ACCEPTED: &str =
    "ADDR:PORT with an IPv4 or [IPv6] address (0.0.0.0 or [::] for any) and a port from 1 to 65535";
const BACKEND_ACCEPTED: &str =
    "ADDR:PORT of a specific address, of the same family as listen, with a port from 1 to 65535";

fn valid_name(name: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health_check::ProbeKind;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("bg.toml"), text)
    }

    const GOOD: &str = r#"
[[service]]
name = "syslog-udp"
protocol = "udp"
listen = "0.0.0.0:514"
blue = "198.18.1.2:514"
green = "198.18.2.2:514"

[[service]]
name = "syslog-udp6"
protocol = "udp"
listen = "[2001:db8::1]:514"
blue = "[2001:db8:1::2]:514"
green = "[2001:db8:2::2]:514"
"#;

    #[test]
    fn accepts_the_documented_example() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0].listen, "0.0.0.0:514".parse().unwrap());
        assert_eq!(c.services[1].green, "[2001:db8:2::2]:514".parse().unwrap());
        assert_eq!(c.services[0].protocol, Protocol::Udp);
    }

    fn error_for(text: &str) -> String {
        parse(text).expect_err("must be rejected").to_string()
    }

    fn one(listen: &str, blue: &str, green: &str, proto: &str) -> String {
        format!(
            "[[service]]\nname = \"s\"\nprotocol = \"{proto}\"\nlisten = \"{listen}\"\nblue = \"{blue}\"\ngreen = \"{green}\"\n"
        )
    }

    #[test]
    fn bad_address_names_file_field_value_and_accepted() {
        let e = error_for(&one(
            "0.0.0.0:514",
            "198.18.1.300:514",
            "198.18.2.2:514",
            "udp",
        ));
        assert!(
            e.starts_with("bg.toml: service[0].blue = \"198.18.1.300:514\""),
            "{e}"
        );
        assert!(e.contains("accepted: ADDR:PORT"), "{e}");
    }

    #[test]
    fn port_zero_is_rejected() {
        let e = error_for(&one("0.0.0.0:0", "198.18.1.2:514", "198.18.2.2:514", "udp"));
        assert!(e.contains("service[0].listen = \"0.0.0.0:0\""), "{e}");
        assert!(e.contains("port 0"), "{e}");
    }

    #[test]
    fn same_backend_for_both_colours_is_rejected() {
        let e = error_for(&one(
            "0.0.0.0:514",
            "198.18.1.2:514",
            "198.18.1.2:514",
            "udp",
        ));
        assert!(
            e.contains("service[0].green") && e.contains("same backend as blue"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_service_is_rejected() {
        let mut text = one("0.0.0.0:514", "198.18.1.2:514", "198.18.2.2:514", "udp");
        text.push_str(
            &one("0.0.0.0:514", "198.18.1.3:514", "198.18.2.3:514", "udp")
                .replace("\"s\"", "\"t\""),
        );
        let e = error_for(&text);
        assert!(
            e.contains("service[1].listen") && e.contains("duplicate service"),
            "{e}"
        );
        let e = error_for(&format!(
            "{}{}",
            one("0.0.0.0:514", "198.18.1.2:514", "198.18.2.2:514", "udp"),
            one("0.0.0.0:515", "198.18.1.2:514", "198.18.2.2:514", "udp")
        ));
        assert!(
            e.contains("service[1].name") && e.contains("duplicate service name"),
            "{e}"
        );
    }

    #[test]
    fn tcp_services_and_settings_are_accepted() {
        let mut text = one("0.0.0.0:601", "198.18.1.2:601", "198.18.2.2:601", "tcp");
        text.push_str("[tcp]\nflow_table_size = 4096\npending_table_size = 2048\nidle_timeout = 30\nreverse_nat_interfaces = [\"eth1\"]\n");
        let c = parse(&text).expect("valid");
        assert_eq!(c.services[0].protocol, Protocol::Tcp);
        assert_eq!(
            c.tcp,
            TcpSettings {
                flow_table_size: 4096,
                pending_table_size: 2048,
                idle_timeout_s: 30,
                reverse_nat_interfaces: vec!["eth1".into()],
            }
        );
        let c = parse(&one(
            "0.0.0.0:601",
            "198.18.1.2:601",
            "198.18.2.2:601",
            "tcp",
        ))
        .unwrap();
        assert_eq!(c.tcp.flow_table_size, 262_144, "default");
        assert_eq!(c.tcp.pending_table_size, 65_536, "default");
        assert_eq!(c.tcp.idle_timeout_s, 120, "default");
    }

    #[test]
    fn deploy_settings_have_defaults_and_checked_ranges() {
        let base = one("0.0.0.0:514", "198.18.1.2:514", "198.18.2.2:514", "udp");
        let c = parse(&base).unwrap();
        assert_eq!(c.deploy, DeploySettings::default());
        let c = parse(&format!(
            "{base}[deploy]\nbake_s = 2\npre_switch = [\"true\"]\n"
        ))
        .unwrap();
        assert_eq!(
            (c.deploy.bake_s, c.deploy.pre_switch),
            (2, Some(vec!["true".to_string()]))
        );
        let e = error_for(&format!("{base}[deploy]\nmin_delivered_ratio = 1.5\n"));
        assert!(
            e.contains("deploy.min_delivered_ratio = \"1.5\"") && e.contains("0.0 to 1.0"),
            "{e}"
        );
        let e = error_for(&format!("{base}[deploy]\nrollback = []\n"));
        assert!(
            e.contains("deploy.rollback") && e.contains("no program"),
            "{e}"
        );
        let e = error_for(&format!("{base}[deploy]\nvalidate_rate = 0\n"));
        assert!(e.contains("deploy.validate_rate = \"0\""), "{e}");
    }

    #[test]
    fn bad_tcp_settings_name_the_field() {
        let base = one("0.0.0.0:601", "198.18.1.2:601", "198.18.2.2:601", "tcp");
        let e = error_for(&format!("{base}[tcp]\nflow_table_size = 10\n"));
        assert!(
            e.contains("tcp.flow_table_size = \"10\"") && e.contains("1024 to 16777216"),
            "{e}"
        );
        let e = error_for(&format!("{base}[tcp]\npending_table_size = 0\n"));
        assert!(
            e.contains("tcp.pending_table_size = \"0\"") && e.contains("1024 to 16777216"),
            "{e}"
        );
        let e = error_for(&format!("{base}[tcp]\nidle_timeout = -5\n"));
        assert!(
            e.contains("tcp.idle_timeout = \"-5\"") && e.contains("whole seconds"),
            "{e}"
        );
        let e = error_for(&format!(
            "{base}[tcp]\nreverse_nat_interfaces = [\"a/b\"]\n"
        ));
        assert!(e.contains("tcp.reverse_nat_interfaces[0] = \"a/b\""), "{e}");
        let e = error_for(&format!("{base}[tcp]\nidle = 5\n"));
        assert!(e.contains("idle"), "{e}");
    }

    #[test]
    fn the_attach_point_is_xdp_unless_set() {
        let base = one("0.0.0.0:514", "198.18.1.2:514", "198.18.2.2:514", "udp");
        assert_eq!(parse(&base).unwrap().attach, AttachRequest::Xdp);
        for (text, want) in [
            ("xdp", AttachRequest::Xdp),
            ("tc", AttachRequest::Tc),
            ("auto", AttachRequest::Auto),
        ] {
            let c = parse(&format!("{base}[dataplane]\nattach = \"{text}\"\n")).unwrap();
            assert_eq!(c.attach, want);
        }
        let e = error_for(&format!("{base}[dataplane]\nattach = \"ebpf\"\n"));
        assert!(
            e.contains("dataplane.attach = \"ebpf\"") && e.contains("\"xdp\", \"tc\" or \"auto\""),
            "{e}"
        );
    }

    /// A CA certificate in a PEM file, made for the test.
    fn ca_file(dir: &Path) -> PathBuf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        path
    }

    #[test]
    fn the_app_protocol_follows_the_port_and_tls_needs_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path());
        let plain = parse(&one(
            "0.0.0.0:601",
            "198.18.1.2:601",
            "198.18.2.2:601",
            "tcp",
        ))
        .unwrap();
        assert_eq!(plain.services[0].app, AppProtocol::Syslog);
        assert!(matches!(plain.services[0].health.probe, ProbeKind::Tcp));
        let tls_one = one("0.0.0.0:6514", "198.18.1.2:6514", "198.18.2.2:6514", "tcp");
        let e = error_for(&tls_one);
        assert!(
            e.contains("service[0].tls = \"\"")
                && e.contains("TCP 6514 speaks syslog over TLS")
                && e.contains("app = \"syslog\" for plain TCP probes"),
            "6514 is syslog over TLS, whose probes verify a CA; the error says how to keep TCP probes: {e}"
        );
        // An explicit app = "tls" without a CA names the CA itself.
        let e =
            error_for(&tls_one.replace("protocol = \"tcp\"", "protocol = \"tcp\"\napp = \"tls\""));
        assert!(
            e.contains("service[0].tls.ca") && e.contains("verify = \"none\""),
            "{e}"
        );
        let c = parse(&format!(
            "{tls_one}[service.tls]\nca = {ca:?}\nserver_name = \"collector.test\"\n"
        ))
        .unwrap();
        assert_eq!(c.services[0].app, AppProtocol::Tls);
        assert!(matches!(c.services[0].health.probe, ProbeKind::Tls { .. }));
        let c = parse(&format!("{tls_one}app = \"syslog\"\n")).unwrap();
        assert_eq!(
            c.services[0].app,
            AppProtocol::Syslog,
            "an explicit app wins"
        );
        let relp = format!(
            "{}app = \"relp\"\n",
            one("0.0.0.0:2514", "198.18.1.2:2514", "198.18.2.2:2514", "tcp")
        );
        let c = parse(&relp).unwrap();
        assert!(matches!(
            c.services[0].health.probe,
            ProbeKind::Relp { tls: None }
        ));
        let c = parse(&format!("{relp}[service.tls]\nverify = \"none\"\n")).unwrap();
        assert!(
            matches!(
                &c.services[0].health.probe,
                ProbeKind::Relp { tls: Some(_) }
            ),
            "RELP over TLS"
        );
    }

    #[test]
    fn bad_app_and_tls_settings_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let udp = one("0.0.0.0:514", "198.18.1.2:514", "198.18.2.2:514", "udp");
        let e = error_for(&format!("{udp}app = \"relp\"\n"));
        assert!(
            e.contains("service[0].app = \"relp\"") && e.contains("over TCP"),
            "{e}"
        );
        let tcp = one("0.0.0.0:601", "198.18.1.2:601", "198.18.2.2:601", "tcp");
        let e = error_for(&format!("{tcp}app = \"http\"\n"));
        assert!(e.contains("\"syslog\", \"relp\" or \"tls\""), "{e}");
        let e = error_for(&format!("{tcp}[service.tls]\nverify = \"none\"\n"));
        assert!(
            e.contains("service[0].tls") && e.contains("plain syslog"),
            "{e}"
        );
        let tls = format!("{tcp}app = \"tls\"\n");
        let missing = dir.path().join("nope.pem");
        let e = error_for(&format!("{tls}[service.tls]\nca = {missing:?}\n"));
        assert!(
            e.contains("service[0].tls.ca") && e.contains("nope.pem") && e.contains("readable PEM"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let e = error_for(&format!("{tls}[service.tls]\nca = {garbage:?}\n"));
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = error_for(&format!("{tls}[service.tls]\nverify = \"strict\"\n"));
        assert!(e.contains("service[0].tls.verify = \"strict\""), "{e}");
        let ca = ca_file(dir.path());
        let e = error_for(&format!("{tls}[service.tls]\nca = {ca:?}\ncert = {ca:?}\n"));
        assert!(
            e.contains("service[0].tls.key") && e.contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn unknown_protocols_are_rejected() {
        let e = error_for(&one(
            "0.0.0.0:514",
            "198.18.1.2:514",
            "198.18.2.2:514",
            "sctp",
        ));
        assert!(
            e.contains("unknown protocol") && e.contains("\"udp\" or \"tcp\""),
            "{e}"
        );
    }

    #[test]
    fn mixed_families_and_unspecified_backends_are_rejected() {
        let e = error_for(&one(
            "0.0.0.0:514",
            "[2001:db8::2]:514",
            "198.18.2.2:514",
            "udp",
        ));
        assert!(e.contains("family differs"), "{e}");
        let e = error_for(&one("0.0.0.0:514", "0.0.0.0:514", "198.18.2.2:514", "udp"));
        assert!(e.contains("specific address"), "{e}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_name_the_file() {
        let e = error_for("[[service]]\nname = \"s\"\ncolour = \"x\"\n");
        assert!(e.starts_with("bg.toml:") && e.contains("colour"), "{e}");
        let e = error_for("");
        assert!(e.contains("no [[service]]"), "{e}");
    }
}
