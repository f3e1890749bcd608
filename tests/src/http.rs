//! Talking to the agent's HTTP server, which listens on loopback inside the
//! lab's steering namespace: every request runs on a thread in it.
use std::{io::BufRead as _, sync::mpsc, time::Duration};

use anyhow::Result;

use crate::{
    agent::{Agent, Launch},
    lab::{Backends, Family, Lab},
    netns::NetNs,
    traffic::Sink,
};

/// The agent's default HTTP address.
pub const BASE: &str = "http://127.0.0.1:9514";

/// An HTTP answer: status code and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> Result<Answer> {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => return Err(e.into()),
    };
    let status = resp.status();
    Ok(Answer {
        status,
        body: resp.into_string()?,
    })
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// GET `path` from inside `ns`.
pub fn get(ns: &NetNs, path: &str) -> Result<Answer> {
    let url = format!("{BASE}{path}");
    ns.enter(move || answer(agent().get(&url).call()))?
}

/// POST `body` (JSON text, may be empty) to `path` from inside `ns`, with
/// `Authorization: Bearer <token>` when a token is given.
pub fn post(ns: &NetNs, path: &str, token: Option<&str>, body: &str) -> Result<Answer> {
    let url = format!("{BASE}{path}");
    let token = token.map(str::to_owned);
    let body = body.to_owned();
    ns.enter(move || {
        let mut req = agent().post(&url).set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        answer(req.send_string(&body))
    })?
}

/// Opens `/api/events` inside `ns` and forwards each event as (name, data)
/// until `limit` passes. The stream is open once this returns.
pub fn events(ns: &NetNs, limit: Duration) -> Result<mpsc::Receiver<(String, String)>> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let url = format!("{BASE}/api/events");
    let path = ns.path();
    std::thread::spawn(move || {
        let Ok(file) = std::fs::File::open(&path) else {
            return;
        };
        // SAFETY: setns on this thread only, with a valid namespace fd.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
            return;
        }
        let resp = ureq::AgentBuilder::new()
            .timeout_read(limit)
            .build()
            .get(&url)
            .call();
        let _ = ready_tx.send(());
        let Ok(resp) = resp else { return };
        let mut name = String::new();
        for line in std::io::BufReader::new(resp.into_reader()).lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:")
                && tx.send((name.clone(), d.trim().to_owned())).is_err()
            {
                return;
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(10))?;
    Ok(rx)
}

/// Makes the agent's HTTP server, which listens on loopback inside `ns`,
/// reachable at `listen` on the host: each accepted connection is relayed
/// from a thread inside the namespace. For the lab's dashboard; the threads
/// end with their connections or the process.
pub fn forward_into(ns: &NetNs, listen: std::net::SocketAddr) -> Result<()> {
    let listener = std::net::TcpListener::bind(listen)?;
    let path = ns.path();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let path = path.clone();
            std::thread::spawn(move || {
                let Ok(file) = std::fs::File::open(&path) else {
                    return;
                };
                // SAFETY: setns on this thread only, with a valid namespace fd.
                let entered = unsafe {
                    libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                } == 0;
                let Some(server) = entered
                    .then(|| std::net::TcpStream::connect(BASE.trim_start_matches("http://")).ok())
                    .flatten()
                else {
                    return;
                };
                let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(std::net::Shutdown::Write);
                });
                let (mut c, mut s) = (client, server);
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
    Ok(())
}

/// A lab with the agent steering UDP 514 (IPv4) to local blue and green
/// sinks, both healthy.
pub struct UdpLab {
    // Field order: the agent and sinks go before the lab's namespaces.
    pub agent: Agent,
    _sinks: Vec<Sink>,
    pub lab: Lab,
}

impl UdpLab {
    pub fn new() -> Self {
        Self::start(&["blue", "green"])
    }

    /// Sinks only for `colours`, each waited for until healthy; a colour
    /// left out has no listener, so its probes find it down.
    pub fn start(colours: &[&str]) -> Self {
        Self::launched(colours, Launch::Nsenter)
    }

    /// `start`, with the agent launched as `launch` says.
    pub fn launched(colours: &[&str], launch: Launch) -> Self {
        let (lab, _, agent) = crate::agent::lab_with_agent_launched(
            Backends::Local,
            &[("udp", 514)],
            Family::V4,
            "",
            launch,
        );
        let sinks = colours
            .iter()
            .map(|c| Sink::start(&lab.lb, lab.backend(c, Family::V4)).expect("sink"))
            .collect();
        agent.wait_healthy(colours, Duration::from_secs(15));
        Self {
            agent,
            _sinks: sinks,
            lab,
        }
    }

    /// `bgctl token`.
    pub fn token(&self) -> String {
        let out = self.agent.ctl(&["token"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The active colour by the CLI, not by the API.
    pub fn active(&self) -> String {
        self.agent.status()["active"].as_str().unwrap().to_owned()
    }

    /// `POST /api/flip` with the token.
    pub fn flip_with_token(&self, colour: &str) -> Answer {
        let body = format!(r#"{{"colour":"{colour}"}}"#);
        post(&self.lab.lb, "/api/flip", Some(&self.token()), &body).expect("POST /api/flip")
    }
}

/// A host without kernel BTF, as the agent sees it: the counters that need
/// it must say they are unavailable.
pub const NO_KERNEL_BTF: Launch = Launch::PrivateMounts {
    setup: "mount -t tmpfs none /sys/kernel/btf",
};

/// An agent whose open-file limit (soft and hard) is 256.
pub const LIMITED_FILES: Launch = Launch::Shell {
    setup: "ulimit -n 256",
};

impl Default for UdpLab {
    fn default() -> Self {
        Self::new()
    }
}
