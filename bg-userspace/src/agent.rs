//! `bgctl agent`: loads the data path, fills the maps from the config and
//! serves the control socket. Exiting never touches the data path: the
//! pinned link and maps keep steering on the last colour.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Notify,
};

use crate::{
    backend_path::PathJudge,
    config::Config,
    control::{
        ColourRate, ErrorKind, FlipReport, OpError, PerColour, Request, Response, ServiceReport,
        StatusReport, TcpStatus,
    },
    controller::{self, DeployControl},
    dataplane::{Dataplane, FlowTable, OpenOptions, TableSizes, Traffic, XdpModeRequest},
    health::{self, BackendHealth, HealthBoard},
    history::{Event, History},
    model::{Colour, FlipRecordKind, RollbackReason},
    state::{AgentState, FlipRecord, StateStore, now_unix_ms},
};

/// How often the agent samples counters for packets-per-second figures.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a closing TCP flow must be quiet before a SYN on its ports
/// counts as a new connection (see `bg_common::tcp_setting`).
const TCP_CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How often new interfaces are added to the redirect devmap.
const IFACE_REFRESH: Duration = Duration::from_secs(5);
/// Longest request line accepted on the control socket.
const MAX_REQUEST: usize = 64 * 1024;

pub struct AgentOptions {
    pub iface: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pin_root: PathBuf,
    pub state_dir: PathBuf,
    pub xdp_mode: XdpModeRequest,
    /// Where the dashboard, API and metrics listen; None turns them off.
    pub http: Option<std::net::SocketAddr>,
    /// Host names HTTP requests may use besides IP literals and localhost.
    pub http_hosts: Vec<String>,
}

/// Per-colour rates at one second, for the dashboard's chart.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TrafficSample {
    pub at_unix_ms: u64,
    pub pps: PerColour<f64>,
    pub bps: PerColour<f64>,
}

/// Five minutes of one-second samples.
const TRAFFIC_HISTORY: usize = 300;
/// How long a count of live TCP connections serves the dashboard and
/// metrics (a walk of the flow table; `bgctl status` always walks afresh).
const TCP_COUNT_MAX_AGE: Duration = Duration::from_secs(2);

