//! Health probes, one file per kind. Each file holds its kind's settings,
//! how they are read from `[service.health]`, and how the probe runs.
//!
//! Adding a probe kind: a file here with a type that implements `Kind`,
//! one line in the `kinds!` list below, and its fields in `RawHealth` when
//! it reads any of its own.
use std::{future::Future, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    model::{AppProtocol, Colour, FieldProblem, Protocol},
    transport::tls::TlsClient,
};

mod exec;
mod http;
mod relp;
mod tcp;
pub mod through_service;
mod tls;
mod udp;

pub use exec::Exec;
pub use http::Http;
pub use relp::Relp;
pub use tcp::Tcp;
pub use tls::Tls;
pub use udp::{UDP_PROBE_MESSAGE, Udp, UdpPayload};

/// The probe fields of `[health]` and `[service.health]` as written; the
/// timing fields are `config::health`'s.
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

impl RawHealth {
    /// The fields only some kinds read, and whether each is set.
    pub fn kind_fields(&self) -> [(&'static str, bool); 5] {
        [
            ("port", self.port.is_some()),
            ("path", self.path.is_some()),
            ("expect_body", self.expect_body.is_some()),
            ("command", self.command.is_some()),
            ("udp_payload", self.udp_payload.is_some()),
        ]
    }
}

/// What a service's backends speak, which decides the default probe and
/// which kinds may be asked for.
#[derive(Clone, Copy)]
pub struct Speaks<'a> {
    pub protocol: Protocol,
    pub app: AppProtocol,
    pub tls: Option<&'a TlsClient>,
}

/// What a kind's settings are read from.
pub struct Settings<'a> {
    /// Prefix of field names in errors, e.g. `service[0].health`.
    pub at: &'a str,
    pub raw: &'a RawHealth,
    pub speaks: Speaks<'a>,
}

impl Settings<'_> {
    /// `name` as an error names it.
    pub fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.at)
    }
}

/// One backend a probe runs against.
pub struct Target<'a> {
    pub addr: SocketAddr,
    pub service: &'a str,
    pub colour: Colour,
    /// The whole probe's deadline; `probe` enforces it, a kind may use it
    /// to size its own waits.
    pub timeout: Duration,
}

/// A probe kind: its settings and its run.
pub trait Kind: Sized {
    /// Its `kind = "..."` in the config.
    const NAME: &'static str;
    /// The kind-specific fields of `RawHealth` it reads.
    const FIELDS: &'static [&'static str] = &[];
    /// Whether a success means this host sent the backend packets (so the
    /// kernel resolved its neighbour, which the path check relies on).
    const SENDS_TO_BACKEND: bool = true;

    fn parse(settings: &Settings<'_>) -> Result<Self, FieldProblem>;

    fn run(&self, target: &Target<'_>) -> impl Future<Output = Result<(), ProbeError>> + Send;
}

/// Declares `ProbeKind` over the kinds, in the order the config's error
/// lists them.
macro_rules! kinds {
    ($($variant:ident),+ $(,)?) => {
        /// What a probe does.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        #[serde(tag = "kind", rename_all = "lowercase")]
        pub enum ProbeKind {
            $($variant($variant),)+
        }

        impl ProbeKind {
            /// Every kind's name, as the config accepts them.
            pub const NAMES: &[&str] = &[$(<$variant as Kind>::NAME),+];

            /// The kind called `name`; None when there is none.
            fn parse_named(name: &str, s: &Settings<'_>) -> Option<Result<Self, FieldProblem>> {
                $(if name == <$variant as Kind>::NAME {
                    return Some($variant::parse(s).map(Self::$variant));
                })+
                None
            }

            pub fn name(&self) -> &'static str {
                match self { $(Self::$variant(_) => <$variant as Kind>::NAME,)+ }
            }

            fn fields(&self) -> &'static [&'static str] {
                match self { $(Self::$variant(_) => <$variant as Kind>::FIELDS,)+ }
            }

            /// See `Kind::SENDS_TO_BACKEND`.
            pub fn sends_to_backend(&self) -> bool {
                match self { $(Self::$variant(_) => <$variant as Kind>::SENDS_TO_BACKEND,)+ }
            }

            async fn run_once(&self, target: &Target<'_>) -> Result<(), ProbeError> {
                match self { $(Self::$variant(k) => k.run(target).await,)+ }
            }
        }
    };
}

