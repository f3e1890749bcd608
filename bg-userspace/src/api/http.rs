//! The agent's HTTP server (axum): the dashboard, a JSON API, a live event
//! stream and Prometheus metrics. Reads need no token; mutations need the
//! bearer token and take the same gated paths as the CLI.
use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Query, State},
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{
        Html, IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post},
};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_stream::{StreamExt as _, wrappers::BroadcastStream};

use super::{
    Api,
    http_guard::{self, AllowedHosts, Peer},
    protocol::{Request, Response as Reply},
};
use crate::{
    core::ErrorKind,
    deploy::steps,
    model::{Actor, Colour, Weight},
};

/// The dashboard: one page, its script and style inline, so it works with
/// no internet access.
const DASHBOARD: &str = include_str!("dashboard.html");
/// Most history entries one request returns.
const HISTORY_MAX: usize = 10_000;

pub fn router(api: Arc<Api>, hosts: AllowedHosts) -> Router {
    // The token is checked from the headers, before a body is read.
    let mutations = Router::new()
        .route("/api/flip", post(flip))
        .route("/api/shift", post(shift))
        .route("/api/promote", post(promote))
        .route("/api/rollback", post(rollback))
        .route("/api/deploy", post(deploy))
        .route("/api/abort", post(abort))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(api.token.clone()),
            http_guard::require_token,
        ));
    Router::new()
        .route("/", get(dashboard))
        .route("/api/status", get(status))
        .route("/api/history", get(history))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .merge(mutations)
        .layer(middleware::from_fn_with_state(
            hosts,
            http_guard::check_host,
        ))
        .with_state(api)
}

/// Serves until `stop`, holding at most `connection_cap()` connections
/// and half that many event streams; then stops accepting and returns
/// once the requests taken are answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    hosts: AllowedHosts,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let cap = http_guard::connection_cap();
    log::info!("HTTP: at most {cap} connections, {} event streams", cap / 2);
    let _ = api.event_streams.set(Arc::new(Semaphore::new(cap / 2)));
    let listener = http_guard::CappedListener::new(listener, cap);
    let app = router(api, hosts).into_make_service_with_connect_info::<Peer>();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        log::warn!("HTTP server stopped: {e}");
    }
}

/// The variable a reload hands the HTTP listener over in.
pub const HANDOVER: &str = "BGCTL_HTTP_FD";

/// Binds the HTTP address before anything else changes, so a bad or busy
/// address stops the agent with a clear error. After a reload, the
/// listener the earlier image handed over, when it listens on `addr`.
pub fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = match inherit(addr) {
        Some(l) => l,
        None => fresh(addr)?,
    };
    listener.set_nonblocking(true)?;
    if !addr.ip().is_loopback() {
        log::warn!(
            "--http {addr} is not a loopback address: the dashboard, status and metrics are readable by anyone who can reach it (changes still need the token)"
        );
    }
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

fn inherit(addr: SocketAddr) -> Option<std::net::TcpListener> {
    use std::os::fd::FromRawFd as _;
    let fd = crate::host::reexec::inherited(HANDOVER)?;
    // Looked at without owning it: a stale number may be another's fd.
    // SAFETY: an open socket (checked); ManuallyDrop never closes it.
    let probe = std::mem::ManuallyDrop::new(unsafe { std::net::TcpListener::from_raw_fd(fd) });
    // Port 0 asks for any port: the one handed over is the one chosen.
    let ours = probe
        .local_addr()
        .is_ok_and(|a| a.ip() == addr.ip() && (addr.port() == 0 || a.port() == addr.port()));
    // SAFETY: checked to be the listener an earlier image bound at `addr`.
    ours.then(|| std::net::TcpListener::from(unsafe { crate::host::reexec::adopt(fd) }))
}

fn fresh(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr).map_err(|e| {
        anyhow::anyhow!(
            "--http {addr}: cannot listen: {e}. Choose another address with --http ADDR:PORT, or --http off"
        )
    })
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    http_guard::error(code, message.into())
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(DASHBOARD),
    )
}

/// Runs a control request off the async workers (it makes syscalls),
/// attributed in the history to the client that sent it.
fn run(api: &Api, peer: Peer, req: Request) -> Reply {
    let by = Some(Actor::Http { client: peer.0 });
    tokio::task::block_in_place(|| api.handle(by, req))
}

