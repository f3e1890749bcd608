//! `bgctl agent`: the composition root. It checks everything that can be
//! refused, opens the data path and fills its maps from the config, then
//! wires the core, the probes, the deployment controller and the control
//! surfaces together. Exiting never touches the data path: the pinned links
//! and maps keep steering on the last colour.
use std::{os::fd::AsFd as _, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    api::{Api, http_guard::AllowedHosts, reload::Reloader, socket},
    config::Config,
    core::{Core, Parts},
    dataplane::{Dataplane, OpenOptions, TableSizes, XdpModeRequest},
    deploy::{Deployer, SavedDeployment},
    fleet::Fleet,
    health,
    host::reexec::Handover,
    metrics::{BuildInfo, Metrics},
    model::AttachMode,
    store::{history::History, state::StateStore},
};

/// How long a closing TCP flow must be quiet before a SYN on its ports
/// counts as a new connection (see `bg_common::tcp_setting`).
const TCP_CLOSE_GRACE: Duration = Duration::from_secs(2);

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

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let (before, after) = crate::host::resources::raise_open_file_limit();
    if after < 1024 {
        log::warn!(
            "the open-file limit is {after} (raised from {before}, the hard limit); the HTTP server then holds at most {} connections",
            crate::api::http_guard::connection_cap()
        );
    }
    // Everything that can be refused is checked before the data path changes.
    let config = Config::load(&opts.config)?;
    crate::dataplane::if_index(&opts.iface)?;
    let pin_dir = crate::dataplane::pin_dir(&opts.pin_root, &opts.iface);
    let _lock = match crate::dataplane::pin_lock::PinLock::try_acquire(&pin_dir)? {
        Ok(lock) => lock,
        Err(holder) => bail!(
            "another agent ({}) already manages {}; stop it first (bgctl teardown also stops it)",
            holder,
            pin_dir.display()
        ),
    };
    // After a reload, the listeners the earlier image handed over.
    let inherited = socket::inherit(&opts.socket)?;
    if inherited.is_none() {
        socket::check_socket_free(&opts.socket).await?;
    }
    let http = opts.http.map(crate::api::http::bind).transpose()?;
    let store = StateStore::new(&opts.state_dir)
        .with_context(|| format!("state directory {}", opts.state_dir.display()))?;
    let state = store.load()?;
    let saved_deployment = SavedDeployment::load(&opts.state_dir)?;
    let token = crate::store::token::load_or_create(&opts.state_dir)?;

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
    let attached = format!(
        "{}: {} (ifindex {}), {} service(s), {} redirect interface(s)",
        dp.iface,
        match dp.mode {
            AttachMode::Driver => "XDP attached in driver mode",
            AttachMode::Generic => "XDP attached in generic mode",
            AttachMode::Adopted => "XDP adopted from pinned state; program replaced in place",
            AttachMode::Tc => "TC ingress (tcx) attached",
            AttachMode::AdoptedTc =>
                "TC ingress adopted from pinned state; program replaced in place",
        },
        dp.ifindex,
        ids.len(),
        added,
    );

    let listener = match inherited {
        Some(l) => l,
        None => socket::bind(&opts.socket)?,
    };
    // Copies of the listeners that outlive their servers, for a reload
    // to hand over (`host::reexec`).
    let keep_control = listener.as_fd().try_clone_to_owned()?;
    let keep_http = http
        .as_ref()
        .map(|l| l.as_fd().try_clone_to_owned())
        .transpose()?;
    let history = Arc::new(
        History::open(&opts.state_dir)
            .with_context(|| format!("history in {}", opts.state_dir.display()))?,
    );
    let core = Core::new(Parts {
        dp,
        config,
        ids,
        tables,
        hz,
        state,
        store,
        history,
        metrics: Arc::new(Metrics::new(BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data_path: crate::dataplane::object_digest(),
        })),
    })?;
    log::info!("{attached}, active colour {}", core.active()?);
    let deployer = Deployer::new(core.clone(), saved_deployment);
    health::spawn_probes(
        core.config(),
        core.health().clone(),
        core.history().clone(),
        core.metrics().clone(),
        core.path_check(),
    );
    let fleet = core
        .config()
        .fleet
        .clone()
        .map(|settings| Fleet::start(core.clone(), settings, deployer.clone()));
    let reloader = Reloader::new(opts.config.clone());
    let api = Api::new(
        core.clone(),
        deployer.clone(),
        fleet.clone(),
        token,
        reloader.clone(),
    );
    log::info!("control socket {}", opts.socket.display());
    // The HTTP server's stop: it stops accepting and finishes the
    // requests it took (`stop_serving`).
    let mut http_serving = None;
    if let Some(listener) = http {
        log::info!(
            "dashboard, API and metrics on http://{}/ (mutations need the token: `bgctl token`)",
            listener.local_addr()?
        );
        let hosts = AllowedHosts(Arc::new(opts.http_hosts.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(crate::api::http::serve(
            listener,
            api.clone(),
            hosts,
            async {
                let _ = stopped.await;
            },
        ));
        http_serving = Some((stop, task));
    }
    deployer.resume()?;
    core.spawn_sampler();
    let serving = tokio::spawn(socket::serve(listener, api.clone()));
    use tokio::signal::unix::{SignalKind, signal};
    let (mut sigterm, mut sighup) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    );
    crate::host::systemd::ready(&attached);
    if let Some(every) = crate::host::systemd::watchdog_interval() {
        tokio::spawn(watchdog(core.clone(), every));
    }
    let reload = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break false,
            _ = sigterm.recv() => break false,
            _ = core.stop_requested() => break false,
            // Refusals are logged and recorded; the agent goes on.
            _ = sighup.recv() => {
                let _ = reloader.reload(&core, &deployer, "SIGHUP");
            }
            _ = reloader.requested() => break true,
        }
    };
    if reload {
        crate::host::systemd::reloading();
    } else {
        crate::host::systemd::stopping();
    }
    stop_serving(&api, serving, http_serving).await;
    if let Some(fleet) = &fleet {
        fleet.leave().await;
    }
    if reload {
        log::info!(
            "re-executing with {}; the data path keeps steering to {}",
            opts.config.display(),
            core.active()?
        );
        let mut keep = vec![Handover {
            var: socket::HANDOVER,
            fd: &keep_control,
        }];
        if let Some(fd) = &keep_http {
            keep.push(Handover {
                var: crate::api::http::HANDOVER,
                fd,
            });
        }
        let e = crate::host::reexec::reexec(&keep);
        bail!(
            "re-executing {} for the reload failed: {e}; the data path keeps steering, start the agent again",
            crate::host::reexec::current_binary().display()
        );
    }
    let _ = std::fs::remove_file(&opts.socket);
    log::info!(
        "agent stopping; the data path keeps steering to {}",
        core.active()?
    );
    Ok(())
}

/// Stops taking callers and answers the ones taken, for at most 2 s: the
/// request that asked for a stop or a reload hears its answer, and no
/// caller finds its connection cut by the exec. Callers that connect from
/// here on wait in the listeners' backlogs, which the copies handed over
/// keep open, for the next image.
async fn stop_serving(
    api: &Api,
    control: tokio::task::JoinHandle<()>,
    http: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
) {
    const AT_MOST: Duration = Duration::from_secs(2);
    control.abort();
    let _ = control.await;
    let http = async {
        if let Some((stop, task)) = http {
            let _ = stop.send(());
            // Event streams never end by themselves: they are cut here,
            // and browsers reconnect.
            let _ = tokio::time::timeout(AT_MOST, task).await;
        }
    };
    tokio::join!(api.settle(AT_MOST), http);
}

/// Tells the service manager's watchdog the agent lives, while it can
/// still read the data path: a wedged agent misses it and is restarted.
async fn watchdog(core: Arc<Core>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if core.active().is_ok() {
            crate::host::systemd::watchdog();
        }
    }
}