pub(crate) struct Shared {
    pub(crate) deploy: DeployControl,
    pub(crate) dp: Mutex<Dataplane>,
    pub(crate) health: Arc<HealthBoard>,
    pub(crate) history: Arc<History>,
    /// A separate handle for walking the flow table outside the `dp` lock.
    pub(crate) flows: Mutex<FlowTable>,
    /// What the pinned TCP tables really hold (may differ from the config).
    pub(crate) tables: TableSizes,
    /// The kernel's HZ, to turn the idle timeout into jiffies.
    pub(crate) hz: u64,
    pub(crate) config: Config,
    pub(crate) ids: Vec<u32>,
    pub(crate) state: Mutex<AgentState>,
    pub(crate) store: StateStore,
    pub(crate) rates: Mutex<PerColour<ColourRate>>,
    pub(crate) started: Instant,
    pub(crate) shutdown: Notify,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Bearer token for the HTTP API's mutations.
    pub(crate) token: String,
    pub(crate) traffic_history: Mutex<std::collections::VecDeque<TrafficSample>>,
    /// Live TCP connections per colour at the last walk, and when.
    pub(crate) tcp_live: Mutex<Option<(Instant, PerColour<u64>)>>,
    /// Judges backends' paths through the data path, for probes and gates.
    pub(crate) paths: PathJudge,
    /// Places for `/api/events` streams, set when the HTTP server starts.
    pub(crate) event_streams: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Why the steering link is gone, once the agent noticed it is.
    pub(crate) detached: Mutex<Option<String>>,
}

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let (before, after) = crate::resources::raise_open_file_limit();
    if after < 1024 {
        log::warn!(
            "the open-file limit is {after} (raised from {before}, the hard limit); the HTTP server then holds at most {} connections",
            crate::http_guard::connection_cap()
        );
    }
    // Everything that can be refused is checked before the data path changes.
    let config = Config::load(&opts.config)?;
    crate::dataplane::if_index(&opts.iface)?;
    let pin_dir = crate::dataplane::pin_dir(&opts.pin_root, &opts.iface);
    let _lock = match crate::pin_lock::PinLock::try_acquire(&pin_dir)? {
        Ok(lock) => lock,
        Err(holder) => bail!(
            "another agent ({}) already manages {}; stop it first (bgctl teardown also stops it)",
            holder,
            pin_dir.display()
        ),
    };
    check_socket_free(&opts.socket).await?;
    let http = opts.http.map(crate::http::bind).transpose()?;
    let store = StateStore::new(&opts.state_dir)
        .with_context(|| format!("state directory {}", opts.state_dir.display()))?;
    let state = store.load()?;
    let deploy = DeployControl::load(&opts.state_dir)?;
    let token = crate::token::load_or_create(&opts.state_dir)?;

    let debug_logs = log::log_enabled!(target: "bg_ebpf", log::Level::Debug);
    let mut dp = Dataplane::open(
        &opts.iface,
        &opts.pin_root,
        &OpenOptions {
            attach: config.attach,
            mode: opts.xdp_mode,
            debug_logs,
            tables: TableSizes {
                flows: config.tcp.flow_table_size,
                pending: config.tcp.pending_table_size,
            },
            reverse_nat_interfaces: &config.tcp.reverse_nat_interfaces,
        },
    )?;
    let tables = dp.table_capacity()?;
    for (field, wanted, held) in [
        ("flow_table_size", config.tcp.flow_table_size, tables.flows),
        (
            "pending_table_size",
            config.tcp.pending_table_size,
            tables.pending,
        ),
    ] {
        if wanted != held {
            log::warn!(
                "tcp.{field} = {wanted} in {}, but the pinned table holds {held} entries and keeps that size; run `bgctl teardown --iface {}` and restart to resize (connections in flight are then forgotten)",
                opts.config.display(),
                opts.iface
            );
        }
    }
    // Flows are aged in jiffies; the idle timeout needs the kernel's HZ.
    let hz = dp.measure_hz(Duration::from_millis(100))?;
    dp.set_tcp_timeouts(
        config.tcp.idle_timeout_s * hz,
        TCP_CLOSE_GRACE.as_secs() * hz,
    )?;
    let ids = dp.apply_config(&config)?;
    let added = dp.refresh_redirect_ifaces()?;
    let restored = restore_colour(&mut dp, &state)?;
    let active = dp.active()?;
    log::info!(
        "{}: {} (ifindex {}), {} service(s), {} redirect interface(s), active colour {}",
        dp.iface,
        match dp.mode {
            crate::dataplane::AttachMode::Driver => "XDP attached in driver mode",
            crate::dataplane::AttachMode::Generic => "XDP attached in generic mode",
            crate::dataplane::AttachMode::Adopted =>
                "XDP adopted from pinned state; program replaced in place",
            crate::dataplane::AttachMode::Tc => "TC ingress (tcx) attached",
            crate::dataplane::AttachMode::AdoptedTc =>
                "TC ingress adopted from pinned state; program replaced in place",
        },
        dp.ifindex,
        ids.len(),
        added,
        active
    );

    let listener = bind_socket(&opts.socket)?;
    let history = Arc::new(
        History::open(&opts.state_dir)
            .with_context(|| format!("history in {}", opts.state_dir.display()))?,
    );
    history.append(&Event::AgentStarted {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        active,
    });
    if let Some(event) = restored {
        history.append(&event);
    }
    let health = Arc::new(HealthBoard::new(&config));
    // Backends deployed in place of the config's stay in place across restarts.
    for o in &state.backend_overrides {
        let Some((svc, id)) = config
            .services
            .iter()
            .zip(&ids)
            .find(|(s, _)| s.name == o.service)
        else {
            log::warn!(
                "deployed backend for {} ignored: the service is no longer configured",
                o.service
            );
            continue;
        };
        if svc.listen.is_ipv4() != o.backend.is_ipv4() {
            log::warn!(
                "deployed backend {} for {} ignored: family differs from listen",
                o.backend,
                o.service
            );
            continue;
        }
        dp.set_backend(*id, o.colour, o.backend)?;
        health.set_backend(&o.service, o.colour, o.backend);
        log::info!(
            "{} {}: backend {} (deployed; overrides the config file)",
            o.service,
            o.colour,
            o.backend
        );
    }
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let shared = Arc::new(Shared {
        deploy,
        health,
        history,
        flows: Mutex::new(FlowTable::open(&dp.pin_dir)?),
        dp: Mutex::new(dp),
        tables,
        hz,
        config,
        ids,
        state: Mutex::new(state),
        store,
        rates: Mutex::new(PerColour::default()),
        started: Instant::now(),
        shutdown: Notify::new(),
        metrics,
        token,
        traffic_history: Mutex::new(std::collections::VecDeque::new()),
        tcp_live: Mutex::new(None),
        paths: PathJudge::default(),
        event_streams: std::sync::OnceLock::new(),
        detached: Mutex::new(None),
    });
    let weak = Arc::downgrade(&shared);
    let path: health::PathCheck = Arc::new(move |service, colour, addr, protocol, sent| {
        let Some(sh) = weak.upgrade() else {
            return Ok(());
        };
        let mut dp = sh.dp.lock().expect("poisoned");
        sh.paths
            .judge(&mut dp, service, colour, addr, protocol, sent)
    });
    health::spawn_probes(
        &shared.config,
        shared.health.clone(),
        shared.history.clone(),
        shared.metrics.clone(),
        path,
    );
    log::info!("control socket {}", opts.socket.display());
    if let Some(listener) = http {
        log::info!(
            "dashboard, API and metrics on http://{}/ (mutations need the token: `bgctl token`)",
            listener.local_addr()?
        );
        let hosts = crate::http_guard::AllowedHosts(Arc::new(opts.http_hosts.clone()));
        tokio::spawn(crate::http::serve(listener, shared.clone(), hosts));
    }

    controller::resume(&shared, active);
    tokio::spawn(sample_rates(shared.clone()));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last_accept_error: Option<Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(serve(shared.clone(), stream)); }
                Err(e) => {
                    // Out of descriptors, say: logging every retry would
                    // flood the log. Once a second, and back off.
                    if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        log::warn!("control socket accept: {e}; backing off");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = shared.shutdown.notified() => break,
        }
    }
    let _ = std::fs::remove_file(&opts.socket);
    let active = shared.dp.lock().expect("poisoned").active()?;
    log::info!("agent stopping; the data path keeps steering to {active}");
    Ok(())
}

