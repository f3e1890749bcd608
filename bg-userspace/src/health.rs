//! Health probes of every backend, run concurrently on tokio, and the board
//! that records their state. Flips are gated on it.
use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::{
    config::{Config, Protocol},
    health_check::{HealthCheck, ProbeKind, UdpPayload},
    history::{Event, History},
    model::Colour,
    state::now_unix_ms,
};

/// Probe results kept per backend for the status history.
const HISTORY_LEN: usize = 60;
/// The syslog message a UDP probe sends (user.debug, tagged so collectors
/// can drop it).
pub const UDP_PROBE_MESSAGE: &[u8] = b"<15>bluegreen-probe: health probe";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Not enough probes yet to say.
    Unknown,
    Up,
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub at_unix_ms: u64,
    pub ok: bool,
    pub latency_us: u64,
}

/// What the board knows about one backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendHealth {
    pub backend: SocketAddr,
    pub state: BackendState,
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    /// Latency of the last probe, successful or not.
    pub last_latency_us: Option<u64>,
    pub last_error: Option<String>,
    pub history: VecDeque<ProbeRecord>,
}

impl BackendHealth {
    pub fn new(backend: SocketAddr) -> Self {
        Self {
            backend,
            state: BackendState::Unknown,
            consecutive_ok: 0,
            consecutive_fail: 0,
            last_latency_us: None,
            last_error: None,
            history: VecDeque::new(),
        }
    }

