//! Runs deployments: the phases of `deploy.rs`, driven from the agent.
//! Every phase change is saved to `deployment.json` (so a restarted agent
//! can resume or end it) and appended to the history.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::sync::Notify;

use crate::{
    agent::{FlipKind, Shared, flip},
    config::Protocol,
    control::OpError,
    deploy::{self, Deployment, Phase},
    health_check::ProbeKind,
    history::Event,
    model::{Colour, RollbackReason},
    state::now_unix_ms,
};

const DEPLOYMENT_FILE: &str = "deployment.json";
/// Longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DeployControl {
    current: Mutex<Option<Deployment>>,
    abort: AtomicBool,
    wake: Notify,
    path: PathBuf,
}

/// How a deployment ended early.
struct End(Phase, String);

impl DeployControl {
    /// The current or last deployment from the state directory. One that
    /// does not parse is an error: a deployment in bake must resume.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(DEPLOYMENT_FILE);
        let current = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} does not parse ({e}). It records the current or last deployment, which the agent resumes or ends; it refuses to start without it. {} may hold the one before; or remove the file to forget it",
                    path.display(),
                    crate::durable::previous(&path).display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => bail!("{}: {e}", path.display()),
        };
        Ok(Self {
            current: Mutex::new(current),
            abort: AtomicBool::new(false),
            wake: Notify::new(),
            path,
        })
    }

    pub fn snapshot(&self) -> Option<Deployment> {
        self.current.lock().expect("poisoned").clone()
    }

    fn save(&self, d: &Deployment) {
        let written = serde_json::to_vec_pretty(d)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::durable::write(&self.path, &b, 0o600, true));
        if let Err(e) = written {
            log::warn!("{}: cannot save the deployment: {e}", self.path.display());
        }
    }
}

