//! What keeps the HTTP server from hurting the agent or being misused: a
//! cap on connections (accepting waits at the cap, so idle clients queue in
//! the kernel instead of eating the agent's file descriptors), a cap on
//! event streams, accept errors that back off instead of spinning, the
//! token checked before a body is read, and a Host check against DNS
//! rebinding.
use std::{
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// Connections the HTTP server holds at once: a quarter of the open-file
/// limit, at least 16 and at most 1024. Probes, maps and the control socket
/// keep the rest.
pub fn connection_cap() -> usize {
    (crate::host::resources::open_file_limit() / 4).clamp(16, 1024) as usize
}

/// A listener that accepts only while it holds fewer than its cap of
/// connections, and backs off on accept errors (logged once a second).
pub struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    last_error_log: Option<Instant>,
}

impl CappedListener {
    pub fn new(inner: TcpListener, cap: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(cap)),
            last_error_log: None,
        }
    }
}

/// The HTTP client's address, for the history's audit trail.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, CappedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, CappedListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Capped;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    return (
                        Capped {
                            io,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    if self
                        .last_error_log
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                    {
                        log::warn!("HTTP accept: {e}; backing off");
                        self.last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection, holding its place under the cap until it closes.
pub struct Capped {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Hosts a request may name besides IP literals and `localhost`: DNS
/// rebinding needs a name the attacker controls, so only names an operator
/// allows (`--http-host`) pass.
#[derive(Clone, Default)]
pub struct AllowedHosts(pub Arc<Vec<String>>);

impl AllowedHosts {
    fn allows(&self, host: &str) -> bool {
        let name = host_name(host);
        name.eq_ignore_ascii_case("localhost")
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
            || self.0.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// The host part of a Host header: without the port, brackets kept.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Refuses a request whose Host header names a host nobody allowed (403).
/// A request without one (HTTP/1.0 tools) passes: browsers always send it.
pub async fn check_host(State(hosts): State<AllowedHosts>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned());
    match host {
        Some(h) if !hosts.allows(&h) => error(
            StatusCode::FORBIDDEN,
            format!(
                "Host {h:?} is not one this agent answers to (a DNS rebinding defence); accepted: an IP address, localhost, or a name given with --http-host"
            ),
        ),
        _ => next.run(req).await,
    }
}

/// The token, checked from the headers alone, before any body is read.
pub async fn require_token(
    State(token): State<Arc<String>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if crate::store::token::matches(&token, t) => next.run(req).await,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs the header `Authorization: Bearer <token>`; `bgctl token` prints the token".into(),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            // Whatever body was sent is not read: close rather than drain it.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

/// A JSON error body: `{"error": "..."}`, as every API error.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_or_allowed_names() {
        let hosts = AllowedHosts(Arc::new(vec!["bg.example.net".into()]));
        for ok in [
            "127.0.0.1:9514",
            "[::1]:9514",
            "localhost:9514",
            "LOCALHOST",
            "198.18.0.1",
            "bg.example.net:9514",
            "[2001:db8::1]",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:9514",
            "127.0.0.1.nip.io:9514",
            "bg.example.net.evil",
            "",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }
}