    /// Records a probe result; returns the new state when it changed.
    /// `rise` consecutive successes make a backend up, `fall` consecutive
    /// failures make it down (HAProxy's meaning).
    pub fn record(
        &mut self,
        result: &Result<Duration, String>,
        latency: Duration,
        rise: u32,
        fall: u32,
    ) -> Option<BackendState> {
        let ok = result.is_ok();
        if ok {
            self.consecutive_ok += 1;
            self.consecutive_fail = 0;
            self.last_error = None;
        } else {
            self.consecutive_fail += 1;
            self.consecutive_ok = 0;
            self.last_error = result.as_ref().err().cloned();
        }
        self.last_latency_us = Some(latency.as_micros() as u64);
        self.history.push_back(ProbeRecord {
            at_unix_ms: now_unix_ms(),
            ok,
            latency_us: latency.as_micros() as u64,
        });
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
        let next = if ok && self.consecutive_ok >= rise {
            BackendState::Up
        } else if !ok && self.consecutive_fail >= fall {
            BackendState::Down
        } else {
            self.state
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

/// Every backend's health, keyed by (service name, colour).
pub struct HealthBoard {
    backends: Mutex<BTreeMap<(String, Colour), BackendHealth>>,
    /// Counts state changes and backend replacements. A watch, not a
    /// Notify: a change that lands while the controller is busy between two
    /// waits is still seen by its next wait, so it never falls back on a poll.
    changes: tokio::sync::watch::Sender<u64>,
}

impl HealthBoard {
    pub fn new(config: &Config) -> Self {
        let mut backends = BTreeMap::new();
        for svc in &config.services {
            for (colour, addr) in [(Colour::Blue, svc.blue), (Colour::Green, svc.green)] {
                backends.insert((svc.name.clone(), colour), BackendHealth::new(addr));
            }
        }
        Self {
            backends: Mutex::new(backends),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver whose `changed()` resolves on the next probe state change
    /// or backend replacement after the last one it saw.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn announce_change(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn get(&self, service: &str, colour: Colour) -> Option<BackendHealth> {
        self.backends
            .lock()
            .expect("poisoned")
            .get(&(service.to_owned(), colour))
            .cloned()
    }

    /// Why `colour` is not healthy: one line per backend that is not up.
    /// Empty when every backend of every service in that colour is up.
    pub fn problems(&self, colour: Colour) -> Vec<String> {
        let board = self.backends.lock().expect("poisoned");
        board
            .iter()
            .filter(|((_, c), h)| *c == colour && h.state != BackendState::Up)
            .map(|((service, _), h)| match h.state {
                BackendState::Down => format!(
                    "{service} backend {} is down ({} consecutive failures: {})",
                    h.backend,
                    h.consecutive_fail,
                    h.last_error.as_deref().unwrap_or("no detail")
                ),
                _ => format!(
                    "{service} backend {} is not up yet ({} of the successes needed{})",
                    h.backend,
                    h.consecutive_ok,
                    h.last_error
                        .as_deref()
                        .map(|e| format!("; last probe: {e}"))
                        .unwrap_or_default()
                ),
            })
            .collect()
    }

    /// The backend a colour of `service` currently points at.
    pub fn backend(&self, service: &str, colour: Colour) -> Option<SocketAddr> {
        self.get(service, colour).map(|h| h.backend)
    }

    /// Points a colour of `service` at a new backend; its health starts over.
    pub fn set_backend(&self, service: &str, colour: Colour, addr: SocketAddr) {
        let mut board = self.backends.lock().expect("poisoned");
        board.insert((service.to_owned(), colour), BackendHealth::new(addr));
        drop(board);
        self.announce_change();
    }

    /// Backends of `colour` that probes found down. Unlike `problems`, a
    /// backend not yet probed (after an agent restart) is no failure.
    pub fn failures(&self, colour: Colour) -> Vec<String> {
        let board = self.backends.lock().expect("poisoned");
        board
            .iter()
            .filter(|((_, c), h)| *c == colour && h.state == BackendState::Down)
            .map(|((service, _), h)| {
                format!(
                    "{service} backend {} is down ({} consecutive failures: {})",
                    h.backend,
                    h.consecutive_fail,
                    h.last_error.as_deref().unwrap_or("no detail")
                )
            })
            .collect()
    }

    /// Up with failures since its last success, down with successes, or
    /// not known yet: HAProxy probes at `fastinter` then.
    fn in_transition(&self, service: &str, colour: Colour) -> bool {
        let board = self.backends.lock().expect("poisoned");
        board
            .get(&(service.to_owned(), colour))
            .is_some_and(|h| match h.state {
                BackendState::Unknown => true,
                BackendState::Up => h.consecutive_fail > 0,
                BackendState::Down => h.consecutive_ok > 0,
            })
    }

    fn record(
        &self,
        service: &str,
        colour: Colour,
        result: &Result<Duration, String>,
        latency: Duration,
        check: &HealthCheck,
    ) -> Option<(BackendState, BackendHealth)> {
        let mut board = self.backends.lock().expect("poisoned");
        let h = board.get_mut(&(service.to_owned(), colour))?;
        let change = h
            .record(result, latency, check.rise, check.fall)
            .map(|s| (s, h.clone()));
        drop(board);
        if change.is_some() {
            self.announce_change();
        }
        change
    }
}

/// Whether the data path can deliver to a backend, asked after its probe
/// succeeded: (service, colour, backend, protocol, whether the probe just
/// sent traffic there). Err says why not; the probe then fails.
pub type PathCheck =
    Arc<dyn Fn(&str, Colour, SocketAddr, Protocol, bool) -> Result<(), String> + Send + Sync>;

/// Starts one probe task per backend. Each runs on its own timer, so a slow
/// probe never delays another.
pub fn spawn_probes(
    config: &Config,
    board: Arc<HealthBoard>,
    history: Arc<History>,
    metrics: Arc<crate::metrics::Metrics>,
    path: PathCheck,
) {
    for svc in &config.services {
        for colour in Colour::ALL {
            let check = svc.health.clone();
            let service = svc.name.clone();
            let protocol = svc.protocol;
            let (board, history, metrics, path) = (
                board.clone(),
                history.clone(),
                metrics.clone(),
                path.clone(),
            );
            tokio::spawn(async move {
                let mut next = tokio::time::Instant::now();
                let mut last_local_log: Option<Instant> = None;
                loop {
                    tokio::time::sleep_until(next).await;
                    let began = tokio::time::Instant::now();
                    // Read each time: a deployment may point the colour elsewhere.
                    let Some(addr) = board.backend(&service, colour) else {
                        return;
                    };
                    let started = Instant::now();
                    let outcome = probe(&check, addr, &service, colour).await;
                    let latency = started.elapsed();
                    let mut result = match outcome {
                        Ok(took) => Ok(took),
                        Err(ProbeError::Backend(e)) => Err(e),
                        Err(ProbeError::Local(e)) => {
                            // Not the backend's doing: record nothing, so
                            // its state (and any bake) stays as it was.
                            if last_local_log
                                .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(10))
                            {
                                log::warn!(
                                    "{service} {colour} backend {addr}: probe skipped, this host failed it: {e}"
                                );
                                last_local_log = Some(Instant::now());
                            }
                            next = (began + check.interval).max(tokio::time::Instant::now());
                            continue;
                        }
                    };
                    if result.is_ok() {
                        // The backend answered its probe; the data path must
                        // reach it too. Probes that sent it traffic made the
                        // kernel resolve its neighbour; an exec probe did not.
                        let sent = !matches!(check.probe, ProbeKind::Exec { .. });
                        if let Err(e) = path(&service, colour, addr, protocol, sent) {
                            result = Err(e);
                        }
                    }
                    metrics.observe_probe(&service, colour, latency.as_secs_f64());
                    if let Some((state, h)) =
                        board.record(&service, colour, &result, latency, &check)
                    {
                        let detail = h.last_error.clone().unwrap_or_default();
                        log::info!("{service} {colour} backend {addr}: {state:?} {detail}");
                        history.append(&Event::Probe {
                            service: service.clone(),
                            colour,
                            backend: addr,
                            state,
                            error: h.last_error,
                        });
                    }
                    // The next probe starts an interval after this one began
                    // (fastinter while the backend is in transition), or at
                    // once if this one took longer.
                    let gap = if board.in_transition(&service, colour) {
                        check.fastinter
                    } else {
                        check.interval
                    };
                    next = (began + gap).max(tokio::time::Instant::now());
                }
            });
        }
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
        if crate::resources::is_local_exhaustion(&e) {
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

/// Runs one probe with the check's timeout; Ok carries its latency.
pub async fn probe(
    check: &HealthCheck,
    addr: SocketAddr,
    service: &str,
    colour: Colour,
) -> Result<Duration, ProbeError> {
    let started = Instant::now();
    let attempt = async {
        match &check.probe {
            ProbeKind::Tcp => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(ProbeError::from),
            ProbeKind::Udp { payload } => probe_udp(addr, *payload, check.timeout).await,
            ProbeKind::Http {
                port,
                path,
                expect_body,
            } => {
                probe_http(
                    SocketAddr::new(addr.ip(), *port),
                    path,
                    expect_body.as_deref(),
                )
                .await
            }
            ProbeKind::Exec { command } => {
                probe_exec(command, addr, service, colour, check.timeout).await
            }
            ProbeKind::Relp { tls } => {
                let (tls, timeout) = (tls.clone(), check.timeout);
                blocking(move || crate::relp::probe(addr, tls.as_ref(), timeout)).await
            }
            ProbeKind::Tls { tls } => {
                let (tls, timeout) = (tls.clone(), check.timeout);
                blocking(move || crate::tls::probe(&tls, addr, timeout)).await
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeError::Backend(format!(
            "timed out after {} ms",
            check.timeout.as_millis()
        ))),
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

/// Sends a syslog probe over a connected socket, then listens briefly: the
/// kernel reports an ICMP port-unreachable as ECONNREFUSED on the socket.
/// Silence means nothing refused it, which is all UDP can tell.
async fn probe_udp(
    addr: SocketAddr,
    payload: UdpPayload,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("static");
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(addr).await?;
    socket
        .send(match payload {
            UdpPayload::Empty => &[][..],
            UdpPayload::Tagged => UDP_PROBE_MESSAGE,
        })
        .await?;
    let mut buf = [0u8; 64];
    let wait = (timeout / 2).min(Duration::from_millis(200));
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(ProbeError::Backend("port unreachable (ICMP)".into()))
        }
        Ok(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// A minimal HTTP/1.0 GET: the health endpoints of collectors (Vector,
/// Fluent Bit) answer plain HTTP on a local port.
async fn probe_http(
    addr: SocketAddr,
    path: &str,
    expect_body: Option<&str>,
) -> Result<(), ProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::io(e, |e| format!("{addr}: {e}")))?;
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{}\r\nUser-Agent: bluegreen\r\nConnection: close\r\n\r\n",
        addr.port()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // Health answers are small; cap what we read.
    stream.take(64 * 1024).read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "no HTTP status line in the answer".to_string())?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}").into());
    }
    if let Some(needle) = expect_body {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !body.contains(needle) {
            return Err(format!("HTTP {status} but the body lacks {needle:?}").into());
        }
    }
    Ok(())
}

async fn probe_exec(
    command: &[String],
    addr: SocketAddr,
    service: &str,
    colour: Colour,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let env = [
        ("BG_SERVICE", service.to_owned()),
        ("BG_COLOUR", colour.to_string()),
        ("BG_BACKEND_ADDR", addr.ip().to_string()),
        ("BG_BACKEND_PORT", addr.port().to_string()),
    ];
    crate::command::run(command, &env, timeout, crate::command::Output::Discard)
        .await
        .map_err(|e| match e.io() {
            // Fork or exec failing for want of resources is this host's doing.
            Some(io) if crate::resources::is_local_exhaustion(io) => {
                ProbeError::Local(e.to_string())
            }
            _ => ProbeError::Backend(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "198.18.1.2:514".parse().unwrap()
    }

    /// One UDP service "s", with the default health settings.
    fn one_udp_service() -> Config {
        Config::parse(
            std::path::Path::new("t.toml"),
            "[[service]]\nname = \"s\"\nprotocol = \"udp\"\nlisten = \"0.0.0.0:514\"\nblue = \"198.18.1.2:514\"\ngreen = \"198.18.2.2:514\"\n",
        )
        .unwrap()
    }

    #[test]
    fn transitions_are_what_haproxy_probes_at_fastinter() {
        let config = one_udp_service();
        let board = HealthBoard::new(&config);
        let check = config.services[0].health.clone();
        let (ok, bad): (Result<Duration, String>, _) = (Ok(Duration::ZERO), Err("x".to_owned()));
        let d = Duration::ZERO;
        let mut seen = vec![board.in_transition("s", Colour::Blue)];
        for r in [&ok, &ok, &bad, &ok, &bad, &bad, &bad, &ok, &ok] {
            board.record("s", Colour::Blue, r, d, &check);
            seen.push(board.in_transition("s", Colour::Blue));
        }
        // unknown; ok (still unknown, rise 2); up; up with a failure; up
        // again clean; failing; failing; down; down with a success; up.
        assert_eq!(
            seen,
            [
                true, true, false, true, false, true, true, false, true, false
            ]
        );
        assert!(!board.in_transition("nope", Colour::Blue));
    }

    /// The deployment controller wakes on every probe state change, not only
    /// on backend replacements, and a change made before it waits is kept.
    #[test]
    fn every_state_change_is_announced() {
        let config = one_udp_service();
        let board = HealthBoard::new(&config);
        let mut seen = board.subscribe();
        let check = config.services[0].health.clone();
        let (ok, bad): (Result<Duration, String>, _) = (Ok(Duration::ZERO), Err("x".to_owned()));
        let d = Duration::ZERO;
        board.record("s", Colour::Green, &ok, d, &check);
        assert!(!seen.has_changed().unwrap(), "unknown after 1 of rise 2");
        board.record("s", Colour::Green, &ok, d, &check);
        assert!(seen.has_changed().unwrap(), "unknown -> up is announced");
        seen.mark_unchanged();
        for _ in 0..check.fall - 1 {
            board.record("s", Colour::Green, &bad, d, &check);
        }
        assert!(!seen.has_changed().unwrap(), "failures below fall");
        board.record("s", Colour::Green, &bad, d, &check);
        assert!(seen.has_changed().unwrap(), "up -> down is announced");
        seen.mark_unchanged();
        board.set_backend("s", Colour::Green, "198.18.2.3:514".parse().unwrap());
        assert!(seen.has_changed().unwrap(), "a new backend is announced");
    }

    #[test]
    fn rise_and_fall_follow_haproxy() {
        let mut h = BackendHealth::new(addr());
        let ok: Result<Duration, String> = Ok(Duration::from_micros(300));
        let bad: Result<Duration, String> = Err("refused".into());
        let d = Duration::from_micros(300);
        assert_eq!(
            h.record(&ok, d, 2, 3),
            None,
            "one success is not yet rise 2"
        );
        assert_eq!(h.record(&ok, d, 2, 3), Some(BackendState::Up));
        assert_eq!(h.record(&bad, d, 2, 3), None);
        assert_eq!(h.record(&bad, d, 2, 3), None);
        assert_eq!(
            h.record(&ok, d, 2, 3),
            None,
            "a success resets the failure run"
        );
        for _ in 0..2 {
            assert_eq!(h.record(&bad, d, 2, 3), None);
        }
        assert_eq!(h.record(&bad, d, 2, 3), Some(BackendState::Down));
        assert_eq!(h.last_error.as_deref(), Some("refused"));
        assert_eq!(h.consecutive_fail, 3);
        assert_eq!(h.last_latency_us, Some(300));
    }

    #[test]
    fn history_is_bounded() {
        let mut h = BackendHealth::new(addr());
        for _ in 0..200 {
            h.record(&Ok(Duration::ZERO), Duration::ZERO, 1, 1);
        }
        assert_eq!(h.history.len(), HISTORY_LEN);
    }

    fn check(probe: ProbeKind) -> HealthCheck {
        HealthCheck {
            probe,
            interval: Duration::from_millis(500),
            fastinter: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        }
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
            probe(&check(ProbeKind::Tcp), up, "s", Colour::Blue)
                .await
                .is_ok()
        );
        assert!(
            probe(&check(ProbeKind::Tcp), closed, "s", Colour::Blue)
                .await
                .is_err()
        );

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_up = udp.local_addr().unwrap();
        let empty = check(ProbeKind::Udp {
            payload: UdpPayload::Empty,
        });
        let tagged = check(ProbeKind::Udp {
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

        let yes = check(ProbeKind::Exec {
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
        let slow = check(ProbeKind::Exec {
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
        let http = check(ProbeKind::Http {
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
    use super::*;

    /// Out of file descriptors, a probe fails as the host's, not the
    /// backend's, so its state does not change. Exhausting descriptors would
    /// starve the tests beside this one: the work runs in a child process.
    #[test]
    fn a_probe_that_cannot_open_a_socket_blames_this_host() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--nocapture"])
            .arg("health::local_exhaustion::out_of_descriptors")
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
        let check = HealthCheck {
            probe: ProbeKind::Tcp,
            interval: Duration::from_millis(500),
            fastinter: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 1,
        };
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