fn set_phase(shared: &Shared, phase: Phase, reason: Option<String>) {
    let mut cur = shared.deploy.current.lock().expect("poisoned");
    let Some(d) = cur.as_mut() else { return };
    d.phase = phase;
    d.phase_started_unix_ms = now_unix_ms();
    if reason.is_some() {
        d.reason = reason.clone();
    }
    shared.deploy.save(d);
    log::info!(
        "deployment {} to {}: {phase:?}{}",
        d.id,
        d.colour,
        reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    shared.history.append(&Event::Deploy {
        id: d.id.clone(),
        colour: d.colour,
        version: d.version.clone(),
        phase,
        reason,
    });
}

/// Starts a deployment onto the idle colour, first checking the backends it
/// is to put in place.
pub fn start(
    shared: &Arc<Shared>,
    colour: Colour,
    version: Option<String>,
    backends: Vec<(String, std::net::SocketAddr)>,
    force: bool,
) -> anyhow::Result<Deployment> {
    let mut cur = shared.deploy.current.lock().expect("poisoned");
    if let Some(d) = cur.as_ref()
        && !d.phase.is_terminal()
    {
        return Err(OpError::refused(format!(
            "deployment {} to {} is still in phase {:?}; wait for it, or stop it with `bgctl abort`",
            d.id, d.colour, d.phase
        )));
    }
    if let Some(v) = &version {
        check_version_label(v)?;
    }
    crate::agent::check_attached(shared)?;
    let active = shared.dp.lock().expect("poisoned").active()?;
    if active == colour {
        return Err(OpError::refused(format!(
            "{colour} is the active colour; deploy onto the idle colour, {}",
            colour.other()
        )));
    }
    check_backends(shared, colour, &backends)?;
    if !force {
        check_evidence(shared)?;
    }
    let mut d = Deployment::new(colour, version);
    d.backends = backends;
    *cur = Some(d.clone());
    drop(cur);
    shared.deploy.abort.store(false, Ordering::SeqCst);
    set_phase(shared, Phase::Prepare, None);
    tokio::spawn(run(shared.clone(), Phase::Prepare));
    Ok(d)
}

/// Longest deployment version label: it goes into the history, hooks'
/// environment and every status.
pub const VERSION_MAX: usize = 128;

/// A version label is a short line of text.
pub fn check_version_label(v: &str) -> anyhow::Result<()> {
    if v.is_empty() || v.chars().count() > VERSION_MAX || v.chars().any(char::is_control) {
        return Err(OpError::refused(format!(
            "--version = {:?}: not a usable label; accepted: 1 to {VERSION_MAX} characters, no control characters",
            v.chars().take(40).collect::<String>()
        )));
    }
    Ok(())
}

/// Refuses a deployment that would judge a UDP service by silence alone:
/// a `udp` probe cannot tell a collector that keeps messages from a host
/// that drops them. `--force` accepts that.
fn check_evidence(shared: &Shared) -> anyhow::Result<()> {
    let silent: Vec<&str> = shared
        .config
        .services
        .iter()
        .filter(|s| s.protocol == Protocol::Udp && matches!(s.health.probe, ProbeKind::Udp { .. }))
        .map(|s| s.name.as_str())
        .collect();
    if silent.is_empty() {
        return Ok(());
    }
    Err(OpError::refused(format!(
        "refusing to deploy: the UDP service(s) {} are probed by `kind = \"udp\"`, whose only evidence is silence: it sees a refused port, a missing route or an unanswered neighbour, but not whether the collector keeps what it gets. Give them an http or exec probe in [service.health] (e.g. kind = \"http\", port = 8686 for Vector's health endpoint), or deploy anyway with --force",
        silent.join(", ")
    )))
}

/// Refuses backend replacements that name no service, change family, point
/// at the other colour's backend, or would reset live TCP connections.
fn check_backends(
    shared: &Shared,
    colour: Colour,
    backends: &[(String, std::net::SocketAddr)],
) -> anyhow::Result<()> {
    for (name, addr) in backends {
        let Some(svc) = shared.config.services.iter().find(|s| &s.name == name) else {
            let known: Vec<&str> = shared
                .config
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(OpError::not_found(format!(
                "--backend {name}={addr}: no service {name:?}; accepted: one of {}",
                known.join(", ")
            )));
        };
        if addr.ip().is_unspecified() || addr.port() == 0 || svc.listen.is_ipv4() != addr.is_ipv4()
        {
            return Err(OpError::refused(format!(
                "--backend {name}={addr}: needs a specific address with a port, of the same family as the service's listen address {}",
                svc.listen
            )));
        }
        if shared.health.backend(name, colour.other()) == Some(*addr) {
            return Err(OpError::refused(format!(
                "--backend {name}={addr}: that is {}'s backend; blue and green must differ",
                colour.other()
            )));
        }
    }
    if !backends.is_empty() {
        let now = shared.dp.lock().expect("poisoned").now_jiffies()?;
        let idle = shared.config.tcp.idle_timeout_s * shared.hz;
        let live = shared
            .flows
            .lock()
            .expect("poisoned")
            .live_connections(now, idle)?[colour.index() as usize];
        if live > 0 {
            return Err(OpError::refused(format!(
                "{colour} still holds {live} live TCP connection(s) that a new backend would reset; `bgctl drain {colour}` first"
            )));
        }
    }
    Ok(())
}

/// Stops the running deployment: before the switch it ends there; after
/// it, the controller rolls back.
pub fn abort(shared: &Shared) -> anyhow::Result<Deployment> {
    match shared.deploy.snapshot() {
        Some(d) if !d.phase.is_terminal() => {
            shared.deploy.abort.store(true, Ordering::SeqCst);
            shared.deploy.wake.notify_waiters();
            Ok(d)
        }
        _ => Err(OpError::not_found("no deployment is running")),
    }
}

/// Decides what a restarted agent does with a deployment it finds
/// unfinished. It never flips here: a deployment that had not switched
/// ends where it was; one in bake resumes its watch (and may roll back,
/// with a recorded reason).
pub fn resume(shared: &Arc<Shared>, active: Colour) {
    let Some(d) = shared.deploy.snapshot() else {
        return;
    };
    if d.phase.is_terminal() {
        return;
    }
    let restarted = "the agent restarted";
    match d.phase {
        Phase::Prepare | Phase::WaitHealthy | Phase::Validate => {
            set_phase(
                shared,
                Phase::Aborted,
                Some(format!("{restarted} before the switch; nothing moved")),
            );
        }
        Phase::Switch | Phase::Bake | Phase::Complete if active != d.colour => {
            set_phase(
                shared,
                Phase::Failed,
                Some(format!(
                    "{restarted} and {} is not active; nothing flipped",
                    d.colour
                )),
            );
        }
        Phase::Complete => set_phase(
            shared,
            Phase::Done,
            Some(format!("{restarted} while keeping {} warm", d.from)),
        ),
        _ => {
            log::info!(
                "deployment {}: {restarted} during {:?}; resuming the bake",
                d.id,
                d.phase
            );
            tokio::spawn(run(shared.clone(), Phase::Bake));
        }
    }
}

async fn run(shared: Arc<Shared>, from_phase: Phase) {
    match phases(&shared, from_phase).await {
        Ok(()) => {}
        Err(End(phase, reason)) => set_phase(&shared, phase, Some(reason)),
    }
}

fn aborted(shared: &Shared) -> bool {
    shared.deploy.abort.load(Ordering::SeqCst)
}

/// Waits for a health change not yet seen by `health`, an abort, or
/// `limit`. A change made while the caller was busy returns at once.
async fn wait_event(
    shared: &Shared,
    health: &mut tokio::sync::watch::Receiver<u64>,
    limit: Duration,
) {
    tokio::select! {
        _ = health.changed() => {}
        _ = shared.deploy.wake.notified() => {}
        _ = tokio::time::sleep(limit) => {}
    }
}

async fn phases(shared: &Arc<Shared>, start: Phase) -> Result<(), End> {
    let d = shared
        .deploy
        .snapshot()
        .ok_or_else(|| End(Phase::Failed, "no deployment".into()))?;
    let (colour, from) = (d.colour, d.from);
    let settings = shared.config.deploy.clone();
    let mut health = shared.health.subscribe();
    if start <= Phase::Prepare {
        prepare(shared, &d)
            .map_err(|e| End(Phase::Failed, format!("prepare: {e:#}; nothing moved")))?;
    }
    if start <= Phase::WaitHealthy {
        set_phase(shared, Phase::WaitHealthy, None);
        let deadline = Instant::now() + Duration::from_secs(settings.healthy_timeout_s);
        loop {
            if aborted(shared) {
                return Err(End(
                    Phase::Aborted,
                    "aborted by the operator before the switch".into(),
                ));
            }
            let problems = shared.health.problems(colour);
            if problems.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(End(
                    Phase::Failed,
                    format!(
                        "{colour} not healthy within {} s: {}",
                        settings.healthy_timeout_s,
                        problems.join("; ")
                    ),
                ));
            }
            wait_event(shared, &mut health, Duration::from_millis(100)).await;
        }
    }
    if start <= Phase::Validate {
        set_phase(shared, Phase::Validate, None);
        let targets: Vec<_> = shared
            .config
            .services
            .iter()
            .map(|s| deploy::GateTarget {
                service: s.name.clone(),
                protocol: s.protocol,
                app: s.app,
                tls: s.tls.clone(),
                backend: shared.health.backend(&s.name, colour).unwrap_or(
                    if colour == Colour::Blue {
                        s.blue
                    } else {
                        s.green
                    },
                ),
            })
            .collect();
        let s = settings.clone();
        let results = tokio::task::spawn_blocking(move || {
            targets
                .iter()
                .map(|t| deploy::validate_backend(t, &s))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| End(Phase::Failed, format!("validation task: {e}")))?;
        let mut results = results;
        for r in results.iter_mut().filter(|r| r.protocol == Protocol::Udp) {
            // Silence proves nothing: the data path must reach the host too.
            let mut dp = shared.dp.lock().expect("poisoned");
            if let Err(e) = shared
                .paths
                .judge(&mut dp, &r.service, colour, r.backend, r.protocol, true)
            {
                r.passed = false;
                r.detail = if r.detail.is_empty() {
                    e
                } else {
                    format!("{}; {e}", r.detail)
                };
            }
        }
        let failed: Vec<String> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{} {}: {}", r.service, r.backend, r.detail))
            .collect();
        if let Some(d) = shared.deploy.current.lock().expect("poisoned").as_mut() {
            d.gate = results;
        }
        if !failed.is_empty() {
            return Err(End(
                Phase::Failed,
                format!("performance gate: {}", failed.join("; ")),
            ));
        }
        if aborted(shared) {
            return Err(End(
                Phase::Aborted,
                "aborted by the operator before the switch".into(),
            ));
        }
    }
    if start <= Phase::Switch {
        set_phase(shared, Phase::Switch, None);
        if let Some(hook) = &settings.pre_switch {
            deploy::run_hook("pre-switch", hook, &d, HOOK_TIMEOUT)
                .await
                .map_err(|e| End(Phase::Failed, format!("{e}; nothing moved")))?;
        }
        let sh = shared.clone();
        tokio::task::block_in_place(|| flip(&sh, colour, FlipKind::Flip { force: false }))
            .map_err(|e| End(Phase::Failed, format!("switch refused: {e:#}")))?;
        if let Some(hook) = &settings.post_switch
            && let Err(e) = deploy::run_hook("post-switch", hook, &d, HOOK_TIMEOUT).await
        {
            log::warn!("deployment {}: {e}", d.id);
        }
    }
    set_phase(shared, Phase::Bake, None);
    let failed_redirects = |sh: &Shared| {
        sh.dp
            .lock()
            .expect("poisoned")
            .counters()
            .map(|c| c.failed_redirects())
            .unwrap_or(0)
    };
    let redirects_before = failed_redirects(shared);
    let deadline = Instant::now() + Duration::from_secs(settings.bake_s);
    loop {
        let reason = if aborted(shared) {
            Some((
                RollbackReason::Abort,
                "aborted by the operator after the switch".to_owned(),
            ))
        } else {
            // Only backends found down count: after an agent restart the
            // probes start from unknown, which is no reason to roll back.
            let failures = shared.health.failures(colour);
            if !failures.is_empty() {
                Some((
                    RollbackReason::Health,
                    format!("{colour} failed during bake: {}", failures.join("; ")),
                ))
            } else if failed_redirects(shared) > redirects_before {
                Some((
                    RollbackReason::RedirectErrors,
                    format!("redirect failures on {colour} during bake"),
                ))
            } else {
                None
            }
        };
        if let Some((why, reason)) = reason {
            return Err(roll_back(shared, &d, from, why, reason).await);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Health changes wake this at once; the 100 ms bound is for the
        // redirect counters, which nothing announces.
        wait_event(shared, &mut health, left.min(Duration::from_millis(100))).await;
    }
    set_phase(
        shared,
        Phase::Complete,
        Some(format!(
            "keeping {from} warm for {} s",
            settings.keep_warm_s
        )),
    );
    let deadline = Instant::now() + Duration::from_secs(settings.keep_warm_s);
    while Instant::now() < deadline {
        if aborted(shared) {
            return Err(roll_back(
                shared,
                &d,
                from,
                RollbackReason::Abort,
                "aborted by the operator while the old colour was warm".into(),
            )
            .await);
        }
        wait_event(
            shared,
            &mut health,
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200)),
        )
        .await;
    }
    set_phase(shared, Phase::Done, Some(format!("{from} is idle")));
    Ok(())
}