kinds!(Tcp, Udp, Http, Exec, Relp, Tls);

impl ProbeKind {
    /// Reads the probe of one service: `raw.kind`, or the default for what
    /// the service speaks, and the fields that kind reads. A field that
    /// belongs to another kind is an error, not silently ignored.
    pub fn parse(s: &Settings<'_>) -> Result<Self, FieldProblem> {
        let kind = s.raw.kind.clone().unwrap_or_else(|| {
            match s.speaks.app {
                AppProtocol::Relp => Relp::NAME,
                AppProtocol::Tls => Tls::NAME,
                AppProtocol::Syslog => match s.speaks.protocol {
                    Protocol::Udp => Udp::NAME,
                    Protocol::Tcp => Tcp::NAME,
                },
            }
            .to_owned()
        });
        let probe = Self::parse_named(&kind, s).unwrap_or_else(|| {
            Err(FieldProblem::new(
                s.field("kind"),
                &kind,
                "unknown probe kind",
                one_of(Self::NAMES),
            ))
        })?;
        for (name, set) in s.raw.kind_fields() {
            if set && !probe.fields().contains(&name) {
                return Err(FieldProblem::new(
                    s.field(name),
                    "",
                    format!("does not apply to a {kind} probe"),
                    "remove it, or use the probe kind it belongs to",
                ));
            }
        }
        Ok(probe)
    }

    /// Runs one probe within `target.timeout`; Ok carries its latency.
    pub async fn probe(&self, target: &Target<'_>) -> Result<Duration, ProbeError> {
        let started = std::time::Instant::now();
        match tokio::time::timeout(target.timeout, self.run_once(target)).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ProbeError::Backend(format!(
                "timed out after {} ms",
                target.timeout.as_millis()
            ))),
        }
    }
}

/// `"a", "b" or "c"`.
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The backend failed it: refused, timed out, answered wrong.
    Backend(String),
    /// This host ran out of something first (file descriptors, memory,
    /// buffers): it says nothing about the backend.
    Local(String),
}

impl ProbeError {
    /// An I/O error, described by `what` (its text given), told apart by
    /// whether this host or the backend failed.
    fn io(e: std::io::Error, what: impl FnOnce(&std::io::Error) -> String) -> Self {
        if crate::host::resources::is_local_exhaustion(&e) {
            Self::Local(what(&e))
        } else {
            Self::Backend(what(&e))
        }
    }
}

impl From<std::io::Error> for ProbeError {
    fn from(e: std::io::Error) -> Self {
        Self::io(e, |e| e.to_string())
    }
}

impl From<String> for ProbeError {
    fn from(message: String) -> Self {
        Self::Backend(message)
    }
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backend(m) => f.write_str(m),
            Self::Local(m) => write!(f, "this host, not the backend: {m}"),
        }
    }
}

