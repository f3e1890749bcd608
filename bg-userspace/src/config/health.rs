//! Health probe settings: what to probe on each backend, and how often.
//!
//! Every backend gets a probe, configured or not: `tcp` for TCP services
//! and `udp` for UDP ones, every 1 s, rise 2, fall 3 (HAProxy's meaning:
//! `rise` consecutive successes make a backend up, `fall` consecutive
//! failures make it down). `[health]` changes the timing defaults for all
//! services; `[service.health]` overrides one service.
use std::{ops::RangeInclusive, time::Duration};

use serde::Serialize;

use crate::{
    model::FieldProblem,
    probe::{ProbeKind, RawHealth, Settings, Speaks},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub probe: ProbeKind,
    #[serde(with = "super::millis")]
    pub interval: Duration,
    /// The interval while a backend is in transition (up with failures
    /// since its last success, down with successes, or not yet known):
    /// HAProxy's `fastinter`. Equal to `interval` unless set.
    #[serde(with = "super::millis")]
    pub fastinter: Duration,
    #[serde(with = "super::millis")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

pub const DEFAULT_INTERVAL_MS: i64 = 1000;
pub const DEFAULT_RISE: i64 = 2;
pub const DEFAULT_FALL: i64 = 3;
const INTERVALS_MS: RangeInclusive<i64> = 10..=3_600_000;
const COUNTS: RangeInclusive<i64> = 1..=100;

/// Validates the health settings of one service. `at` prefixes field names
/// (e.g. `service[0].health`); `defaults` is the `[health]` table. What to
/// probe is the probe kind's to read (`probe::ProbeKind::parse`).
pub fn validate(
    at: &str,
    speaks: Speaks<'_>,
    raw: Option<&RawHealth>,
    defaults: &RawHealth,
) -> Result<HealthCheck, FieldProblem> {
    let empty = RawHealth::default();
    let raw = raw.unwrap_or(&empty);
    let f = |name: &str| format!("{at}.{name}");
    let pick = |own: Option<i64>, default: Option<i64>| own.or(default);
    let interval = FieldProblem::ranged(
        &f("interval_ms"),
        pick(raw.interval_ms, defaults.interval_ms).unwrap_or(DEFAULT_INTERVAL_MS),
        INTERVALS_MS,
        "milliseconds",
    )?;
    let fastinter = match pick(raw.fastinter_ms, defaults.fastinter_ms) {
        Some(t) => FieldProblem::ranged(
            &f("fastinter_ms"),
            t,
            *INTERVALS_MS.start()..=interval,
            "milliseconds, up to interval_ms,",
        )?,
        None => interval,
    };
    // The default timeout fits in the interval, so a slow probe never
    // overlaps the next one.
    let timeout = match pick(raw.timeout_ms, defaults.timeout_ms) {
        Some(t) => FieldProblem::ranged(
            &f("timeout_ms"),
            t,
            1..=interval,
            "milliseconds, up to interval_ms,",
        )?,
        None => interval.min(1000),
    };
    let rise = FieldProblem::ranged(
        &f("rise"),
        pick(raw.rise, defaults.rise).unwrap_or(DEFAULT_RISE),
        COUNTS,
        "probes",
    )?;
    let fall = FieldProblem::ranged(
        &f("fall"),
        pick(raw.fall, defaults.fall).unwrap_or(DEFAULT_FALL),
        COUNTS,
        "probes",
    )?;
    let probe = ProbeKind::parse(&Settings { at, raw, speaks })?;
    Ok(HealthCheck {
        probe,
        interval: Duration::from_millis(interval as u64),
        fastinter: Duration::from_millis(fastinter as u64),
        timeout: Duration::from_millis(timeout as u64),
        rise: rise as u32,
        fall: fall as u32,
    })
}

/// `[health]`: timing defaults only (what to probe is set per service),
/// checked on its own so its errors name it, not a service.
pub fn validate_defaults(h: &RawHealth) -> Result<(), FieldProblem> {
    for (name, set) in [
        ("kind", h.kind.is_some()),
        ("port", h.port.is_some()),
        ("path", h.path.is_some()),
        ("expect_body", h.expect_body.is_some()),
        ("command", h.command.is_some()),
        ("udp_payload", h.udp_payload.is_some()),
    ] {
        if set {
            return Err(FieldProblem::new(
                format!("health.{name}"),
                "",
                "what to probe is set per service",
                "interval_ms, fastinter_ms, timeout_ms, rise and fall in [health]; the rest in [service.health]",
            ));
        }
    }
    let plain = Speaks {
        protocol: crate::model::Protocol::Tcp,
        app: crate::model::AppProtocol::Syslog,
        tls: None,
    };
    validate("health", plain, Some(h), &RawHealth::default()).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::{
        model::{AppProtocol, Protocol},
        probe::{Http, Tcp, Udp, UdpPayload},
    };

    const fn plain(protocol: Protocol) -> Speaks<'static> {
        Speaks {
            protocol,
            app: AppProtocol::Syslog,
            tls: None,
        }
    }

    fn raw(text: &str) -> RawHealth {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let udp = validate("s", plain(Protocol::Udp), None, &RawHealth::default()).unwrap();
        assert_eq!(
            udp,
            HealthCheck {
                probe: ProbeKind::Udp(Udp {
                    payload: UdpPayload::Empty
                }),
                interval: Duration::from_secs(1),
                fastinter: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3
            }
        );
        let tcp = validate("s", plain(Protocol::Tcp), None, &RawHealth::default()).unwrap();
        assert_eq!(tcp.probe, ProbeKind::Tcp(Tcp));
    }

    #[test]
    fn service_settings_override_the_global_defaults() {
        let defaults = raw("interval_ms = 200\nfall = 5\n");
        let own = raw(
            "kind = \"http\"\nport = 8686\npath = \"/health\"\nexpect_body = \"ok\"\nrise = 1\n",
        );
        let h = validate("s", plain(Protocol::Udp), Some(&own), &defaults).unwrap();
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
            plain(Protocol::Udp),
            Some(&raw("fastinter_ms = 25\n")),
            &defaults,
        )
        .unwrap();
        assert_eq!(fast.fastinter, Duration::from_millis(25));
        assert_eq!(
            h.probe,
            ProbeKind::Http(Http {
                port: 8686,
                path: "/health".into(),
                expect_body: Some("ok".into())
            })
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
            let FieldProblem {
                field: f,
                reason,
                accepted,
                ..
            } = validate(
                "s.health",
                plain(Protocol::Tcp),
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