/// Puts the deployment's backends in place on its (idle) colour: the maps,
/// the probes, and the saved state, so a restart keeps them.
fn prepare(shared: &Shared, d: &Deployment) -> anyhow::Result<()> {
    for (name, addr) in &d.backends {
        let id = shared
            .config
            .services
            .iter()
            .zip(&shared.ids)
            .find(|(s, _)| &s.name == name)
            .map(|(_, id)| *id)
            .ok_or_else(|| anyhow::anyhow!("no service {name}"))?;
        shared
            .dp
            .lock()
            .expect("poisoned")
            .set_backend(id, d.colour, *addr)?;
        shared.health.set_backend(name, d.colour, *addr);
        let mut state = shared.state.lock().expect("poisoned");
        state
            .backend_overrides
            .retain(|o| !(o.service == *name && o.colour == d.colour));
        state.backend_overrides.push(crate::state::BackendOverride {
            service: name.clone(),
            colour: d.colour,
            backend: *addr,
        });
        shared.store.save(&state)?;
        log::info!(
            "deployment {}: {name} {} backend is now {addr}",
            d.id,
            d.colour
        );
    }
    Ok(())
}

/// Flips back to `from` at once, then runs the rollback hook.
async fn roll_back(
    shared: &Arc<Shared>,
    d: &Deployment,
    from: Colour,
    why: RollbackReason,
    reason: String,
) -> End {
    let sh = shared.clone();
    let flipped = tokio::task::block_in_place(|| flip(&sh, from, FlipKind::Rollback(why)));
    if let Err(e) = flipped {
        return End(
            Phase::RolledBack,
            format!("{reason}; the flip back failed: {e:#}"),
        );
    }
    if let Some(hook) = &shared.config.deploy.rollback
        && let Err(e) = deploy::run_hook("rollback", hook, d, HOOK_TIMEOUT).await
    {
        log::warn!("deployment {}: {e}", d.id);
    }
    End(Phase::RolledBack, reason)
}
