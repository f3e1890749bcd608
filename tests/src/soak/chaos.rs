//! The soak's chaos episodes, each the way it happens to an operator.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{COLOURS, Soak, start_server};
use crate::wait_for;

#[derive(Clone, Copy, Debug)]
pub enum Episode {
    /// `kill -9` of the agent, a second without it, then a restart as the
    /// README starts it.
    Kill9,
    /// `bgctl deploy` onto the idle colour, whose rsyslogd is killed in
    /// bake: the agent must roll back by itself.
    DeployRolledBack,
    /// The idle colour's rsyslogd restarted, as `systemctl restart` does
    /// (SIGTERM, so it writes what it holds), after `bgctl drain`.
    BackendRestart,
    /// The state directory's file system filled up for 3 s, flips going on.
    DiskFull,
}

impl Episode {
    pub const ALL: [Episode; 4] = [
        Episode::Kill9,
        Episode::DeployRolledBack,
        Episode::BackendRestart,
        Episode::DiskFull,
    ];

    pub fn run(self, soak: &mut Soak) -> Result<()> {
        match self {
            Episode::Kill9 => kill9(soak),
            Episode::DeployRolledBack => deploy_rolled_back(soak),
            Episode::BackendRestart => backend_restart(soak),
            Episode::DiskFull => disk_full(soak),
        }
    }
}

fn kill9(soak: &mut Soak) -> Result<()> {
    let before = soak.active().context("status before the kill")?;
    if let Some(f) = soak.agent.pid().and_then(footprint) {
        soak.report.footprints.push(f);
    }
    soak.agent.kill9();
    std::thread::sleep(Duration::from_secs(1));
    soak.agent.restart().context("restarting the agent")?;
    let after = soak.active().context("status after the restart")?;
    if after != before {
        bail!(
            "the restarted agent steers to {}, the killed one to {}",
            COLOURS[after],
            COLOURS[before]
        );
    }
    soak.report.restarts_survived += 1;
    // A fresh agent's probes judge the backends afresh; flips wait for it.
    soak.agent.wait_healthy(&COLOURS, Duration::from_secs(15));
    Ok(())
}

/// How long before its death a message may still be in a killed rsyslogd's
/// queues, unwritten: a CI run lost a datagram sent under a millisecond
/// before the SIGKILL, counted as a fault while the window began at it.
pub const HELD: Duration = Duration::from_millis(100);

fn deploy_rolled_back(soak: &mut Soak) -> Result<()> {
    let from = soak.active().context("status")?;
    let to = 1 - from;
    soak.agent
        .wait_healthy(&[COLOURS[to]], Duration::from_secs(15));
    let start = Instant::now();
    let out = soak.agent.ctl(&["deploy", COLOURS[to], "--force"]);
    if !out.status.success() {
        bail!("deploy refused: {}", String::from_utf8_lossy(&out.stderr));
    }
    let window = |soak: &mut Soak, end: Instant| {
        let now = soak.active().unwrap_or(from);
        soak.timeline
            .lock()
            .unwrap()
            .changes
            .push((start, end, now));
    };
    let in_bake = wait_for(Duration::from_secs(20), || {
        (soak.agent.deploy_status()["phase"] == "bake").then_some(())
    });
    if in_bake.is_none() {
        window(soak, Instant::now());
        bail!("never reached bake: {}", soak.agent.deploy_status());
    }
    // The new colour dies in bake.
    let killed = Instant::now();
    soak.servers[to] = None;
    let back = wait_for(Duration::from_secs(10), || {
        (soak.active() == Some(from)).then(Instant::now)
    });
    let Some(back) = back else {
        window(soak, Instant::now());
        bail!("no rollback: {}", soak.agent.deploy_status());
    };
    // Documented: what went to the dead colour between its death and the
    // rollback is lost (docs/deployments.md, bench --rollback), and so is
    // what it had taken but not yet written when it died (HELD).
    {
        let mut t = soak.timeline.lock().unwrap();
        t.loss_windows.push((killed - HELD, back, to));
    }
    window(soak, back);
    soak.report.note(format!(
        "rolled back {} ms after {} died",
        back.duration_since(killed).as_millis(),
        COLOURS[to]
    ));
    soak.report.rollbacks += 1;
    let phase = wait_for(Duration::from_secs(5), || {
        let d = soak.agent.deploy_status();
        (d["phase"] == "rolled-back").then_some(d)
    });
    if phase.is_none() {
        bail!(
            "deployment not marked rolled-back: {}",
            soak.agent.deploy_status()
        );
    }
    soak.servers[to] = Some(start_server(&soak.lab, to)?);
    soak.report.backend_restarts += 1;
    soak.agent
        .wait_healthy(&[COLOURS[to]], Duration::from_secs(15));
    Ok(())
}

