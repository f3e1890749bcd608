//! The soak's senders: UDP syslog datagrams at a fixed rate, and TCP
//! connections that each send for a few seconds, close and reconnect.
//! Every message carries a unique token; the time it was sent is kept.
use std::{
    net::SocketAddr,
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
    /// When that error came, and what the data path's flow tables held
    /// for the connection then: what a reset outside any window needs
    /// explaining.
    pub reset_at: Option<(Instant, String)>,
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
    let pins = bluegreen::dataplane::pin_dir(&lab.pin_root, &lab.lb_if);
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
        let pins = pins.clone();
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
                    reset_at: None,
                };
                let tuple = (client.local_addr(), to);
                while Instant::now() < life.min(stop) {
                    let token = format!("soak-t{c}-{k} ");
                    k += 1;
                    match client.send(&[format!("<13>soak: {token}")]) {
                        Ok(()) => conn.tokens.push(token),
                        Err(e) => {
                            conn.reset = Some(format!("{e:#}"));
                            conn.reset_at = Some((Instant::now(), flow_entries(&pins, tuple)));
                            break;
                        }
                    }
                    std::thread::sleep(Duration::from_secs_f64(1.0 / f64::from(rate)));
                }
                if conn.reset.is_none()
                    && let Err(e) = client.close()
                {
                    conn.reset = Some(format!("closing: {e:#}"));
                    conn.reset_at = Some((Instant::now(), flow_entries(&pins, tuple)));
                }
                record.lock().unwrap().tcp.push(conn);
            }
        }));
    }
    Ok(Senders { threads, sent })
}

/// What `FLOWS4`, `FLOWS` and `PENDING_FLOWS` hold for the IPv4 TCP
/// connection `(client, service)`: colour, state and last-seen jiffy, or
/// "none".
fn flow_entries(pins: &std::path::Path, (client, service): (SocketAddr, SocketAddr)) -> String {
    use aya::maps::{HashMap, Map, MapData};
    use bg_common::{FlowKey, FlowKey4, FlowValue, PendingFlow};
    let (client_be, family) = bluegreen::dataplane::addr_words(client.ip());
    let (server_be, _) = bluegreen::dataplane::addr_words(service.ip());
    let key = FlowKey {
        client_be,
        server_be,
        client_port_be: client.port().to_be(),
        server_port_be: service.port().to_be(),
        proto: 6,
        family,
        _pad: [0; 2],
    };
    let open = |name: &str| MapData::from_pin(pins.join(name)).map(Map::LruHashMap);
    let flow = |name: &str, four: bool| -> String {
        let Ok(map) = open(name) else {
            return format!("{name} unreadable");
        };
        let found = if four {
            HashMap::<_, FlowKey4, FlowValue>::try_from(&map)
                .ok()
                .and_then(|m| m.get(&FlowKey4::of(&key), 0).ok())
        } else {
            HashMap::<_, FlowKey, FlowValue>::try_from(&map)
                .ok()
                .and_then(|m| m.get(&key, 0).ok())
        };
        match found {
            Some(v) => format!(
                "{name}: colour {} state {} seen at jiffy {}",
                v.colour, v.state, v.last_seen_jiffies
            ),
            None => format!("{name}: none"),
        }
    };
    let pending = match open("PENDING_FLOWS") {
        Ok(map) => match HashMap::<_, FlowKey, PendingFlow>::try_from(&map)
            .ok()
            .and_then(|m| m.get(&key, 0).ok())
        {
            Some(p) => format!(
                "PENDING_FLOWS: colour {} state {} isn seen {} seen at jiffy {}",
                p.colour, p.state, p.isn_seen, p.last_seen_jiffies
            ),
            None => "PENDING_FLOWS: none".to_owned(),
        },
        Err(_) => "PENDING_FLOWS unreadable".to_owned(),
    };
    format!(
        "port {}: {}; {}; {pending}",
        client.port(),
        flow("FLOWS4", true),
        flow("FLOWS", false)
    )
}
