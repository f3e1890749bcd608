//! The deployment's performance gate: synthetic load sent straight to each
//! backend of the new colour, in the protocol it speaks, and the verdict.
use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use crate::{
    config::DeploySettings,
    model::{AppProtocol, GateResult, Protocol, UDP_EVIDENCE},
    transport::{relp, tls::TlsClient},
};

/// Tag of the synthetic messages, so collectors can drop them.
pub const VALIDATE_TAG: &str = "bluegreen-validate";

/// A backend the gate validates, and what it speaks.
#[derive(Clone, Debug)]
pub struct GateTarget {
    pub service: String,
    pub protocol: Protocol,
    pub app: AppProtocol,
    pub tls: Option<TlsClient>,
    pub backend: SocketAddr,
}

/// Sends the gate's synthetic load straight to one backend, in the
/// protocol it speaks, and judges it:
/// - syslog over TCP, or over TLS: per-message latency from the write to
///   the kernel's acknowledgement of its last byte (TCP_INFO bytes_acked);
///   delivered = acknowledged;
/// - RELP: the server's own acknowledgement of each message (`rsp 200`);
/// - UDP: nothing acknowledges a datagram: refused ones are counted (ICMP
///   port-unreachable), never "delivered" ones.
pub fn validate_backend(t: &GateTarget, s: &DeploySettings) -> GateResult {
    let (service, protocol, backend) = (t.service.as_str(), t.protocol, t.backend);
    let n = u64::from(s.validate_messages);
    let started = Instant::now();
    let acked = |r: Result<(u64, Vec<f64>), String>| match r {
        Ok((acked, latencies)) => (acked, p99(latencies), String::new(), Some(acked), None),
        Err(e) => (0, None, e, Some(0), None),
    };
    let (passed_n, p99_ms, load_error, delivered, refused) = match (protocol, t.app) {
        (Protocol::Udp, _) => match udp_load(backend, s) {
            Ok(refused) => (
                n.saturating_sub(refused),
                None,
                String::new(),
                None,
                Some(refused),
            ),
            Err(e) => (0, None, e, None, Some(n)),
        },
        (Protocol::Tcp, AppProtocol::Relp) => acked(relp_load(backend, t.tls.as_ref(), s)),
        (Protocol::Tcp, AppProtocol::Tls) => match &t.tls {
            Some(tls) => acked(tls_load(backend, tls, s)),
            None => acked(Err("a TLS service without TLS settings".into())),
        },
        (Protocol::Tcp, AppProtocol::Syslog) => acked(tcp_load(backend, s)),
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
        evidence: match (protocol, t.app) {
            (Protocol::Udp, _) => UDP_EVIDENCE.into(),
            (_, AppProtocol::Relp) => "acknowledged by the backend's RELP server (rsp 200)".into(),
            (_, AppProtocol::Tls) => "acknowledged by the backend's TCP, over TLS".into(),
            (_, AppProtocol::Syslog) => "acknowledged by the backend's TCP".into(),
        },
    }
}

fn pace(started: Instant, i: u64, rate: u32) {
    let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate.max(1)));
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// The 99th percentile of latencies, in ms.
fn p99(mut latencies: Vec<f64>) -> Option<f64> {
    latencies.sort_by(f64::total_cmp);
    latencies
        .get(((latencies.len() as f64 * 0.99) as usize).min(latencies.len().saturating_sub(1)))
        .copied()
}

/// Payload bytes the peer's TCP acknowledged (bytes_acked counts the SYN).
fn tcp_bytes_acked(stream: &std::net::TcpStream) -> u64 {
    // SAFETY: getsockopt into a zeroed tcp_info of the right size.
    let acked = unsafe {
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
    };
    acked.saturating_sub(1)
}

/// A socket that counts the bytes written through it: with TLS, what the
/// kernel must acknowledge is the records, not the plaintext.
struct Counted {
    sock: std::net::TcpStream,
    written: u64,
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.sock.read(buf)
    }
}

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.sock.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sock.flush()
    }
}

