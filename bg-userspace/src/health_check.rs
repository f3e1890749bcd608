//! Health probe settings: what to probe on each backend, and how often.
//!
//! Every backend gets a probe, configured or not: `tcp` for TCP services
//! and `udp` for UDP ones, every 1 s, rise 2, fall 3 (HAProxy's meaning:
//! `rise` consecutive successes make a backend up, `fall` consecutive
//! failures make it down). `[health]` changes the timing defaults for all
//! services; `[service.health]` overrides one service.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    config::{AppProtocol, Protocol},
    tls::TlsClient,
};

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProbeKind {
    /// Connect; success when the handshake completes.
    Tcp,
    /// Send a datagram over a connected socket; an ICMP port-unreachable
    /// (ECONNREFUSED) means down. The datagram is empty by default: rsyslog
    /// discards an empty datagram without writing anything, so the probe
    /// leaves no line in the store it guards.
    Udp { payload: UdpPayload },
    /// GET `http://<backend address>:<port><path>`; success on 2xx (and the
    /// body containing `expect_body`, when set).
    Http {
        port: u16,
        path: String,
        expect_body: Option<String>,
    },
    /// Run a command; success on exit code 0. It gets the backend in its
    /// environment: BG_SERVICE, BG_COLOUR, BG_BACKEND_ADDR, BG_BACKEND_PORT.
    Exec { command: Vec<String> },
    /// Open a RELP session (over TLS when the service has it) and close
    /// it: success when the server accepts both. imrelp logs nothing for it.
    Relp { tls: Option<TlsClient> },
    /// Complete a TLS handshake, as the service's TLS settings verify it,
    /// then close with close_notify.
    Tls { tls: TlsClient },
}

/// What a `udp` probe sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpPayload {
    /// An empty datagram: collectors discard it without a trace.
    #[default]
    Empty,
    /// A syslog line tagged `bluegreen-probe` (user.debug), for collectors
    /// that must see a message; drop it by its tag.
    Tagged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub probe: ProbeKind,
    #[serde(with = "millis")]
    pub interval: Duration,
    /// The interval while a backend is in transition (up with failures
    /// since its last success, down with successes, or not yet known):
    /// HAProxy's `fastinter`. Equal to `interval` unless set.
    #[serde(with = "millis")]
    pub fastinter: Duration,
    #[serde(with = "millis")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// `[health]` (defaults) and `[service.health]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub kind: Option<String>,
    pub interval_ms: Option<i64>,
    pub fastinter_ms: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub port: Option<i64>,
    pub path: Option<String>,
    pub expect_body: Option<String>,
    pub command: Option<Vec<String>>,
    pub udp_payload: Option<String>,
}

pub const DEFAULT_INTERVAL_MS: i64 = 1000;
pub const DEFAULT_RISE: i64 = 2;
pub const DEFAULT_FALL: i64 = 3;
const INTERVALS_MS: (i64, i64) = (10, 3_600_000);
const COUNTS: (i64, i64) = (1, 100);

/// A field that failed validation: (field, value, reason, accepted).
pub type FieldProblem = (String, String, String, String);

fn problem(field: &str, value: impl ToString, reason: &str, accepted: &str) -> FieldProblem {
    (
        field.to_owned(),
        value.to_string(),
        reason.to_owned(),
        accepted.to_owned(),
    )
}

fn ranged(field: &str, v: i64, (lo, hi): (i64, i64), unit: &str) -> Result<i64, FieldProblem> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(problem(
            field,
            v,
            "out of range",
            &format!("{unit} from {lo} to {hi}"),
        ))
    }
}

/// What a service's backends speak, which decides the default probe and
/// which kinds may be asked for.
#[derive(Clone, Copy)]
pub struct Speaks<'a> {
    pub app: AppProtocol,
    pub tls: Option<&'a TlsClient>,
}

