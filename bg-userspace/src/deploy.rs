//! The deployment controller: `bgctl deploy green` runs prepare,
//! wait-healthy, validate, switch, bake and complete, and rolls back by
//! itself when the new colour fails during bake.
use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{colour::Colour, config::Protocol, state::now_unix_ms};

/// In order: a later phase never runs before an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Prepare,
    WaitHealthy,
    Validate,
    Switch,
    Bake,
    /// Switched and baked; the old colour is kept warm for a while.
    Complete,
    /// Finished: the old colour is idle.
    Done,
    /// Failed during bake (or aborted after the switch): flipped back.
    RolledBack,
    /// Stopped before any traffic moved.
    Failed,
    /// Stopped by `bgctl abort` before the switch.
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Prepare,
        Phase::WaitHealthy,
        Phase::Validate,
        Phase::Switch,
        Phase::Bake,
        Phase::Complete,
        Phase::Done,
        Phase::RolledBack,
        Phase::Failed,
        Phase::Aborted,
    ];

    /// The name used on the wire, in the history and in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::WaitHealthy => "wait-healthy",
            Phase::Validate => "validate",
            Phase::Switch => "switch",
            Phase::Bake => "bake",
            Phase::Complete => "complete",
            Phase::Done => "done",
            Phase::RolledBack => "rolled-back",
            Phase::Failed => "failed",
            Phase::Aborted => "aborted",
        }
    }

    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Done | Self::RolledBack | Self::Failed | Self::Aborted
        )
    }
}

/// The performance gate's verdict for one service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub service: String,
    pub backend: SocketAddr,
    pub protocol: Protocol,
    pub sent: u64,
    /// TCP: messages the backend's TCP acknowledged. UDP has no receipt:
    /// None.
    pub delivered: Option<u64>,
    /// UDP: datagrams refused by an ICMP port-unreachable. None for TCP.
    #[serde(default)]
    pub refused: Option<u64>,
    /// The share of `sent` acknowledged (TCP) or not refused (UDP).
    #[serde(alias = "delivered_ratio")]
    pub ratio: f64,
    /// TCP: 99th percentile from write to acknowledgement, in ms.
    pub p99_ms: Option<f64>,
    /// Acknowledged (TCP) or not refused (UDP) messages per second.
    pub throughput: f64,
    pub passed: bool,
    /// Which threshold failed, if any.
    pub detail: String,
    /// What the gate could and could not know about this backend.
    #[serde(default)]
    pub evidence: String,
}

/// What a UDP gate (and a UDP probe) can know, said wherever it passes.
pub const UDP_EVIDENCE: &str = "not refused (no ICMP port-unreachable), and the data path reaches the host; UDP has no receipt, so it cannot confirm that the collector received or stored anything. An http or exec probe can";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub colour: Colour,
    pub from: Colour,
    pub version: Option<String>,
    pub phase: Phase,
    pub started_unix_ms: u64,
    pub phase_started_unix_ms: u64,
    /// Why it failed, rolled back or was aborted.
    pub reason: Option<String>,
    pub gate: Vec<GateResult>,
    /// Backends this deployment puts in place (service name, address).
    #[serde(default)]
    pub backends: Vec<(String, SocketAddr)>,
}

impl Deployment {
    pub fn new(colour: Colour, version: Option<String>) -> Self {
        let now = now_unix_ms();
        Self {
            id: format!("d{now}"),
            colour,
            from: colour.other(),
            version,
            phase: Phase::Prepare,
            started_unix_ms: now,
            phase_started_unix_ms: now,
            reason: None,
            gate: Vec::new(),
            backends: Vec::new(),
        }
    }
}

/// `[deploy]` settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeploySettings {
    pub healthy_timeout_s: u64,
    pub bake_s: u64,
    pub keep_warm_s: u64,
    /// Synthetic messages sent to each backend of the new colour.
    pub validate_messages: u32,
    /// Their rate, messages per second.
    pub validate_rate: u32,
    pub min_delivered_ratio: f64,
    pub max_p99_ms: f64,
    /// Delivered messages per second; 0 disables the check.
    pub min_throughput: f64,
    pub pre_switch: Option<Vec<String>>,
    pub post_switch: Option<Vec<String>>,
    pub rollback: Option<Vec<String>>,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            healthy_timeout_s: 60,
            bake_s: 30,
            keep_warm_s: 60,
            validate_messages: 1000,
            validate_rate: 5000,
            min_delivered_ratio: 1.0,
            max_p99_ms: 200.0,
            min_throughput: 0.0,
            pre_switch: None,
            post_switch: None,
            rollback: None,
        }
    }
}