fn connect(backend: SocketAddr) -> Result<std::net::TcpStream, String> {
    let stream = std::net::TcpStream::connect_timeout(&backend, Duration::from_secs(2))
        .map_err(|e| format!("connect {backend}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Octet-counted syslog over plain TCP. Returns (acknowledged messages,
/// latency of each in ms).
fn tcp_load(backend: SocketAddr, s: &DeploySettings) -> Result<(u64, Vec<f64>), String> {
    let sock = connect(backend)?;
    let raw = sock.try_clone().map_err(|e| e.to_string())?;
    let mut w = Counted { sock, written: 0 };
    Ok(stream_load(&raw, &mut w, |w| w.written, s))
}

/// Octet-counted syslog over TLS (RFC 5425), acknowledged as over TCP:
/// each message's TLS record is counted as it leaves.
fn tls_load(
    backend: SocketAddr,
    tls: &TlsClient,
    s: &DeploySettings,
) -> Result<(u64, Vec<f64>), String> {
    let sock = connect(backend)?;
    let raw = sock.try_clone().map_err(|e| e.to_string())?;
    let mut stream = tls
        .handshake(Counted { sock, written: 0 }, backend)
        .map_err(|e| e.to_string())?;
    let result = stream_load(&raw, &mut stream, |t| t.sock.written, s);
    stream.conn.send_close_notify();
    let _ = std::io::Write::flush(&mut stream);
    Ok(result)
}

/// Writes the load through `writer` and times each message until `raw`'s
/// TCP acknowledged the byte `written` reported after it.
fn stream_load<W: std::io::Write>(
    raw: &std::net::TcpStream,
    writer: &mut W,
    written: impl Fn(&W) -> u64,
    s: &DeploySettings,
) -> (u64, Vec<f64>) {
    let mut pending: std::collections::VecDeque<(u64, Instant)> = std::collections::VecDeque::new();
    let mut latencies = Vec::new();
    let started = Instant::now();
    let collect = |pending: &mut std::collections::VecDeque<(u64, Instant)>,
                   latencies: &mut Vec<f64>| {
        let acked = tcp_bytes_acked(raw);
        while pending.front().is_some_and(|(end, _)| *end <= acked) {
            let (_, at) = pending.pop_front().expect("checked");
            latencies.push(at.elapsed().as_secs_f64() * 1000.0);
        }
    };
    for i in 0..u64::from(s.validate_messages) {
        pace(started, i, s.validate_rate);
        let msg = format!("<14>{VALIDATE_TAG}: validation message {i}");
        let frame = format!("{} {msg}", msg.len());
        if writer
            .write_all(frame.as_bytes())
            .and_then(|()| writer.flush())
            .is_err()
        {
            break; // a stalled or closed backend: what was acked counts
        }
        pending.push_back((written(writer), Instant::now()));
        collect(&mut pending, &mut latencies);
    }
    // Wait (bounded) for the rest to be acknowledged.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        collect(&mut pending, &mut latencies);
    }
    (latencies.len() as u64, latencies)
}

/// Messages a RELP client may have unacknowledged (librelp's window is 128).
const RELP_WINDOW: usize = 64;

/// RELP: each message acknowledged by the server (`rsp 200`), its latency
/// from the send to that answer.
fn relp_load(
    backend: SocketAddr,
    tls: Option<&TlsClient>,
    s: &DeploySettings,
) -> Result<(u64, Vec<f64>), String> {
    match tls {
        Some(tls) => relp_session_load(
            tls.connect(backend, Duration::from_secs(2))
                .map_err(|e| e.to_string())?,
            s,
        ),
        None => relp_session_load(connect(backend)?, s),
    }
}

fn relp_session_load<S: std::io::Read + std::io::Write>(
    stream: S,
    s: &DeploySettings,
) -> Result<(u64, Vec<f64>), String> {
    let mut session = relp::Session::open(stream).map_err(|e| e.to_string())?;
    let mut pending: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    // An answer other than 200 is a message the server did not take.
    let mut read_one = |session: &mut relp::Session<S>,
                        pending: &mut std::collections::HashMap<u64, Instant>|
     -> std::io::Result<()> {
        let f = session.read_frame()?;
        if let Some(sent) = pending.remove(&f.txnr)
            && f.status() == Some(200)
        {
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    };
    let started = Instant::now();
    for i in 0..u64::from(s.validate_messages) {
        pace(started, i, s.validate_rate);
        while pending.len() >= RELP_WINDOW {
            if read_one(&mut session, &mut pending).is_err() {
                return Ok((latencies.len() as u64, latencies));
            }
        }
        let msg = format!("<14>{VALIDATE_TAG}: validation message {i}");
        match session.send("syslog", msg.as_bytes()) {
            Ok(txnr) => {
                pending.insert(txnr, Instant::now());
            }
            Err(_) => break, // what was acknowledged counts
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pending.is_empty() && Instant::now() < deadline {
        if read_one(&mut session, &mut pending).is_err() {
            break;
        }
    }
    // A clean close, so the server logs no broken session.
    let _ = session.close();
    Ok((latencies.len() as u64, latencies))
}

/// Returns how many datagrams an ICMP port-unreachable refused.
fn udp_load(backend: SocketAddr, s: &DeploySettings) -> Result<u64, String> {
    let socket = std::net::UdpSocket::bind(crate::transport::any_port_for(backend))
        .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(protocol: Protocol, backend: SocketAddr) -> GateTarget {
        GateTarget {
            service: "svc".into(),
            protocol,
            app: AppProtocol::Syslog,
            tls: None,
            backend,
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
        let r = validate_backend(&target(Protocol::Tcp, addr), &settings(500));
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
        let r = validate_backend(&target(Protocol::Tcp, addr), &big);
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
        let r = validate_backend(&target(Protocol::Udp, closed), &settings(50));
        assert!(!r.passed && r.refused.unwrap() > 0, "{r:?}");
        assert!(r.detail.contains("refused by ICMP"), "{}", r.detail);
        let open = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = validate_backend(
            &target(Protocol::Udp, open.local_addr().unwrap()),
            &settings(50),
        );
        assert!(r.passed, "{r:?}");
        // Silence is not delivery: the result never claims any.
        assert_eq!((r.delivered, r.refused), (None, Some(0)));
        assert!(r.evidence.contains("cannot confirm"), "{}", r.evidence);
    }
}