/// Validates the health settings of one service. `at` prefixes field names
/// (e.g. `service[0].health`); `defaults` is the `[health]` table.
pub fn validate(
    at: &str,
    protocol: Protocol,
    speaks: Speaks<'_>,
    raw: Option<&RawHealth>,
    defaults: &RawHealth,
) -> Result<HealthCheck, FieldProblem> {
    let empty = RawHealth::default();
    let raw = raw.unwrap_or(&empty);
    let f = |name: &str| format!("{at}.{name}");
    let pick = |own: Option<i64>, default: Option<i64>| own.or(default);
    let interval = ranged(
        &f("interval_ms"),
        pick(raw.interval_ms, defaults.interval_ms).unwrap_or(DEFAULT_INTERVAL_MS),
        INTERVALS_MS,
        "milliseconds",
    )?;
    let fastinter = match pick(raw.fastinter_ms, defaults.fastinter_ms) {
        Some(t) => ranged(
            &f("fastinter_ms"),
            t,
            (INTERVALS_MS.0, interval),
            &format!("milliseconds from {} up to interval_ms", INTERVALS_MS.0),
        )?,
        None => interval,
    };
    // The default timeout fits in the interval, so a slow probe never
    // overlaps the next one.
    let timeout = match pick(raw.timeout_ms, defaults.timeout_ms) {
        Some(t) => ranged(
            &f("timeout_ms"),
            t,
            (1, interval),
            "milliseconds up to interval_ms",
        )?,
        None => interval.min(1000),
    };
    let rise = ranged(
        &f("rise"),
        pick(raw.rise, defaults.rise).unwrap_or(DEFAULT_RISE),
        COUNTS,
        "probes",
    )?;
    let fall = ranged(
        &f("fall"),
        pick(raw.fall, defaults.fall).unwrap_or(DEFAULT_FALL),
        COUNTS,
        "probes",
    )?;
    let kind = raw.kind.clone().unwrap_or_else(|| match speaks.app {
        AppProtocol::Relp => "relp".into(),
        AppProtocol::Tls => "tls".into(),
        AppProtocol::Syslog => protocol.to_string(),
    });
    let probe = match kind.as_str() {
        "relp" if speaks.app == AppProtocol::Relp => ProbeKind::Relp {
            tls: speaks.tls.cloned(),
        },
        "tls" if speaks.tls.is_some() => ProbeKind::Tls {
            tls: speaks.tls.cloned().expect("checked"),
        },
        "relp" | "tls" => {
            return Err(problem(
                &f("kind"),
                &kind,
                "the service does not speak it",
                "relp for app = \"relp\"; tls for a service with [service.tls] (app = \"tls\", or RELP over TLS)",
            ));
        }
        "tcp" => ProbeKind::Tcp,
        "udp" => ProbeKind::Udp {
            payload: match raw.udp_payload.as_deref() {
                None | Some("empty") => UdpPayload::Empty,
                Some("tagged") => UdpPayload::Tagged,
                Some(other) => {
                    return Err(problem(
                        &f("udp_payload"),
                        other,
                        "unknown udp probe payload",
                        "\"empty\" (discarded by collectors without a trace) or \"tagged\" (a syslog line tagged bluegreen-probe)",
                    ));
                }
            },
        },
        "http" => {
            let port = raw.port.ok_or_else(|| {
                problem(
                    &f("port"),
                    "",
                    "missing for an http probe",
                    "the port of the backend's health endpoint",
                )
            })?;
            let port = ranged(&f("port"), port, (1, 65535), "a port")? as u16;
            let path = raw.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err(problem(
                    &f("path"),
                    &path,
                    "not a URL path",
                    "a path starting with '/', without spaces",
                ));
            }
            ProbeKind::Http {
                port,
                path,
                expect_body: raw.expect_body.clone(),
            }
        }
        "exec" => {
            let command = raw.command.clone().unwrap_or_default();
            if command.first().is_none_or(|c| c.is_empty()) {
                return Err(problem(
                    &f("command"),
                    format!("{command:?}"),
                    "no program to run",
                    "a list: the program, then its arguments",
                ));
            }
            ProbeKind::Exec { command }
        }
        other => {
            return Err(problem(
                &f("kind"),
                other,
                "unknown probe kind",
                "\"tcp\", \"udp\", \"http\", \"exec\", \"relp\" or \"tls\"",
            ));
        }
    };
    for (name, set, wanted) in [
        (
            "port",
            raw.port.is_some(),
            matches!(probe, ProbeKind::Http { .. }),
        ),
        (
            "path",
            raw.path.is_some(),
            matches!(probe, ProbeKind::Http { .. }),
        ),
        (
            "expect_body",
            raw.expect_body.is_some(),
            matches!(probe, ProbeKind::Http { .. }),
        ),
        (
            "command",
            raw.command.is_some(),
            matches!(probe, ProbeKind::Exec { .. }),
        ),
        (
            "udp_payload",
            raw.udp_payload.is_some(),
            matches!(probe, ProbeKind::Udp { .. }),
        ),
    ] {
        if set && !wanted {
            return Err(problem(
                &f(name),
                "",
                &format!("does not apply to a {kind} probe"),
                "remove it, or use the probe kind it belongs to",
            ));
        }
    }
    Ok(HealthCheck {
        probe,
        interval: Duration::from_millis(interval as u64),
        fastinter: Duration::from_millis(fastinter as u64),
        timeout: Duration::from_millis(timeout as u64),
        rise: rise as u32,
        fall: fall as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Speaks<'static> = Speaks {
        app: AppProtocol::Syslog,
        tls: None,
    };

    fn raw(text: &str) -> RawHealth {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let udp = validate("s", Protocol::Udp, PLAIN, None, &RawHealth::default()).unwrap();
        assert_eq!(
            udp,
            HealthCheck {
                probe: ProbeKind::Udp {
                    payload: UdpPayload::Empty
                },
                interval: Duration::from_secs(1),
                fastinter: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3
            }
        );
        let tcp = validate("s", Protocol::Tcp, PLAIN, None, &RawHealth::default()).unwrap();
        assert_eq!(tcp.probe, ProbeKind::Tcp);
    }

    #[test]
    fn service_settings_override_the_global_defaults() {
        let defaults = raw("interval_ms = 200\nfall = 5\n");
        let own = raw(
            "kind = \"http\"\nport = 8686\npath = \"/health\"\nexpect_body = \"ok\"\nrise = 1\n",
        );
        let h = validate("s", Protocol::Udp, PLAIN, Some(&own), &defaults).unwrap();
        assert_eq!(h.interval, Duration::from_millis(200));
        assert_eq!(
            h.timeout,
            Duration::from_millis(200),
            "timeout defaults to fit the interval"
        );
        assert_eq!((h.rise, h.fall), (1, 5));
        assert_eq!(
            h.fastinter, h.interval,
            "fastinter defaults to the interval"
        );
        let fast = validate(
            "s",
            Protocol::Udp,
            PLAIN,
            Some(&raw("fastinter_ms = 25\n")),
            &defaults,
        )
        .unwrap();
        assert_eq!(fast.fastinter, Duration::from_millis(25));
        assert_eq!(
            h.probe,
            ProbeKind::Http {
                port: 8686,
                path: "/health".into(),
                expect_body: Some("ok".into())
            }
        );
    }

    #[test]
    fn bad_settings_name_the_field_and_what_is_accepted() {
        let cases = [
            ("kind = \"icmp\"", "s.health.kind", "unknown probe kind"),
            (
                "interval_ms = 5",
                "s.health.interval_ms",
                "milliseconds from 10",
            ),
            (
                "interval_ms = 100\ntimeout_ms = 200",
                "s.health.timeout_ms",
                "up to interval_ms",
            ),
            ("rise = 0", "s.health.rise", "probes from 1 to 100"),
            (
                "interval_ms = 100\nfastinter_ms = 200",
                "s.health.fastinter_ms",
                "up to interval_ms",
            ),
            ("kind = \"http\"", "s.health.port", "missing"),
            (
                "kind = \"http\"\nport = 80\npath = \"health\"",
                "s.health.path",
                "starting with '/'",
            ),
            (
                "kind = \"exec\"\ncommand = []",
                "s.health.command",
                "no program",
            ),
            (
                "kind = \"udp\"\nudp_payload = \"loud\"",
                "s.health.udp_payload",
                "\"empty\"",
            ),
            (
                "kind = \"tcp\"\nudp_payload = \"empty\"",
                "s.health.udp_payload",
                "does not apply to a tcp probe",
            ),
            ("kind = \"relp\"", "s.health.kind", "does not speak it"),
            (
                "kind = \"tcp\"\ncommand = [\"true\"]",
                "s.health.command",
                "does not apply",
            ),
        ];
        for (text, field, needle) in cases {
            let (f, _, reason, accepted) = validate(
                "s.health",
                Protocol::Tcp,
                PLAIN,
                Some(&raw(text)),
                &RawHealth::default(),
            )
            .unwrap_err();
            assert_eq!(f, field, "{text}");
            assert!(
                reason.contains(needle) || accepted.contains(needle),
                "{text}: {reason} / {accepted}"
            );
        }
    }
}