/// Runs a blocking probe (RELP, TLS: their clients are blocking) off the
/// async workers. Its socket timeouts bound it.
async fn blocking(
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), ProbeError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ProbeError::from),
        Err(e) => Err(ProbeError::Local(format!("the probe's task failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Runs `kind` against `addr` with a 500 ms timeout.
    pub(super) async fn probe(
        kind: &ProbeKind,
        addr: SocketAddr,
        service: &str,
        colour: Colour,
    ) -> Result<Duration, ProbeError> {
        let timeout = Duration::from_millis(500);
        kind.probe(&Target {
            addr,
            service,
            colour,
            timeout,
        })
        .await
    }

    #[test]
    fn every_kind_is_listed_once_in_the_errors() {
        assert_eq!(
            one_of(ProbeKind::NAMES),
            "\"tcp\", \"udp\", \"http\", \"exec\", \"relp\" or \"tls\""
        );
    }

    #[tokio::test]
    async fn probes_tell_up_from_down_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(
            probe(&ProbeKind::Tcp(Tcp), up, "s", Colour::Blue)
                .await
                .is_ok()
        );
        assert!(
            probe(&ProbeKind::Tcp(Tcp), closed, "s", Colour::Blue)
                .await
                .is_err()
        );

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_up = udp.local_addr().unwrap();
        let empty = ProbeKind::Udp(Udp {
            payload: UdpPayload::Empty,
        });
        let tagged = ProbeKind::Udp(Udp {
            payload: UdpPayload::Tagged,
        });
        assert!(probe(&empty, udp_up, "s", Colour::Blue).await.is_ok());
        let mut got = [0u8; 64];
        let n = udp.recv(&mut got).unwrap();
        assert_eq!(n, 0, "an empty datagram arrived");
        assert!(probe(&tagged, udp_up, "s", Colour::Blue).await.is_ok());
        let n = udp.recv(&mut got).unwrap();
        assert_eq!(&got[..n], UDP_PROBE_MESSAGE, "a real syslog probe arrived");
        drop(udp);
        let err = probe(&empty, udp_up, "s", Colour::Blue)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("port unreachable"), "{err}");

        let yes = ProbeKind::Exec(Exec {
            command: vec![
                "sh".into(),
                "-c".into(),
                "test \"$BG_COLOUR\" = green".into(),
            ],
        });
        assert!(
            probe(&yes, up, "s", Colour::Green).await.is_ok(),
            "env reaches the command"
        );
        assert!(probe(&yes, up, "s", Colour::Blue).await.is_err());
        let slow = ProbeKind::Exec(Exec {
            command: vec!["sleep".into(), "5".into()],
        });
        let err = probe(&slow, up, "s", Colour::Blue)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn http_probe_reads_the_status_and_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\n\r\n{\"ok\":true}",
                "HTTP/1.1 200 OK\r\n\r\nbusy",
                "HTTP/1.1 503 Service Unavailable\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = [0u8; 512];
                let _ = s.read(&mut req).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let http = ProbeKind::Http(Http {
            port,
            path: "/health".into(),
            expect_body: Some("\"ok\"".into()),
        });
        let backend: SocketAddr = "127.0.0.1:514".parse().unwrap();
        assert!(probe(&http, backend, "s", Colour::Blue).await.is_ok());
        let e = probe(&http, backend, "s", Colour::Blue).await.unwrap_err();
        assert!(e.to_string().contains("lacks"), "{e}");
        let e = probe(&http, backend, "s", Colour::Blue).await.unwrap_err();
        assert!(e.to_string().contains("HTTP 503"), "{e}");
    }
}

#[cfg(test)]
mod local_exhaustion {
    use super::{tests::probe, *};

    /// Out of file descriptors, a probe fails as the host's, not the
    /// backend's, so its state does not change. Exhausting descriptors would
    /// starve the tests beside this one: the work runs in a child process.
    #[test]
    fn a_probe_that_cannot_open_a_socket_blames_this_host() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--nocapture"])
            .arg("probe::local_exhaustion::out_of_descriptors")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[tokio::test]
    #[ignore = "run in its own process by a_probe_that_cannot_open_a_socket_blames_this_host"]
    async fn out_of_descriptors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap();
        let check = ProbeKind::Tcp(Tcp);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid struct, in this process only.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 256;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        let mut held = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            held.push(f);
        }
        let outcome = probe(&check, up, "s", Colour::Blue).await;
        drop(held);
        assert!(
            matches!(&outcome, Err(ProbeError::Local(m)) if m.contains("Too many open files")),
            "{outcome:?}"
        );
        assert!(
            probe(&check, up, "s", Colour::Blue).await.is_ok(),
            "fine again"
        );
    }
}