fn backend_restart(soak: &mut Soak) -> Result<()> {
    let idle = 1 - soak.active().context("status")?;
    // The last flip's datagrams are in rsyslog's file before it stops.
    std::thread::sleep(Duration::from_secs(1));
    let drain_started = Instant::now();
    let out = soak.agent.ctl(&["drain", COLOURS[idle], "--timeout", "10"]);
    if !out.status.success() {
        bail!("drain: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stop = Instant::now();
    if let Some(server) = soak.servers[idle].take() {
        server.stop();
    }
    // What the drain saw, for a reset near this stop.
    let said = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    soak.timeline.lock().unwrap().events.push((
        stop,
        Instant::now(),
        format!(
            "{}'s rsyslogd stopped (SIGTERM) after a {} ms drain whose first line said \"{said}\"",
            COLOURS[idle],
            stop.duration_since(drain_started).as_millis()
        ),
    ));
    soak.servers[idle] = Some(start_server(&soak.lab, idle)?);
    soak.report.backend_restarts += 1;
    soak.agent
        .wait_healthy(&[COLOURS[idle]], Duration::from_secs(15));
    Ok(())
}

fn disk_full(soak: &mut Soak) -> Result<()> {
    const UNRECORDED: &str = "could not record the flip";
    let filler = soak.state_dir.join("filler");
    let warned = soak.agent.log_text().matches(UNRECORDED).count();
    let full = fill(&filler);
    let ok = soak.report.flips_ok;
    // Each flip that goes through must tell its caller it was not recorded.
    let mut told = 0u64;
    for _ in 0..3 {
        if let Some(out) = soak.flip()
            && out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("the flip is live but NOT recorded")
        {
            told += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = std::fs::remove_file(&filler);
    full.context("filling the state directory")?;
    soak.report.disk_full_episodes += 1;
    // Flips go on with the disk full (the map write needs no disk); the
    // agent says that their record could not be written.
    let unrecorded = soak.agent.log_text().matches(UNRECORDED).count() - warned;
    let through = soak.report.flips_ok - ok;
    soak.report.note(format!(
        "disk full: {through} of 3 flips went through, {unrecorded} logged as unrecorded, {told} told their caller"
    ));
    if told != through {
        bail!(
            "with the disk full, {through} flips went through but only {told} told their caller they were not recorded"
        );
    }
    // Free again: the next flip must go through.
    let before = soak.report.flips_ok;
    soak.flip();
    if soak.report.flips_ok == before {
        bail!("a flip after the disk was freed was refused");
    }
    Ok(())
}

/// Writes `path` until the file system is full.
pub fn fill(path: &Path) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Partial blocks too: not a byte left.
    while f.write(&[0]).is_ok_and(|n| n == 1) {}
    Ok(())
}

/// The agent's resident memory (KiB) and open descriptors.
pub fn footprint(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

/// A small tmpfs mounted over a directory, unmounted on drop.
pub struct TmpfsMount(PathBuf);

impl TmpfsMount {
    pub fn new(dir: &Path, size: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("soak-state")
            .arg(dir)
            .output()?;
        if !out.status.success() {
            bail!("mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        }
        crate::cleanup::track_mount(dir);
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        crate::cleanup::untrack_mount(&self.0);
        let _ = std::process::Command::new("umount")
            .args(["--lazy"])
            .arg(&self.0)
            .status();
    }
}