/// Tag of the synthetic messages, so collectors can drop them.
pub const VALIDATE_TAG: &str = "bluegreen-validate";

/// Sends the gate's synthetic load straight to one backend and judges it.
/// TCP: per-message latency from the write to the kernel's acknowledgement
/// of its last byte (TCP_INFO bytes_acked); delivered = acknowledged.
/// UDP: delivered = not refused by an ICMP port-unreachable; UDP gives no
/// latency.
pub fn validate_backend(
    service: &str,
    protocol: Protocol,
    backend: SocketAddr,
    s: &DeploySettings,
) -> GateResult {
    let n = u64::from(s.validate_messages);
    let started = Instant::now();
    let (passed_n, p99_ms, load_error, delivered, refused) = match protocol {
        Protocol::Tcp => match tcp_load(backend, s) {
            Ok((acked, mut latencies)) => {
                latencies.sort_by(f64::total_cmp);
                let p99 = latencies
                    .get(
                        ((latencies.len() as f64 * 0.99) as usize)
                            .min(latencies.len().saturating_sub(1)),
                    )
                    .copied();
                (acked, p99, String::new(), Some(acked), None)
            }
            Err(e) => (0, None, e, Some(0), None),
        },
        Protocol::Udp => match udp_load(backend, s) {
            Ok(refused) => (
                n.saturating_sub(refused),
                None,
                String::new(),
                None,
                Some(refused),
            ),
            Err(e) => (0, None, e, None, Some(n)),
        },
    };
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let ratio = if n == 0 {
        1.0
    } else {
        passed_n as f64 / n as f64
    };
    let throughput = passed_n as f64 / elapsed;
    let mut fails = Vec::new();
    if !load_error.is_empty() {
        fails.push(load_error);
    }
    if ratio < s.min_delivered_ratio {
        fails.push(match protocol {
            Protocol::Tcp => format!(
                "acknowledged {passed_n}/{n} ({:.1}%) < min_delivered_ratio {}",
                ratio * 100.0,
                s.min_delivered_ratio
            ),
            Protocol::Udp => format!(
                "{} of {n} refused by ICMP; not refused {:.1}% < min_delivered_ratio {}",
                n - passed_n,
                ratio * 100.0,
                s.min_delivered_ratio
            ),
        });
    }
    if let Some(p) = p99_ms
        && p > s.max_p99_ms
    {
        fails.push(format!("p99 {p:.1} ms > max_p99_ms {}", s.max_p99_ms));
    }
    if s.min_throughput > 0.0 && throughput < s.min_throughput {
        fails.push(format!(
            "throughput {throughput:.0}/s < min_throughput {}",
            s.min_throughput
        ));
    }
    GateResult {
        service: service.to_owned(),
        backend,
        protocol,
        sent: n,
        delivered,
        refused,
        ratio,
        p99_ms,
        throughput,
        passed: fails.is_empty(),
        detail: fails.join("; "),
        evidence: match protocol {
            Protocol::Tcp => "acknowledged by the backend's TCP".into(),
            Protocol::Udp => UDP_EVIDENCE.into(),
        },
    }
}

fn pace(started: Instant, i: u64, rate: u32) {
    let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate.max(1)));
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

fn tcp_bytes_acked(stream: &std::net::TcpStream) -> u64 {
    // SAFETY: getsockopt into a zeroed tcp_info of the right size.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        if rc == 0 { info.tcpi_bytes_acked } else { 0 }
    }
}