async fn status(State(api): State<Arc<Api>>) -> Response {
    match tokio::task::block_in_place(|| api.http_status()) {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(State(api): State<Arc<Api>>, Query(q): Query<HistoryQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).min(HISTORY_MAX);
    let tail = tokio::task::block_in_place(|| api.core.history().tail(limit));
    let mut response = Json(tail.entries).into_response();
    // The body stays a plain array; lines that did not parse are said here.
    response
        .headers_mut()
        .insert("x-bluegreen-skipped-lines", HeaderValue::from(tail.skipped));
    response
}

/// Server-sent events: every history entry as it is appended (flips,
/// rollbacks, refusals, probe changes, deployment phases). The event name
/// is the entry's kind; the data its JSON.
async fn events(State(api): State<Arc<Api>>) -> Response {
    let Some(permit) = api
        .event_streams
        .get()
        .and_then(|s| s.clone().try_acquire_owned().ok())
    else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many open event streams; close some, or poll /api/history",
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    };
    let stream = BroadcastStream::new(api.core.history().subscribe()).map(move |item| {
        // The stream holds its place among the streams until it ends.
        let _held = &permit;
        Ok::<_, Infallible>(match item {
            Ok(entry) => {
                let v = serde_json::to_value(&entry).unwrap_or_default();
                let kind = v["event"].as_str().unwrap_or("event").to_owned();
                SseEvent::default().event(kind).data(v.to_string())
            }
            // A slow reader skipped entries: say so; /api/history has them.
            Err(e) => SseEvent::default().event("lagged").data(e.to_string()),
        })
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    match tokio::task::block_in_place(|| api.metrics_text()) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
    }
}

/// Parses a JSON body; the error names what is wrong and what is accepted
/// (the caller answers 400 with it).
fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes, accepted: &str) -> Result<T, String> {
    let text = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(text).map_err(|e| format!("bad request body: {e}; accepted: {accepted}"))
}

/// The control reply as an HTTP response: refusals are 409 Conflict, what
/// does not exist 404, and the agent's own failures 500.
fn reply(r: Reply) -> Response {
    match r {
        Reply::Error { message, kind } => error(status_of(kind), message),
        other => Json(other).into_response(),
    }
}

fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Refused => StatusCode::CONFLICT,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlipBody {
    colour: Colour,
    #[serde(default)]
    force: bool,
    /// Only check and report (`--dry-run`); write nothing.
    #[serde(default)]
    dry_run: bool,
}

async fn flip(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    match parse::<FlipBody>(
        &body,
        r#"{"colour":"blue"|"green","force":false|true,"dry_run":false|true}"#,
    ) {
        Ok(b) => reply(run(
            &api,
            peer,
            dry_run(
                b.dry_run,
                Request::Flip {
                    colour: b.colour,
                    force: b.force,
                },
            ),
        )),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShiftBody {
    colour: Colour,
    /// "10%" or basis points.
    weight: String,
    #[serde(default)]
    force: bool,
    /// Only check and report (`--dry-run`); write nothing.
    #[serde(default)]
    dry_run: bool,
}

async fn shift(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    let parsed = parse::<ShiftBody>(
        &body,
        r#"{"colour":"blue"|"green","weight":"10%"|"1000","force":false|true,"dry_run":false|true}"#,
    )
    .and_then(|b| Ok((b.weight.parse::<Weight>()?, b)));
    match parsed {
        Ok((weight, b)) => reply(run(
            &api,
            peer,
            dry_run(
                b.dry_run,
                Request::Shift {
                    colour: b.colour,
                    weight,
                    force: b.force,
                },
            ),
        )),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// `"dry_run": true` in a body: the request's checks only.
fn dry_run(yes: bool, req: Request) -> Request {
    if yes {
        Request::DryRun { of: Box::new(req) }
    } else {
        req
    }
}

async fn rollback(State(api): State<Arc<Api>>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    reply(run(&api, peer, Request::Rollback))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    colour: Colour,
    #[serde(default)]
    version: Option<String>,
    /// Service name to the backend to put in place on the deployed colour.
    #[serde(default)]
    backends: BTreeMap<String, SocketAddr>,
    /// Deploy even though a UDP service is probed by silence alone.
    #[serde(default)]
    force: bool,
    /// Green's share in percent at each step: ["1","10","50","100"].
    #[serde(default)]
    steps: Vec<String>,
    /// "60s", "5m" or "indefinite".
    #[serde(default)]
    pause: Option<String>,
    /// Only check and report (`--dry-run`); write nothing.
    #[serde(default)]
    dry_run: bool,
}

async fn deploy(
    State(api): State<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    match parse::<DeployBody>(
        &body,
        r#"{"colour":"blue"|"green","version":"label","backends":{"SERVICE":"ADDR:PORT"},"force":false,"steps":["1","10","50","100"],"pause":"60s"|"indefinite","dry_run":false|true}"#,
    )
    .and_then(|b| {
        let steps = steps::parse_steps(&b.steps)?;
        let pause = b.pause.as_deref().map(steps::parse_pause).transpose()?;
        Ok((b, steps, pause))
    }) {
        Ok((b, ..))
            if let Some(Err(e)) = b.version.as_deref().map(crate::deploy::check_version_label) =>
        {
            error(StatusCode::BAD_REQUEST, format!("{e:#}"))
        }
        Ok((b, steps, pause)) => reply(run(
            &api,
            peer,
            dry_run(
                b.dry_run,
                Request::Deploy {
                    colour: b.colour,
                    version: b.version,
                    backends: b.backends.into_iter().collect(),
                    force: b.force,
                    steps,
                    pause,
                },
            ),
        )),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn promote(State(api): State<Arc<Api>>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    reply(run(&api, peer, Request::Promote))
}

async fn abort(State(api): State<Arc<Api>>, ConnectInfo(peer): ConnectInfo<Peer>) -> Response {
    reply(run(&api, peer, Request::Abort))
}
