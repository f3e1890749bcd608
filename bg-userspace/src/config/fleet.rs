//! `[fleet]`: the etcd cluster that holds the fleet's desired state, the
//! fleet's name and this node's. Without the section the agent runs alone,
//! as before.
use std::{path::PathBuf, time::Duration};

use serde::Serialize;

use super::{raw::RawFleet, service::valid_name};
use crate::model::FieldProblem;

/// Accepted `converge_timeout_ms`.
const CONVERGE_TIMEOUTS_MS: std::ops::RangeInclusive<i64> = 100..=600_000;
/// Accepted `lease_ttl_s`: etcd's minimum lease is a few seconds.
const LEASE_TTLS_S: std::ops::RangeInclusive<i64> = 2..=600;
const NAME_ACCEPTED: &str = "1 to 64 characters of letters, digits, '-', '_' and '.'";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetSettings {
    /// The fleet's name: its keys live under `/bluegreen/<cluster>/`.
    pub cluster: String,
    /// This node's name, unique in the fleet.
    pub node: String,
    /// etcd client URLs, `http://` or `https://`.
    pub endpoints: Vec<String>,
    /// TLS to etcd: the CA that signs the members' certificates, and this
    /// node's client certificate and key (both or neither).
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// etcd authentication: the user, and a file holding its password.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// How long a fleet flip waits for every live node to apply it.
    #[serde(with = "super::millis")]
    pub converge_timeout: Duration,
    /// The lease that binds this node's published state: when the agent is
    /// gone this long, its key goes and the fleet counts it as not alive.
    pub lease_ttl_s: i64,
}

