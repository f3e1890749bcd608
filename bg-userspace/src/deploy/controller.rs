//! Runs deployments: starts one after its checks, drives its phases up to
//! the switch, and resumes or ends one a restarted agent finds. Every
//! phase change is saved to `deployment.json` (so a restarted agent can
//! resume or end it) and appended to the history. The bake after the
//! switch is `bake.rs`'s. In fleet mode the record lives in etcd instead,
//! and the flips, backends and health are the fleet's (`FleetScope`).
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::sync::Notify;

use super::{FleetScope, HOOK_TIMEOUT, Lost, bake, gate, hooks, shadow, steps};
use crate::{
    core::{Core, OpError, OpResult},
    model::{Colour, Deployment, Event, Phase, Progressive, Protocol, RollbackReason, now_unix_ms},
    store::durable,
};

const DEPLOYMENT_FILE: &str = "deployment.json";

/// The deployment controller: the current (or last) deployment, and the
/// core it flips through.
pub struct Deployer {
    core: Arc<Core>,
    pub(super) current: Mutex<Option<Deployment>>,
    abort: AtomicBool,
    pub(super) wake: Notify,
    path: PathBuf,
    /// Fleet mode: where the deployment acts instead of this core alone.
    fleet: OnceLock<Arc<dyn FleetScope>>,
    /// This agent runs the deployment's phases now.
    pub(super) running: AtomicBool,
    /// Another agent took the deployment over: this one stops and writes
    /// nothing more.
    lost: AtomicBool,
    /// `bgctl promote`: the step in force may end now.
    pub(super) promote: AtomicBool,
}

/// How a deployment ended early.
pub(super) struct End(pub(super) Phase, pub(super) String);

/// `deployment.json`: the current or last deployment, read at start before
/// the data path changes, so a damaged file refuses the start cleanly.
pub struct SavedDeployment {
    current: Option<Deployment>,
    path: PathBuf,
}

impl SavedDeployment {
    /// One that does not parse is an error: a deployment in bake must
    /// resume.
    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(DEPLOYMENT_FILE);
        let current = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} does not parse ({e}). It records the current or last deployment, which the agent resumes or ends; it refuses to start without it. {} may hold the one before; or remove the file to forget it",
                    path.display(),
                    durable::previous(&path).display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => bail!("{}: {e}", path.display()),
        };
        Ok(Self { current, path })
    }
}

impl Deployer {
    pub fn new(core: Arc<Core>, saved: SavedDeployment) -> Arc<Self> {
        Arc::new(Self {
            core,
            current: Mutex::new(saved.current),
            abort: AtomicBool::new(false),
            wake: Notify::new(),
            path: saved.path,
            fleet: OnceLock::new(),
            running: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            promote: AtomicBool::new(false),
        })
    }

    /// Fleet mode: deployments act on the fleet through `scope`.
    pub fn join_fleet(&self, scope: Arc<dyn FleetScope>) {
        let _ = self.fleet.set(scope);
    }

    pub(super) fn fleet(&self) -> Option<&Arc<dyn FleetScope>> {
        self.fleet.get()
    }

