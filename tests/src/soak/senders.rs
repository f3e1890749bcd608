//! The soak's senders: UDP syslog datagrams at a fixed rate, and TCP
//! connections that each send for a few seconds, close and reconnect.
//! Every message carries a unique token; the time it was sent is kept.
use std::{
    os::fd::AsRawFd as _,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{Options, TCP_PORT, UDP_PORT};
use crate::{
    lab::{Family, Lab, service_addr_for},
    traffic::{TcpClient, sender},
};

/// A TCP connection the soak opened, and what became of it.
pub struct Connection {
    pub opened: Instant,
    pub tokens: Vec<String>,
    /// The error that ended it, if it did not close cleanly.
    pub reset: Option<String>,
}

#[derive(Default)]
pub struct Sent {
    /// (token, when)
    pub udp: Vec<(String, Instant)>,
    pub tcp: Vec<Connection>,
    /// Connections that could not be opened at all: when, and why.
    pub refused_connects: Vec<(Instant, String)>,
}

pub struct Senders {
    threads: Vec<JoinHandle<()>>,
    sent: Arc<Mutex<Sent>>,
}

impl Senders {
    pub fn finish(self) -> Sent {
        for t in self.threads {
            let _ = t.join();
        }
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

/// Starts the senders; they stop by themselves at `deadline` less 2 s.
pub fn start(lab: &Lab, opts: &Options, deadline: Instant) -> Result<Senders> {
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let stop = deadline - Duration::from_secs(2);
    let mut threads = Vec::new();
    let socket = sender(&lab.client, service_addr_for(Family::V4, UDP_PORT))?;
    let (rate, record) = (opts.udp_rate, sent.clone());
    threads.push(std::thread::spawn(move || {
        let start = Instant::now();
        let mut i: u64 = 0;
        while Instant::now() < stop {
            let token = format!("soak-u-{i} ");
            let line = format!("<13>soak: {token}");
            let at = Instant::now();
            if socket.send(line.as_bytes()).is_ok() {
                record.lock().unwrap().udp.push((token, at));
            }
            i += 1;
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }));
    for c in 0..opts.tcp_connections {
        let ns = std::fs::File::open(lab.client.path())?;
        let (rate, record) = (opts.tcp_rate, sent.clone());
        let mut rng = fastrand::Rng::with_seed(opts.seed ^ (c as u64 + 1));
        threads.push(std::thread::spawn(move || {
            // This thread lives in the client's namespace from here on.
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                let refused = (Instant::now(), format!("setns: {e}"));
                record.lock().unwrap().refused_connects.push(refused);
                return;
            }
            let mut k: u64 = 0;
            while Instant::now() + Duration::from_millis(500) < stop {
                let opened = Instant::now();
                let to = service_addr_for(Family::V4, TCP_PORT);
                let mut client = match TcpClient::connect_here(to) {
                    Ok(client) => client,
                    Err(e) => {
                        let refused = (opened, format!("{e:#}"));
                        record.lock().unwrap().refused_connects.push(refused);
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                let life = opened + Duration::from_millis(rng.u64(2000..4000));
                let mut conn = Connection {
                    opened,
                    tokens: Vec::new(),
                    reset: None,
                };
                while Instant::now() < life.min(stop) {
                    let token = format!("soak-t{c}-{k} ");
                    k += 1;
                    match client.send(&[format!("<13>soak: {token}")]) {
                        Ok(()) => conn.tokens.push(token),
                        Err(e) => {
                            conn.reset = Some(format!("{e:#}"));
                            break;
                        }
                    }
                    std::thread::sleep(Duration::from_secs_f64(1.0 / f64::from(rate)));
                }
                if conn.reset.is_none()
                    && let Err(e) = client.close()
                {
                    conn.reset = Some(format!("closing: {e:#}"));
                }
                record.lock().unwrap().tcp.push(conn);
            }
        }));
    }
    Ok(Senders { threads, sent })
}