impl FleetSettings {
    /// `[fleet]`; field names in errors are relative to it. `hostname` is
    /// the default node name.
    pub(super) fn validate(raw: &RawFleet, hostname: &str) -> Result<Self, FieldProblem> {
        let cluster = raw.cluster.clone().ok_or_else(|| {
            FieldProblem::new(
                "cluster",
                "",
                "missing",
                "the fleet's name: ".to_owned() + NAME_ACCEPTED,
            )
        })?;
        if !valid_name(&cluster) {
            return Err(FieldProblem::new(
                "cluster",
                &cluster,
                "not a usable name",
                NAME_ACCEPTED,
            ));
        }
        let node = raw.node.clone().unwrap_or_else(|| hostname.to_owned());
        if !valid_name(&node) {
            return Err(FieldProblem::new(
                "node",
                &node,
                "not a usable node name (the default is the host name)",
                NAME_ACCEPTED,
            ));
        }
        if raw.endpoints.is_empty() {
            return Err(FieldProblem::new(
                "endpoints",
                "[]",
                "no etcd endpoint",
                "a list of etcd client URLs, e.g. [\"http://198.18.9.1:2379\"]",
            ));
        }
        let tls = raw.ca.is_some() || raw.cert.is_some();
        for (i, e) in raw.endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}]");
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"))
                .ok_or_else(|| {
                    FieldProblem::new(
                        &field,
                        e,
                        "not an etcd URL",
                        "http://HOST:PORT or https://HOST:PORT",
                    )
                })?;
            let port_ok = rest
                .rsplit_once(':')
                .and_then(|(host, port)| (!host.is_empty()).then_some(port))
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| p != 0);
            if !port_ok || rest.contains('/') {
                return Err(FieldProblem::new(
                    &field,
                    e,
                    "no host and port",
                    "http://HOST:PORT or https://HOST:PORT",
                ));
            }
            if e.starts_with("https://") != tls {
                return Err(FieldProblem::new(
                    &field,
                    e,
                    if tls {
                        "plain http while ca or cert is set"
                    } else {
                        "https without ca"
                    },
                    "https:// endpoints with ca (and cert and key for client certificates), or http:// without them",
                ));
            }
        }
        if raw.cert.is_some() != raw.key.is_some() {
            return Err(FieldProblem::new(
                if raw.cert.is_some() { "key" } else { "cert" },
                "",
                "a client certificate needs both cert and key",
                "cert and key together (PEM files), or neither",
            ));
        }
        if raw.cert.is_some() && raw.ca.is_none() {
            return Err(FieldProblem::new(
                "ca",
                "",
                "missing with cert",
                "the PEM file of the CA that signs the etcd members' certificates",
            ));
        }
        for (field, path) in [
            ("ca", &raw.ca),
            ("cert", &raw.cert),
            ("key", &raw.key),
            ("password_file", &raw.password_file),
        ] {
            if let Some(p) = path
                && let Err(e) = std::fs::metadata(p)
            {
                return Err(FieldProblem::new(
                    field,
                    p.display(),
                    format!("cannot read it: {e}"),
                    "a readable file",
                ));
            }
        }
        if raw.user.is_some() != raw.password_file.is_some() {
            return Err(FieldProblem::new(
                if raw.user.is_some() {
                    "password_file"
                } else {
                    "user"
                },
                "",
                "etcd authentication needs both user and password_file",
                "user and password_file together, or neither",
            ));
        }
        let converge = FieldProblem::ranged(
            "converge_timeout_ms",
            raw.converge_timeout_ms.unwrap_or(5000),
            CONVERGE_TIMEOUTS_MS,
            "milliseconds",
        )?;
        let lease_ttl_s = FieldProblem::ranged(
            "lease_ttl_s",
            raw.lease_ttl_s.unwrap_or(10),
            LEASE_TTLS_S,
            "seconds",
        )?;
        Ok(Self {
            cluster,
            node,
            endpoints: raw.endpoints.clone(),
            ca: raw.ca.clone(),
            cert: raw.cert.clone(),
            key: raw.key.clone(),
            user: raw.user.clone(),
            password_file: raw.password_file.clone(),
            converge_timeout: Duration::from_millis(converge as u64),
            lease_ttl_s,
        })
    }

    /// Every key of this fleet starts with this.
    pub fn prefix(&self) -> String {
        format!("/bluegreen/{}/", self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const SERVICE: &str = "[[service]]\nname = \"s\"\nprotocol = \"udp\"\nlisten = \"0.0.0.0:514\"\nblue = \"198.18.1.2:514\"\ngreen = \"198.18.2.2:514\"\n";

    fn parse(fleet: &str) -> Result<Config, ConfigError> {
        Config::parse(
            Path::new("bg.toml"),
            &format!("{SERVICE}\n[fleet]\n{fleet}"),
        )
    }

    fn field_of(e: ConfigError) -> (String, String) {
        match e {
            ConfigError::Field {
                field,
                reason,
                accepted,
                ..
            } => (field, format!("{reason} / {accepted}")),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn a_fleet_section_is_read_with_its_defaults() {
        let c = parse("cluster = \"logs\"\nnode = \"n1\"\nendpoints = [\"http://198.18.9.1:2379\", \"http://[2001:db8::9]:2379\"]\n").unwrap();
        let f = c.fleet.expect("fleet");
        assert_eq!((f.cluster.as_str(), f.node.as_str()), ("logs", "n1"));
        assert_eq!(f.endpoints.len(), 2);
        assert_eq!(f.converge_timeout.as_millis(), 5000);
        assert_eq!(f.lease_ttl_s, 10);
        assert_eq!(f.prefix(), "/bluegreen/logs/");
        let alone = Config::parse(Path::new("bg.toml"), SERVICE).unwrap();
        assert!(alone.fleet.is_none(), "no [fleet]: the agent runs alone");
    }

    #[test]
    fn bad_fleet_settings_name_the_field() {
        let cases = [
            (
                "node = \"n\"\nendpoints = [\"http://a:1\"]\n",
                "fleet.cluster",
                "missing",
            ),
            (
                "cluster = \"a b\"\nendpoints = [\"http://a:1\"]\n",
                "fleet.cluster",
                "not a usable name",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\n",
                "fleet.endpoints",
                "no etcd endpoint",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"a:2379\"]\n",
                "fleet.endpoints[0]",
                "http://HOST:PORT",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"http://a\"]\n",
                "fleet.endpoints[0]",
                "no host and port",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"https://a:2379\"]\n",
                "fleet.endpoints[0]",
                "https without ca",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"http://a:1\"]\ncert = \"/etc/hostname\"\n",
                "fleet.endpoints[0]",
                "plain http while ca or cert is set",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"http://a:1\"]\nuser = \"u\"\n",
                "fleet.password_file",
                "both user and password_file",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"http://a:1\"]\nconverge_timeout_ms = 5\n",
                "fleet.converge_timeout_ms",
                "milliseconds from 100",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"http://a:1\"]\nlease_ttl_s = 1\n",
                "fleet.lease_ttl_s",
                "seconds from 2",
            ),
            (
                "cluster = \"c\"\nnode = \"n\"\nendpoints = [\"https://a:1\"]\nca = \"/nonexistent/ca.pem\"\n",
                "fleet.ca",
                "cannot read it",
            ),
        ];
        for (text, field, needle) in cases {
            let (f, why) = field_of(parse(text).unwrap_err());
            assert_eq!(f, field, "{text}");
            assert!(why.contains(needle), "{text}: {why}");
        }
    }

    /// Nodes share one digest whatever their node name, comments or
    /// layout; a different service is a different digest.
    #[test]
    fn the_digest_ignores_the_node_and_the_layout() {
        let a = parse("cluster = \"c\"\nnode = \"n1\"\nendpoints = [\"http://a:1\"]\n").unwrap();
        let b = Config::parse(
            Path::new("other.toml"),
            &format!("# node two\n{SERVICE}\n\n[fleet]\nnode = \"n2\"\ncluster = \"c\"\nendpoints = [\"http://a:1\"]\n"),
        )
        .unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 16);
        let c = Config::parse(
            Path::new("bg.toml"),
            &SERVICE.replace("198.18.2.2", "198.18.2.3"),
        )
        .unwrap();
        assert_ne!(a.digest(), c.digest(), "another backend is another config");
    }
}
