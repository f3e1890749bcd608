//! The agent's TOML configuration and its validation.
//!
//! Parsing is serde's job; everything serde cannot express (address syntax,
//! ports, cross-field rules) is checked here so that every error names the
//! file, the field, the value and what is accepted.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use serde::Serialize;
use thiserror::Error;

pub mod dataplane;
pub mod deploy;
pub mod diff;
pub mod dsr;
pub mod fleet;
pub mod health;
mod raw;
pub mod service;
pub mod tcp;

pub use dataplane::AttachRequest;
pub use deploy::DeploySettings;
pub use fleet::FleetSettings;
pub use health::HealthCheck;
pub use service::Service;
pub use tcp::TcpSettings;

use crate::model::FieldProblem;

/// Durations in the config's serialized form are whole milliseconds.
mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// This host's name (the default fleet node name); "" when unknown.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

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

impl ConfigError {
    fn field(file: &Path, p: FieldProblem) -> Self {
        Self::Field {
            file: file.to_owned(),
            field: p.field,
            value: p.value,
            reason: p.reason,
            accepted: p.accepted,
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
    /// `[fleet]`: None runs this agent alone.
    pub fleet: Option<FleetSettings>,
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
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        Self::validate(raw).map_err(|p| ConfigError::field(path, p))
    }

    fn validate(raw: raw::RawConfig) -> Result<Self, FieldProblem> {
        if raw.services.is_empty() {
            return Err(FieldProblem::new(
                "service",
                "",
                "no [[service]] table",
                "at least one [[service]] with name, protocol, listen, blue and green",
            ));
        }
        if raw.services.len() > MAX_SERVICES {
            return Err(FieldProblem::new(
                "service",
                raw.services.len(),
                "too many services",
                format!("at most {MAX_SERVICES}"),
            ));
        }
        health::validate_defaults(&raw.health)?;
        let attach = AttachRequest::validate(raw.dataplane.attach.as_deref())
            .map_err(|p| p.within("dataplane"))?;
        let mut names = HashSet::new();
        let mut listens = HashSet::new();
        let mut services = Vec::with_capacity(raw.services.len());
        for (i, s) in raw.services.iter().enumerate() {
            let svc = Service::validate(i, s, &raw.health, attach)?;
            if !names.insert(svc.name.clone()) {
                return Err(FieldProblem::new(
                    format!("service[{i}].name"),
                    &s.name,
                    "duplicate service name",
                    "a name used by no other service",
                ));
            }
            if !listens.insert((svc.listen, svc.protocol)) {
                return Err(FieldProblem::new(
                    format!("service[{i}].listen"),
                    &s.listen,
                    format!(
                        "duplicate service: another {} service listens here",
                        svc.protocol
                    ),
                    "one service per listen address, port and protocol",
                ));
            }
            services.push(svc);
        }
        if raw.fleet.is_some() && raw.deploy.shadow_s.is_some_and(|s| s > 0) {
            return Err(FieldProblem::new(
                "deploy.shadow_s",
                raw.deploy.shadow_s.unwrap_or(0),
                "shadow copies run on one steering node; fleet mode does not run a shadow phase yet",
                "0 (or no shadow_s) with [fleet]",
            ));
        }
        Ok(Self {
            services,
            tcp: TcpSettings::validate(raw.tcp).map_err(|p| p.within("tcp"))?,
            deploy: DeploySettings::validate(&raw.deploy).map_err(|p| p.within("deploy"))?,
            attach,
            fleet: raw
                .fleet
                .as_ref()
                .map(|f| FleetSettings::validate(f, &hostname()))
                .transpose()
                .map_err(|p| p.within("fleet"))?,
        })
    }

    /// The service called `name`, and its index (its place in the maps'
    /// order); None when no service has that name.
    pub fn service(&self, name: &str) -> Option<(usize, &Service)> {
        self.services
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
    }

    /// What every node of a fleet must agree on: a digest of this config
    /// as validated, without `[fleet]` (whose node name is each node's
    /// own). Comments and layout do not change it.
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let shared = Self {
            fleet: None,
            ..self.clone()
        };
        let text = serde_json::to_vec(&shared).unwrap_or_default();
        let hash = sha2::Sha256::digest(&text);
        hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Every service's name, for errors that list what is accepted.
    pub fn service_names(&self) -> String {
        let names: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{AppProtocol, Protocol},
        probe::{ProbeKind, Tcp},
    };

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
    fn shadow_settings_are_checked_where_they_are_written() {
        let udp = one("0.0.0.0:514", "198.18.1.2:514", "198.18.2.2:514", "udp");
        let c = parse(&format!("{udp}shadow_green = \"198.18.2.2:5514\"\n[deploy]\nshadow_s = 30\nshadow_percent = 12.5\n")).unwrap();
        assert_eq!(
            c.services[0].shadow,
            [None, Some("198.18.2.2:5514".parse().unwrap())]
        );
        assert_eq!(
            (
                c.deploy.shadow_s,
                c.deploy.shadow_bp,
                c.deploy.shadow_max_pps
            ),
            (30, 1250, 100_000)
        );
        let tcp = one("0.0.0.0:514", "198.18.1.2:514", "198.18.2.2:514", "tcp");
        let e = error_for(&format!("{tcp}shadow_green = \"198.18.2.2:5514\"\n"));
        assert!(
            e.contains("service[0].shadow_green") && e.contains("UDP only"),
            "{e}"
        );
        let e = error_for(&format!("{udp}shadow_blue = \"[2001:db8:1::2]:5514\"\n"));
        assert!(
            e.contains("service[0].shadow_blue") && e.contains("family"),
            "{e}"
        );
        let e = error_for(&format!("{udp}[deploy]\nshadow_percent = 0\n"));
        assert!(
            e.contains("deploy.shadow_percent = \"0\"") && e.contains("0.01 to 100"),
            "{e}"
        );
        let e = error_for(&format!("{udp}[deploy]\nshadow_max_pps = -1\n"));
        assert!(e.contains("deploy.shadow_max_pps"), "{e}");
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
        assert!(matches!(
            plain.services[0].health.probe,
            ProbeKind::Tcp(Tcp)
        ));
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
        assert!(matches!(c.services[0].health.probe, ProbeKind::Tls(_)));
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
            ProbeKind::Relp(crate::probe::Relp { tls: None })
        ));
        let c = parse(&format!("{relp}[service.tls]\nverify = \"none\"\n")).unwrap();
        assert!(
            matches!(
                &c.services[0].health.probe,
                ProbeKind::Relp(crate::probe::Relp { tls: Some(_) })
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
