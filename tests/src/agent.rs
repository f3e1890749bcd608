//! Running `bgctl agent` in a lab and talking to it with the real CLI.
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Result, bail};

use crate::lab::{Backends, Family, Lab};

/// The bgctl binary: $BGCTL_BIN (set by `cargo xtask test`) or target/release.
pub fn bgctl_bin() -> PathBuf {
    std::env::var_os("BGCTL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/bgctl");
            p.canonicalize().unwrap_or(p)
        })
}

/// How the agent is put into the lab's steering namespace: each the way
/// some operator does it. Only `nsenter` and `--netns` keep the host's
/// mounts; under `ip netns exec` the agent must find the host's bpffs itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `nsenter --net=/run/netns/NAME bgctl agent ...`
    Nsenter,
    /// `ip netns exec NAME bgctl agent ...`: private mounts, a fresh /sys.
    IpNetnsExec,
    /// `bgctl agent --netns NAME ...`
    NetnsFlag,
    /// nsenter, then a private mount namespace (sharing the host's bpffs)
    /// prepared by this shell command: to make the agent's host look like
    /// another, e.g. one without kernel BTF.
    PrivateMounts { setup: &'static str },
    /// nsenter, then this shell command before the agent (a lower limit,
    /// say).
    Shell { setup: &'static str },
}

pub struct Agent {
    child: Option<Child>,
    pub socket: PathBuf,
    ns_name: String,
    launch: Launch,
    args: Vec<String>,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent on the lab's lb interface and waits until it answers.
    pub fn start(lab: &Lab, config: &std::path::Path) -> Result<Self> {
        Self::start_with(lab, config, Launch::Nsenter)
    }

    /// `start`, entering the namespace the way `launch` says.
    pub fn start_with(lab: &Lab, config: &std::path::Path, launch: Launch) -> Result<Self> {
        let args = vec![
            "agent".to_owned(),
            "--iface".into(),
            lab.lb_if.clone(),
            "--config".into(),
            config.display().to_string(),
            "--pin-root".into(),
            lab.pin_root.display().to_string(),
            "--state-dir".into(),
            lab.path("state").display().to_string(),
        ];
        let mut agent = Self {
            child: None,
            socket: lab.path("agent.sock"),
            ns_name: lab.lb.name.clone(),
            launch,
            args,
            log: lab.path("agent.log"),
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = match self.launch {
            Launch::Nsenter => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{}", self.ns_name))
                    .arg("--")
                    .arg(bgctl_bin());
                c
            }
            Launch::IpNetnsExec => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns_name]).arg(bgctl_bin());
                c
            }
            Launch::NetnsFlag => Command::new(bgctl_bin()),
            Launch::PrivateMounts { setup } => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{}", self.ns_name))
                    .args(["--", "unshare", "--mount", "--propagation", "slave"])
                    .args(["sh", "-c", &format!("{setup} && exec \"$@\""), "sh"])
                    .arg(bgctl_bin());
                c
            }
            Launch::Shell { setup } => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{}", self.ns_name))
                    .args(["--", "sh", "-c", &format!("{setup} && exec \"$@\""), "sh"])
                    .arg(bgctl_bin());
                c
            }
        };
        command.arg("--socket").arg(&self.socket).args(&self.args);
        if self.launch == Launch::NetnsFlag {
            command.args(["--netns", &self.ns_name]);
        }
        let child = command
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        self.child = Some(child);
        let ready = crate::wait_for(Duration::from_secs(15), || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Some(false);
            }
            self.ctl(&["status"]).status.success().then_some(true)
        });
        if ready != Some(true) {
            bail!("agent did not come up; its log:\n{}", self.log_text());
        }
        Ok(())
    }

    /// The running agent's pid (nsenter execs it, so it is the child's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9: no clean-up of any kind runs in the agent.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `limit` for the agent to exit on its own; true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let exited = crate::wait_for(limit, || match self.child.as_mut()?.try_wait() {
            Ok(Some(_)) => Some(()),
            _ => None,
        });
        if exited.is_some() {
            self.child = None;
        }
        exited.is_some()
    }

    /// Stops the agent as an init system does (SIGTERM); true if it exited
    /// within 10 s.
    pub fn terminate(&mut self) -> bool {
        let Some(pid) = self.child.as_ref().map(|c| c.id()) else {
            return true;
        };
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        self.wait_exit(Duration::from_secs(10))
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Runs `bgctl --socket <ours> ARGS` and returns its output.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bgctl_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running bgctl")
    }

    /// `bgctl status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["--json", "status"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Waits up to `limit` until every backend of each of `colours` is up
    /// by its probe.
    pub fn wait_healthy(&self, colours: &[&str], limit: std::time::Duration) {
        let up = crate::wait_for(limit, || {
            let s = self.status();
            colours
                .iter()
                .all(|c| {
                    s["health_problems"][c]
                        .as_array()
                        .is_some_and(|p| p.is_empty())
                })
                .then_some(())
        });
        assert!(up.is_some(), "backends never came up: {}", self.status());
    }

    /// `bgctl deploy --status --json`, parsed.
    pub fn deploy_status(&self) -> serde_json::Value {
        let out = self.ctl(&["--json", "deploy", "--status"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("deployment JSON")
    }

    /// Waits up to `limit` for the deployment to reach `phase`; returns it.
    pub fn wait_phase(&self, phase: &str, limit: std::time::Duration) -> serde_json::Value {
        crate::wait_for(limit, || {
            let d = self.deploy_status();
            (d["phase"] == phase).then_some(d)
        })
        .unwrap_or_else(|| panic!("never reached {phase}: {}", self.deploy_status()))
    }

    /// Waits (up to 15 s) until every backend of `colour` is up by its
    /// probe, then flips to it the way an operator would: without --force.
    pub fn flip(&self, colour: &str) {
        let healthy = crate::wait_for(Duration::from_secs(15), || {
            let s = self.status();
            s["health_problems"][colour]
                .as_array()
                .is_some_and(|p| p.is_empty())
                .then_some(())
        });
        assert!(
            healthy.is_some(),
            "{colour} never became healthy: {}",
            self.status()["health_problems"][colour]
        );
        let out = self.ctl(&["flip", colour]);
        assert!(
            out.status.success(),
            "flip {colour} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `bgctl agent` once in the lab's steering namespace with `config`
/// and a throwaway socket, and returns how it ended: for checking that bad
/// input is refused before anything changes.
pub fn try_agent(lab: &Lab, config: &std::path::Path) -> Output {
    lab.lb
        .command(bgctl_bin().to_str().expect("utf-8 path"))
        .arg("--socket")
        .arg(lab.path("try.sock"))
        .args(["agent", "--iface", &lab.lb_if, "--config"])
        .arg(config)
        .arg("--pin-root")
        .arg(&lab.pin_root)
        .arg("--state-dir")
        .arg(lab.path("state"))
        .output()
        .expect("running bgctl agent")
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What most tests begin with: a lab of `backends`, its test config (the
/// `services` and `extra` of `Lab::write_test_config`) and an agent started
/// on it. Bind the three in this order, `let (lab, config, agent) = ...`:
/// locals drop in reverse, so the agent stops before the lab goes.
pub fn lab_with_agent(
    backends: Backends,
    services: &[(&str, u16)],
    family: Family,
    extra: &str,
) -> (Lab, PathBuf, Agent) {
    lab_with_agent_launched(backends, services, family, extra, Launch::Nsenter)
}

/// `lab_with_agent`, with the agent launched as `launch` says.
pub fn lab_with_agent_launched(
    backends: Backends,
    services: &[(&str, u16)],
    family: Family,
    extra: &str,
    launch: Launch,
) -> (Lab, PathBuf, Agent) {
    let lab = Lab::new(backends).expect("lab");
    let config = lab
        .write_test_config(services, family, extra)
        .expect("config");
    // A private mount namespace (ip netns exec) shares the host's bpffs
    // only once there is one to share.
    bluegreen::dataplane::bpffs::ensure_mounted(&lab.pin_root).expect("bpffs");
    let agent = Agent::start_with(&lab, &config, launch).expect("agent");
    (lab, config, agent)
}