    /// Whether this agent runs the deployment's phases now.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> Option<Deployment> {
        self.current.lock().expect("poisoned").clone()
    }

    pub(super) fn save(&self, d: &Deployment) {
        if let Some(fleet) = self.fleet() {
            if let Err(Lost::Control(holder)) = fleet.save(d) {
                self.lost.store(true, Ordering::SeqCst);
                self.wake.notify_waiters();
                log::warn!(
                    "deployment {}: {holder} controls it now; this agent stops running it",
                    d.id
                );
            }
            return;
        }
        let written = serde_json::to_vec_pretty(d)
            .map_err(std::io::Error::other)
            .and_then(|b| durable::write(&self.path, &b, 0o600, true));
        if let Err(e) = written {
            log::warn!("{}: cannot save the deployment: {e}", self.path.display());
        }
    }

    pub(super) fn set_phase(&self, phase: Phase, reason: Option<String>) {
        if self.lost() {
            return;
        }
        let d = {
            let mut cur = self.current.lock().expect("poisoned");
            let Some(d) = cur.as_mut() else { return };
            d.phase = phase;
            d.phase_started_unix_ms = now_unix_ms();
            if reason.is_some() {
                d.reason = reason.clone();
            }
            // Under the lock: a reader that sees the phase (`deploy --wait`
            // stops at a terminal one) finds its history line too.
            self.core.history().append(&Event::Deploy {
                id: d.id.clone(),
                colour: d.colour,
                version: d.version.clone(),
                phase,
                reason: reason.clone(),
            });
            d.clone()
        };
        // Outside the lock: in fleet mode the save goes to etcd, which may
        // take seconds, and status readers must not wait on it. One task
        // runs the phases, so saves keep their order.
        self.save(&d);
        if self.lost() {
            return;
        }
        if phase.is_terminal()
            && let Some(fleet) = self.fleet()
        {
            fleet.release();
        }
        log::info!(
            "deployment {} to {}: {phase:?}{}",
            d.id,
            d.colour,
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }

    /// Starts a deployment onto the idle colour, first checking the backends it
    /// is to put in place.
    pub fn start(
        self: &Arc<Self>,
        colour: Colour,
        version: Option<String>,
        backends: Vec<(String, std::net::SocketAddr)>,
        force: bool,
        progressive: Option<Progressive>,
    ) -> OpResult<Deployment> {
        let mut cur = self.current.lock().expect("poisoned");
        self.check_start(cur.as_ref(), colour, version.as_deref(), &backends, force)?;
        let mut d = Deployment::new(colour, version, now_unix_ms());
        d.backends = backends;
        d.forced = force;
        d.progressive = progressive;
        if let Some(fleet) = self.fleet() {
            // etcd decides between two deployments started at once.
            d.controller = Some(fleet.node().to_owned());
            drop(cur);
            fleet.claim(&d)?;
            cur = self.current.lock().expect("poisoned");
        }
        *cur = Some(d.clone());
        drop(cur);
        self.abort.store(false, Ordering::SeqCst);
        self.lost.store(false, Ordering::SeqCst);
        self.set_phase(Phase::Prepare, None);
        self.spawn_run(Phase::Prepare);
        Ok(d)
    }

    /// What refuses a deployment before it starts (`start`, and
    /// `bgctl deploy --dry-run`).
    pub(super) fn check_start(
        &self,
        cur: Option<&Deployment>,
        colour: Colour,
        version: Option<&str>,
        backends: &[(String, std::net::SocketAddr)],
        force: bool,
    ) -> OpResult<()> {
        if let Some(d) = cur
            && !d.phase.is_terminal()
        {
            return Err(OpError::refused(format!(
                "deployment {} to {} is still in phase {:?}{}; wait for it, or stop it with `bgctl abort`",
                d.id,
                d.colour,
                d.phase,
                d.controller
                    .as_deref()
                    .map(|c| format!(", run by {c}"))
                    .unwrap_or_default()
            )));
        }
        if let Some(v) = version {
            super::check_version_label(v)?;
        }
        self.core.check_attached()?;
        let active = self.active()?;
        if active == colour {
            return Err(OpError::refused(format!(
                "{colour} is the active colour; deploy onto the idle colour, {}",
                colour.other()
            )));
        }
        self.check_backends(colour, backends)?;
        if !force {
            self.check_drift()?;
            self.check_evidence()?;
        }
        if self.core.steering()?.is_split() {
            return Err(OpError::refused(format!(
                "senders are split ({}); end the split first with `bgctl flip <colour>` or `bgctl shift`",
                self.core.steering()?
            )));
        }
        Ok(())
    }

    fn spawn_run(self: &Arc<Self>, from: Phase) {
        self.running.store(true, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            me.clone().run(from).await;
            me.running.store(false, Ordering::SeqCst);
        });
    }

    /// Stops the running deployment: before the switch it ends there; after
    /// it, the controller rolls back.
    pub fn abort(&self) -> OpResult<Deployment> {
        match self.snapshot() {
            Some(d) if !d.phase.is_terminal() => {
                if let Some(fleet) = self.fleet()
                    && !self.running()
                {
                    // Another agent runs it: it aborts on seeing the request.
                    fleet.request_abort(&d.id)?;
                    return Ok(d);
                }
                self.abort.store(true, Ordering::SeqCst);
                self.wake.notify_waiters();
                Ok(d)
            }
            _ => Err(OpError::not_found("no deployment is running")),
        }
    }

    /// Decides what a restarted agent does with a deployment it finds
    /// unfinished. It never flips here: a deployment that had not switched
    /// ends where it was; one in bake resumes its watch (and may roll back,
    /// with a recorded reason).
    pub fn resume(self: &Arc<Self>) -> anyhow::Result<()> {
        if self.fleet().is_some() {
            // The fleet's record is in etcd; the follower takes it over.
            return Ok(());
        }
        let Some(d) = self.snapshot() else {
            return Ok(());
        };
        Ok(self.pick_up(d, "the agent restarted")?)
    }

    /// Fleet mode: this agent won control of `d`, whose controller was
    /// lost; it goes on by the restart rules. A deployment it runs already
    /// (it won its own back) just goes on.
    pub fn take_over(self: &Arc<Self>, mut d: Deployment, node: &str) -> OpResult<()> {
        self.lost.store(false, Ordering::SeqCst);
        if self.running() {
            return Ok(());
        }
        let lost = d.controller.replace(node.to_owned());
        *self.current.lock().expect("poisoned") = Some(d.clone());
        self.abort.store(false, Ordering::SeqCst);
        log::warn!(
            "deployment {}: taking it over from {}",
            d.id,
            lost.as_deref().unwrap_or("a lost agent")
        );
        let why = format!(
            "its controller ({}) was lost",
            lost.as_deref().unwrap_or("?")
        );
        self.pick_up(d, &why)
    }

    /// Fleet mode: `holder` controls the deployment now; this agent stops
    /// running it at its next look, and writes nothing more.
    pub fn yield_to(&self, holder: &str) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            log::warn!("the deployment is controlled by {holder} now; this agent stops running it");
        }
        self.wake.notify_waiters();
    }

    /// Fleet mode: the record as etcd has it, shown by an agent that does
    /// not run it.
    pub fn mirror(&self, d: Deployment) {
        if !self.running() {
            *self.current.lock().expect("poisoned") = Some(d);
        }
    }

    /// Goes on with `d`, found unfinished after `restarted`.
    fn pick_up(self: &Arc<Self>, d: Deployment, restarted: &str) -> OpResult<()> {
        if d.phase.is_terminal() {
            return Ok(());
        }
        let active = self.active()?;
        match d.phase {
            // A shadow's copies were ended when the restarted core opened.
            Phase::Prepare | Phase::WaitHealthy | Phase::Shadow | Phase::Validate => {
                self.set_phase(
                    Phase::Aborted,
                    Some(format!("{restarted} before the switch; nothing moved")),
                );
            }
            // Some senders may be on the new colour: all go back.
            Phase::Shift | Phase::Switch if d.progressive.is_some() && active != d.colour => {
                let reason = format!(
                    "{restarted} during its steps; every sender is back on {}",
                    d.from
                );
                self.running.store(true, Ordering::SeqCst);
                let me = self.clone();
                tokio::spawn(async move {
                    let End(phase, reason) =
                        bake::roll_back(&me, &d, RollbackReason::Interrupted, reason).await;
                    me.set_phase(phase, Some(reason));
                    me.running.store(false, Ordering::SeqCst);
                });
            }
            Phase::Switch | Phase::Bake | Phase::Complete if active != d.colour => {
                self.set_phase(
                    Phase::Failed,
                    Some(format!(
                        "{restarted} and {} is not active; nothing flipped",
                        d.colour
                    )),
                );
            }
            Phase::Complete => self.set_phase(
                Phase::Done,
                Some(format!("{restarted} while keeping {} warm", d.from)),
            ),
            _ => {
                log::info!(
                    "deployment {}: {restarted} during {:?}; resuming the bake",
                    d.id,
                    d.phase
                );
                self.spawn_run(Phase::Bake);
            }
        }
        Ok(())
    }

    async fn run(self: Arc<Self>, from_phase: Phase) {
        match self.phases(from_phase).await {
            Ok(()) => {}
            Err(End(phase, reason)) => self.set_phase(phase, Some(reason)),
        }
    }

    pub(super) fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// Waits for a health change not yet seen by `health`, an abort, or
    /// `limit`. A change made while the caller was busy returns at once.
    pub(super) async fn wait_event(
        &self,
        health: &mut tokio::sync::watch::Receiver<u64>,
        limit: Duration,
    ) {
        tokio::select! {
            _ = health.changed() => {}
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(limit) => {}
        }
    }

    /// Runs the phases from `start` on; returns how it ended early.
    async fn phases(self: &Arc<Self>, start: Phase) -> Result<(), End> {
        let d = self
            .snapshot()
            .ok_or_else(|| End(Phase::Failed, "no deployment".into()))?;
        let core = &self.core;
        let settings = core.config().deploy.clone();
        let mut health = core.health().subscribe();
        if start <= Phase::Prepare {
            self.prepare(&d)
                .map_err(|e| End(Phase::Failed, format!("prepare: {e:#}; nothing moved")))?;
        }
        if start <= Phase::WaitHealthy {
            self.set_phase(Phase::WaitHealthy, None);
            let deadline = Instant::now() + Duration::from_secs(settings.healthy_timeout_s);
            loop {
                self.check_abort_before_switch()?;
                let problems = self.problems(d.colour);
                if problems.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(End(
                        Phase::Failed,
                        format!(
                            "{} not healthy within {} s: {}",
                            d.colour,
                            settings.healthy_timeout_s,
                            problems.join("; ")
                        ),
                    ));
                }
                self.wait_event(&mut health, Duration::from_millis(100))
                    .await;
            }
        }
        if start <= Phase::Shadow {
            shadow::run(self, &d, &mut health).await?;
        }
        if start <= Phase::Validate {
            self.set_phase(Phase::Validate, None);
            self.validate(&d).await?;
            self.check_abort_before_switch()?;
        }
        // The pre-switch hook runs before the first sender moves: before
        // the first step, or before the switch.
        let pre_switch = async || match &settings.pre_switch {
            Some(hook) => hooks::run_hook("pre-switch", hook, &d, HOOK_TIMEOUT)
                .await
                .map_err(|e| End(Phase::Failed, format!("{e}; nothing moved"))),
            None => Ok(()),
        };
        if start <= Phase::Shift && d.progressive.is_some() {
            pre_switch().await?;
            steps::run(self, &d, &mut health).await?;
        }
        if start <= Phase::Switch {
            self.set_phase(Phase::Switch, None);
            if d.progressive.is_none() {
                pre_switch().await?;
            }
            if let Err(e) = self.switch(d.colour, None, d.forced) {
                let reason = format!("switch refused: {e:#}");
                return Err(match d.progressive {
                    // The steps moved senders: they go back.
                    Some(_) => bake::roll_back(self, &d, RollbackReason::Health, reason).await,
                    None => End(Phase::Failed, reason),
                });
            }
            if let Some(hook) = &settings.post_switch
                && let Err(e) = hooks::run_hook("post-switch", hook, &d, HOOK_TIMEOUT).await
            {
                log::warn!("deployment {}: {e}", d.id);
            }
        }
        self.set_phase(Phase::Bake, None);
        bake::bake(self, &d, &mut health).await?;
        bake::keep_warm(self, &d, &mut health).await?;
        self.set_phase(Phase::Done, Some(format!("{} is idle", d.from)));
        Ok(())
    }

    pub(super) fn check_abort_before_switch(&self) -> Result<(), End> {
        if self.lost() {
            return Err(End(Phase::Failed, "another agent took over".into()));
        }
        if self.aborted() {
            return Err(End(
                Phase::Aborted,
                "aborted by the operator before the switch".into(),
            ));
        }
        Ok(())
    }

    /// The performance gate: load on every backend of the new colour, in
    /// its protocol; for UDP, whose load proves nothing by silence, the
    /// data path must reach the host too.
    async fn validate(&self, d: &Deployment) -> Result<(), End> {
        let core = &self.core;
        let targets: Vec<_> = core
            .config()
            .services
            .iter()
            .map(|s| gate::GateTarget {
                service: s.name.clone(),
                protocol: s.protocol,
                app: s.app,
                tls: s.tls.clone(),
                backend: core.backend(s, d.colour),
            })
            .collect();
        let settings = core.config().deploy.clone();
        let mut results = tokio::task::spawn_blocking(move || {
            targets
                .iter()
                .map(|t| gate::validate_backend(t, &settings))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| End(Phase::Failed, format!("validation task: {e}")))?;
        for r in results.iter_mut().filter(|r| r.protocol == Protocol::Udp) {
            if let Err(e) = core.judge_path(&r.service, d.colour, r.backend, r.protocol, true) {
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
        if let Some(cur) = self.current.lock().expect("poisoned").as_mut() {
            cur.gate = results;
        }
        if !failed.is_empty() {
            return Err(End(
                Phase::Failed,
                format!("performance gate: {}", failed.join("; ")),
            ));
        }
        Ok(())
    }

    /// Puts the deployment's backends in place on its (idle) colour: the
    /// maps, the probes, and the saved state, so a restart keeps them.
    fn prepare(&self, d: &Deployment) -> OpResult<()> {
        if let Some(fleet) = self.fleet() {
            return fleet.put_backends(d.colour, &d.backends);
        }
        for (name, addr) in &d.backends {
            self.core.put_backend(name, d.colour, *addr)?;
            log::info!(
                "deployment {}: {name} {} backend is now {addr}",
                d.id,
                d.colour
            );
        }
        Ok(())
    }

    pub(super) fn core(&self) -> &Arc<Core> {
        &self.core
    }
}