/// New maps start on blue. When the agent made them afresh (the first
/// start, or its pins were gone: the interface was recreated, or a
/// teardown) while its state records another colour as active, that colour
/// comes back, with a history event; nothing is guessed without a record.
fn restore_colour(dp: &mut Dataplane, state: &AgentState) -> anyhow::Result<Option<Event>> {
    let Some(last) = state.last_flip.as_ref().filter(|_| dp.fresh_maps) else {
        return Ok(None);
    };
    if dp.active()? == last.to {
        return Ok(None);
    }
    dp.set_active(last.to)?;
    log::warn!(
        "{}: the pinned maps were made afresh, so {} comes back as the active colour: the last {} recorded in the state directory went to it",
        dp.iface,
        last.to,
        last.kind
    );
    Ok(Some(Event::ColourRestored {
        colour: last.to,
        reason: format!(
            "the data path's maps were made afresh; the last {} ({} -> {}) is on record",
            last.kind, last.from, last.to
        ),
    }))
}

/// Refuses to start when another agent answers on the socket; removes a
/// stale socket file left by a killed one.
async fn check_socket_free(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "--socket = {}: another agent is serving this socket; stop it, or give this one its own --socket",
            path.display()
        );
    }
    std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))
}

fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

async fn serve(shared: Arc<Shared>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    // Bounds what one connection may send in all, so a client that never
    // sends a newline cannot grow the line buffer without limit.
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64 * 16)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = if line.len() > MAX_REQUEST {
            Response::Error {
                message: format!("request longer than {MAX_REQUEST} bytes"),
                kind: ErrorKind::Refused,
            }
        } else {
            match serde_json::from_str::<Request>(&line) {
                // Requests make syscalls (and status walks the flow table):
                // keep them off the async workers' hot loop.
                Ok(req) => tokio::task::block_in_place(|| handle(&shared, req)),
                Err(e) => Response::Error {
                    message: format!("bad request: {e}"),
                    kind: ErrorKind::Refused,
                },
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

pub(crate) fn handle(shared: &Arc<Shared>, req: Request) -> Response {
    let result = match req {
        Request::Status => status(shared, true).map(|s| Response::Status(Box::new(s))),
        Request::Token => Ok(Response::Token {
            token: shared.token.clone(),
        }),
        Request::Flip { colour, force } => {
            flip(shared, colour, FlipKind::Flip { force }).map(Response::Flip)
        }
        Request::Rollback => rollback(shared).map(Response::Flip),
        Request::History { limit } => Ok(Response::History(shared.history.tail(limit))),
        Request::Deploy {
            colour,
            version,
            backends,
            force,
        } => controller::start(shared, colour, version, backends, force)
            .map(|d| Response::Deployment(Some(d))),
        Request::DeployStatus => Ok(Response::Deployment(shared.deploy.snapshot())),
        Request::Abort => controller::abort(shared).map(|d| Response::Deployment(Some(d))),
        Request::Shutdown { iface } => {
            let ours = shared.dp.lock().expect("poisoned").iface == iface;
            if ours {
                shared.shutdown.notify_one();
            }
            Ok(Response::Shutdown { stopping: ours })
        }
    };
    result.unwrap_or_else(|e| Response::Error {
        kind: OpError::kind_of(&e),
        message: format!("{e:#}"),
    })
}

/// Why the active colour changes.
#[derive(Clone, Copy)]
pub(crate) enum FlipKind {
    /// An operator's flip; refused towards an unhealthy colour unless forced.
    Flip { force: bool },
    /// Back to the previous colour: never refused, it is the way out.
    Rollback(RollbackReason),
}

pub(crate) fn flip(shared: &Shared, to: Colour, kind: FlipKind) -> anyhow::Result<FlipReport> {
    check_attached(shared)?;
    let mut dp = shared.dp.lock().expect("poisoned");
    let from = dp.active()?;
    if from == to {
        return Ok(FlipReport {
            from,
            to,
            changed: false,
            write_ns: 0,
        });
    }
    let problems = shared.health.problems(to);
    if let FlipKind::Flip { force: false } = kind
        && !problems.is_empty()
    {
        drop(dp);
        shared.history.append(&Event::FlipRefused {
            to,
            problems: problems.clone(),
        });
        return Err(OpError::refused(format!(
            "refusing to flip to {to}: {}. Fix the backend, or flip anyway with --force",
            problems.join("; ")
        )));
    }
    let took = dp.set_active(to)?;
    drop(dp);
    let write_ns = took.as_nanos() as u64;
    let label = match kind {
        FlipKind::Flip { .. } => FlipRecordKind::Flip,
        FlipKind::Rollback(_) => FlipRecordKind::Rollback,
    };
    if problems.is_empty() {
        log::info!("{label}: {from} -> {to} (map write {write_ns} ns)");
    } else {
        log::warn!(
            "{label}: {from} -> {to} (map write {write_ns} ns) although {to} is not healthy{}: {}",
            if matches!(kind, FlipKind::Flip { force: true }) {
                ", forced"
            } else {
                ""
            },
            problems.join("; ")
        );
    }
    shared.history.append(&match kind {
        FlipKind::Flip { force } => Event::Flip {
            from,
            to,
            write_ns,
            forced: force && !problems.is_empty(),
            problems,
        },
        FlipKind::Rollback(reason) => Event::Rollback {
            from,
            to,
            write_ns,
            problems,
            reason: Some(reason),
        },
    });
    match kind {
        FlipKind::Flip { .. } => {
            shared.metrics.flips.inc();
        }
        FlipKind::Rollback(reason) => shared.metrics.rollback(reason),
    }
    let mut state = shared.state.lock().expect("poisoned");
    state.last_flip = Some(FlipRecord {
        from,
        to,
        at_unix_ms: now_unix_ms(),
        write_ns,
        kind: label,
    });
    if let Err(e) = shared.store.save(&state) {
        // The flip itself happened; only its record is at risk.
        log::warn!("could not record the flip: {e}");
    }
    Ok(FlipReport {
        from,
        to,
        changed: true,
        write_ns,
    })
}

/// Refuses to act on a data path that is no longer attached: the write
/// would be acknowledged and steer nothing.
pub(crate) fn check_attached(shared: &Shared) -> anyhow::Result<()> {
    if let Some(why) = shared.detached.lock().expect("poisoned").as_ref() {
        return Err(OpError::refused(format!(
            "the data path is detached: {why}. Nothing would steer; restart the agent to attach it again"
        )));
    }
    Ok(())
}

/// Back to the colour that was active before the last flip.
fn rollback(shared: &Shared) -> anyhow::Result<FlipReport> {
    let active = shared.dp.lock().expect("poisoned").active()?;
    let last = shared.state.lock().expect("poisoned").last_flip.clone();
    match last {
        Some(rec) if rec.to == active => {
            flip(shared, rec.from, FlipKind::Rollback(RollbackReason::Manual))
        }
        Some(rec) => Err(OpError::refused(format!(
            "the last recorded flip went to {} but {active} is active; choose explicitly with `bgctl flip <colour>`",
            rec.to
        ))),
        None => Err(OpError::refused(format!(
            "no flip is recorded, so there is no previous colour; {active} is active. Use `bgctl flip <colour>`"
        ))),
    }
}

/// `/api/status`: the status (TCP counts at most 2 s old), the
/// current or last deployment, and five minutes of per-colour rates.
pub(crate) fn http_status(shared: &Shared) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(status(shared, false)?)?;
    v["deployment"] = serde_json::to_value(shared.deploy.snapshot())?;
    v["traffic_history"] = serde_json::to_value(
        shared
            .traffic_history
            .lock()
            .expect("poisoned")
            .iter()
            .collect::<Vec<_>>(),
    )?;
    Ok(v)
}

/// `/metrics`, from the maps and the agent's own counters.
pub(crate) fn metrics_text(shared: &Shared) -> anyhow::Result<String> {
    let report = status(shared, false)?;
    let phase = shared.deploy.snapshot().map(|d| d.phase);
    Ok(shared.metrics.render(&report, phase))
}

/// The status; `walk` counts live TCP connections afresh (a walk of the
/// flow table), else the last sample's counts are used.
fn status(shared: &Shared, walk: bool) -> anyhow::Result<StatusReport> {
    let (mut report, now) = {
        let dp = shared.dp.lock().expect("poisoned");
        let mut services = Vec::with_capacity(shared.ids.len());
        for (svc, &id) in shared.config.services.iter().zip(&shared.ids) {
            let [blue, green] = dp.traffic(id)?;
            let health = |c| shared.health.get(&svc.name, c);
            services.push(ServiceReport {
                name: svc.name.clone(),
                protocol: svc.protocol,
                listen: svc.listen,
                blue: health(Colour::Blue).map_or(svc.blue, |h| h.backend),
                green: health(Colour::Green).map_or(svc.green, |h| h.backend),
                traffic: PerColour { blue, green },
                health: PerColour {
                    blue: shared
                        .health
                        .get(&svc.name, Colour::Blue)
                        .unwrap_or_else(|| BackendHealth::new(svc.blue)),
                    green: shared
                        .health
                        .get(&svc.name, Colour::Green)
                        .unwrap_or_else(|| BackendHealth::new(svc.green)),
                },
                probe_note: (matches!(svc.health.probe, crate::health_check::ProbeKind::Udp { .. })).then(|| {
                    format!(
                        "udp probe: up means {}. Deployments need --force while this service has only this probe",
                        crate::deploy::UDP_EVIDENCE
                    )
                }),
            });
        }
        let report = StatusReport {
            iface: dp.iface.clone(),
            ifindex: dp.ifindex,
            xdp_mode: dp.mode,
            agent_pid: std::process::id(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: shared.started.elapsed().as_secs(),
            active: dp.active()?,
            last_flip: shared.state.lock().expect("poisoned").last_flip.clone(),
            services,
            colours: *shared.rates.lock().expect("poisoned"),
            health_problems: PerColour {
                blue: shared.health.problems(Colour::Blue),
                green: shared.health.problems(Colour::Green),
            },
            tcp: TcpStatus {
                live_connections: PerColour::default(),
                idle_timeout_s: shared.config.tcp.idle_timeout_s,
                flow_table_size: shared.tables.flows,
                pending_table_size: shared.tables.pending,
            },
            counters: dp
                .counters()?
                .named()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            unavailable: dp
                .unavailable
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            detached: shared.detached.lock().expect("poisoned").clone(),
        };
        (report, dp.now_jiffies()?)
    };
    // A walk of a full table costs a good part of a core: the dashboard's
    // polls and scrapes reuse one that is under TCP_COUNT_MAX_AGE old.
    let cached = *shared.tcp_live.lock().expect("poisoned");
    report.tcp.live_connections = match cached {
        Some((at, live)) if !walk && at.elapsed() < TCP_COUNT_MAX_AGE => live,
        _ => live_connections(shared, now)?,
    };
    Ok(report)
}

/// Walks the flow table. It costs a syscall pair per flow: done without the
/// dp lock so a flip never waits behind it.
fn live_connections(shared: &Shared, now_jiffies: u64) -> anyhow::Result<PerColour<u64>> {
    let idle = shared.config.tcp.idle_timeout_s * shared.hz;
    let [blue, green] = shared
        .flows
        .lock()
        .expect("poisoned")
        .live_connections(now_jiffies, idle)?;
    let live = PerColour { blue, green };
    *shared.tcp_live.lock().expect("poisoned") = Some((Instant::now(), live));
    Ok(live)
}

fn totals(shared: &Shared) -> anyhow::Result<PerColour<Traffic>> {
    let dp = shared.dp.lock().expect("poisoned");
    let mut total = PerColour::<Traffic>::default();
    for &id in &shared.ids {
        let [b, g] = dp.traffic(id)?;
        for (c, t) in [(Colour::Blue, b), (Colour::Green, g)] {
            let slot = total.get_mut(c);
            slot.packets += t.packets;
            slot.bytes += t.bytes;
        }
    }
    Ok(total)
}

/// Keeps per-colour totals and rates fresh, and the devmap complete.
async fn sample_rates(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    let mut last: Option<(Instant, PerColour<Traffic>)> = None;
    let mut last_refresh = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let Ok(total) = totals(&shared) else { continue };
        let mut rates = PerColour::<ColourRate>::default();
        for c in Colour::ALL {
            let t = total.get(c);
            let r = rates.get_mut(c);
            r.packets = t.packets;
            r.bytes = t.bytes;
            if let Some((then, prev)) = &last {
                let dt = now.duration_since(*then).as_secs_f64().max(1e-3);
                let p = prev.get(c);
                r.pps = t.packets.saturating_sub(p.packets) as f64 / dt;
                r.bps = t.bytes.saturating_sub(p.bytes) as f64 * 8.0 / dt;
            }
        }
        *shared.rates.lock().expect("poisoned") = rates;
        if last.is_some() {
            let mut h = shared.traffic_history.lock().expect("poisoned");
            h.push_back(TrafficSample {
                at_unix_ms: now_unix_ms(),
                pps: PerColour {
                    blue: rates.blue.pps,
                    green: rates.green.pps,
                },
                bps: PerColour {
                    blue: rates.blue.bps,
                    green: rates.green.bps,
                },
            });
            while h.len() > TRAFFIC_HISTORY {
                h.pop_front();
            }
        }
        last = Some((now, total));
        let attached = shared.dp.lock().expect("poisoned").steering_attached();
        {
            let mut detached = shared.detached.lock().expect("poisoned");
            match (attached, detached.is_some()) {
                (Err(why), false) => {
                    log::error!(
                        "the data path is detached: {why}; flips are refused until the agent restarts"
                    );
                    *detached = Some(why);
                }
                (Ok(()), true) => *detached = None,
                _ => {}
            }
        }
        if last_refresh.elapsed() >= IFACE_REFRESH {
            last_refresh = Instant::now();
            if let Err(e) = shared
                .dp
                .lock()
                .expect("poisoned")
                .refresh_redirect_ifaces()
            {
                log::warn!("refreshing redirect interfaces: {e}");
            }
        }
    }
}