/// Returns (acknowledged messages, latency of each in ms).
fn tcp_load(backend: SocketAddr, s: &DeploySettings) -> Result<(u64, Vec<f64>), String> {
    use std::io::Write;
    let stream = std::net::TcpStream::connect_timeout(&backend, Duration::from_secs(2))
        .map_err(|e| format!("connect {backend}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    // bytes_acked counts the SYN: the first data byte is acked at 2.
    let base = tcp_bytes_acked(&stream);
    let mut pending: std::collections::VecDeque<(u64, Instant)> = std::collections::VecDeque::new();
    let mut latencies = Vec::new();
    let mut offset = 0u64;
    let started = Instant::now();
    let collect = |pending: &mut std::collections::VecDeque<(u64, Instant)>,
                   latencies: &mut Vec<f64>| {
        let acked = tcp_bytes_acked(&stream).saturating_sub(base);
        while pending.front().is_some_and(|(end, _)| *end <= acked) {
            let (_, at) = pending.pop_front().expect("checked");
            latencies.push(at.elapsed().as_secs_f64() * 1000.0);
        }
    };
    for i in 0..u64::from(s.validate_messages) {
        pace(started, i, s.validate_rate);
        let msg = format!("<14>{VALIDATE_TAG}: validation message {i}");
        let frame = format!("{} {msg}", msg.len());
        if (&stream).write_all(frame.as_bytes()).is_err() {
            break; // a stalled or closed backend: what was acked counts
        }
        offset += frame.len() as u64;
        pending.push_back((offset, Instant::now()));
        collect(&mut pending, &mut latencies);
    }
    // Wait (bounded) for the rest to be acknowledged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        collect(&mut pending, &mut latencies);
    }
    Ok((latencies.len() as u64, latencies))
}

/// Returns how many datagrams an ICMP port-unreachable refused.
fn udp_load(backend: SocketAddr, s: &DeploySettings) -> Result<u64, String> {
    let bind: SocketAddr = if backend.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("static");
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    socket.connect(backend).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut refused = 0u64;
    for i in 0..u64::from(s.validate_messages) {
        pace(started, i, s.validate_rate);
        let msg = format!("<14>{VALIDATE_TAG}: validation message {i}");
        // An ICMP port-unreachable for an earlier datagram surfaces here.
        if socket.send(msg.as_bytes()).is_err() {
            refused += 1;
        }
    }
    // A last refusal arrives asynchronously.
    std::thread::sleep(Duration::from_millis(20));
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    if let Err(e) = socket.recv(&mut buf)
        && e.kind() == std::io::ErrorKind::ConnectionRefused
    {
        refused += 1;
    }
    Ok(refused.min(u64::from(s.validate_messages)))
}

/// Runs a hook command with the deployment in its environment. Ok when it
/// exits 0 within `timeout`.
pub async fn run_hook(
    name: &str,
    command: &[String],
    d: &Deployment,
    timeout: Duration,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .env("BG_HOOK", name)
        .env("BG_COLOUR", d.colour.to_string())
        .env("BG_FROM", d.from.to_string())
        .env("BG_VERSION", d.version.clone().unwrap_or_default())
        .env("BG_DEPLOYMENT_ID", &d.id)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(timeout, cmd.status()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{name} hook {:?} exited with {status}", command[0])),
        Ok(Err(e)) => Err(format!("{name} hook {:?}: {e}", command[0])),
        Err(_) => Err(format!(
            "{name} hook {:?} timed out after {} s",
            command[0],
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_match_the_wire_format() {
        for p in Phase::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }

    fn settings(n: u32) -> DeploySettings {
        DeploySettings {
            validate_messages: n,
            validate_rate: 10_000,
            ..DeploySettings::default()
        }
    }

    #[test]
    fn a_reading_tcp_backend_passes_and_a_stalled_one_fails() {
        let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = good.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let (mut s, _) = good.accept().unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
            sink
        });
        let r = validate_backend("svc", Protocol::Tcp, addr, &settings(500));
        assert!(r.passed, "{r:?}");
        assert_eq!(r.delivered, Some(500));
        assert!(r.p99_ms.is_some());

        // A backend that accepts but never reads: its window closes and the
        // load is not acknowledged in time.
        let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = stalled.local_addr().unwrap();
        let hold = std::thread::spawn(move || {
            let (s, _) = stalled.accept().unwrap();
            std::thread::sleep(Duration::from_secs(8));
            drop(s);
        });
        let mut big = settings(20_000);
        big.validate_rate = 200_000;
        let r = validate_backend("svc", Protocol::Tcp, addr, &big);
        assert!(!r.passed && r.delivered.unwrap() < 20_000, "{r:?}");
        assert!(r.detail.contains("min_delivered_ratio"), "{}", r.detail);
        drop(reader);
        drop(hold);
    }

    #[test]
    fn udp_refusals_count_as_undelivered() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = validate_backend("svc", Protocol::Udp, closed, &settings(50));
        assert!(!r.passed && r.refused.unwrap() > 0, "{r:?}");
        assert!(r.detail.contains("refused by ICMP"), "{}", r.detail);
        let open = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = validate_backend(
            "svc",
            Protocol::Udp,
            open.local_addr().unwrap(),
            &settings(50),
        );
        assert!(r.passed, "{r:?}");
        // Silence is not delivery: the result never claims any.
        assert_eq!((r.delivered, r.refused), (None, Some(0)));
        assert!(r.evidence.contains("cannot confirm"), "{}", r.evidence);
    }
}
