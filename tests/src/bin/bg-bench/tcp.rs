//! Established TCP connections through flips and through floods of spoofed
//! segments: each keeps its colour until it closes. Counts the connections
//! that were never reset and delivered every message, in order, to the
//! colour they opened on.
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bg_tests::{
    agent::Agent,
    lab::{Backends, Family, Lab, service_addr_for},
    packet::{ACK, SYN},
    spoof,
    traffic::{TcpClient, TcpSink},
};

/// A lab with the agent steering TCP 601 (config `extra` appended) to
/// local blue and green sinks, green healthy (flips are gated on it).
struct TcpBench {
    blue: TcpSink,
    green: TcpSink,
    agent: Agent,
    lab: Lab,
}

impl TcpBench {
    fn start(extra: &str) -> Result<Self> {
        let lab = Lab::new(Backends::Local)?;
        let config = lab.write_test_config(&[("tcp", 601)], Family::V4, extra)?;
        let agent = Agent::start(&lab, &config)?;
        let blue = TcpSink::start(&lab.lb, lab.backend_for("blue", Family::V4, 601))?;
        let green = TcpSink::start(&lab.lb, lab.backend_for("green", Family::V4, 601))?;
        let up = bg_tests::wait_for(Duration::from_secs(10), || {
            (agent.status()["services"][0]["health"]["green"]["state"] == "up").then_some(())
        });
        if up.is_none() {
            bail!("green's TCP sink never came up: {}", agent.status());
        }
        Ok(Self {
            blue,
            green,
            agent,
            lab,
        })
    }

    fn flip(&self, colour: &str) -> Result<()> {
        let out = self.agent.ctl(&["flip", colour]);
        if !out.status.success() {
            bail!("flip {colour}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

/// Connections from the client to the service, and what each sent.
struct Fleet {
    /// None once a write failed: a reset, the connection is lost.
    clients: Vec<Option<TcpClient>>,
    sent: Vec<Vec<String>>,
}

impl Fleet {
    fn connect(lab: &Lab, n: usize) -> Result<Self> {
        let to = service_addr_for(Family::V4, 601);
        let clients = (0..n)
            .map(|_| TcpClient::connect(&lab.client, to).map(Some))
            .collect::<Result<_>>()?;
        Ok(Self {
            clients,
            sent: vec![Vec::new(); n],
        })
    }

    /// One message on every connection still alive.
    fn send_round(&mut self, round: usize) {
        for (i, client) in self.clients.iter_mut().enumerate() {
            let msg = vec![format!("conn-{i} round-{round}")];
            if client.as_mut().is_some_and(|c| c.send(&msg).is_err()) {
                *client = None;
            }
            self.sent[i].extend(msg);
        }
    }

    /// Closes every connection and counts those that survived: closed
    /// cleanly, with every message in order at `sink`.
    fn survivors(self, sink: TcpSink) -> usize {
        std::thread::sleep(Duration::from_millis(200));
        let closed_cleanly: Vec<bool> = self
            .clients
            .into_iter()
            .map(|c| c.is_some_and(|c| c.close().is_ok()))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let got = sink.finish();
        (0..closed_cleanly.len())
            .filter(|&i| closed_cleanly[i] && got.contains(&self.sent[i]))
            .count()
    }
}

pub fn run(quick: bool) -> Result<String> {
    let (connections, flips) = if quick { (20, 5) } else { (200, 50) };
    let b = TcpBench::start("")?;
    let mut fleet = Fleet::connect(&b.lab, connections)?;
    for round in 0..=flips {
        fleet.send_round(round);
        if round < flips {
            b.flip(if round % 2 == 0 { "green" } else { "blue" })?;
        }
    }
    // Every connection opened while blue was active.
    let survived = fleet.survivors(b.blue);
    let section = format!(
        "## TCP across flips\n\n{connections} established connections (opened on blue) each sent one message, then the agent flipped, {flips} times: {survived} of {connections} survived (never reset, closed cleanly, every message in order on blue). Green received {} connections.\n",
        b.green.finish().len()
    );
    print!("\n{section}");
    Ok(section)
}

/// Established connections through a flip and floods of spoofed TCP
/// segments, each `factor` times the size of the flow tables: SYNs, blind
/// ACKs, and each fake client's SYN then ACK. Reports the share of
/// connections that survived (never reset, every message on blue).
pub fn flood(quick: bool) -> Result<String> {
    const TABLE: u32 = 1024;
    let (connections, factor) = if quick { (20, 10) } else { (200, 100) };
    let b = TcpBench::start(&format!(
        "[tcp]\nflow_table_size = {TABLE}\npending_table_size = {TABLE}\n"
    ))?;
    // The backends' SYN-ACKs to the spoofed clients leave through the
    // reverse NAT towards the client's side, as on a real network.
    b.lab.lb.run(
        "ip",
        &["route", "add", "198.19.0.0/16", "via", "198.18.0.2"],
    )?;
    let mut fleet = Fleet::connect(&b.lab, connections)?;
    fleet.send_round(0);
    b.flip("green")?;
    let n = factor * TABLE;
    let pairs: Vec<Vec<u8>> = spoof::flood("198.18.0.1", 601, SYN, n / 2)
        .into_iter()
        .zip(spoof::flood("198.18.0.1", 601, ACK, n / 2))
        .flat_map(|(syn, ack)| [syn, ack])
        .collect();
    let floods = [
        ("SYN", spoof::flood("198.18.0.1", 601, SYN, n)),
        ("blind ACK", spoof::flood("198.18.0.1", 601, ACK, n)),
        ("SYN then ACK", pairs),
    ];
    let mut rates = Vec::new();
    for (round, (what, frames)) in floods.into_iter().enumerate() {
        let started = Instant::now();
        let count = spoof::send_ipv4(&b.lab.client, frames, Duration::from_secs(120))?;
        rates.push(format!(
            "{what} {:.0} kpps",
            count as f64 / started.elapsed().as_secs_f64() / 1e3
        ));
        fleet.send_round(round + 1);
    }
    std::thread::sleep(Duration::from_millis(100));
    let counters = b.agent.status()["counters"].clone();
    let survived = fleet.survivors(b.blue);
    let c = |k: &str| counters[k].as_u64().unwrap_or(0);
    let section = format!(
        "## TCP under a flood\n\n{connections} established connections (opened on blue), a flip to green, then three floods of spoofed segments from 198.19.0.0/16, each {factor}x the {TABLE}-entry flow tables ({n} segments: SYNs, blind ACKs, and SYN then ACK per fake client; sent at {}); every connection sent a message after each: **{survived} of {connections} survived** (never reset, every message in order on blue). Green received data on {} connections (the spoofed handshakes never complete). Data path: {} SYNs on live flows, {} admitted, {} admissions refused, {} segments on probation, {} reverse entries restored.\n",
        rates.join(", "),
        b.green.finish().iter().filter(|c| !c.is_empty()).count(),
        c("tcp_syn_on_live_flow"),
        c("tcp_admitted"),
        c("tcp_admission_refused"),
        c("tcp_probation"),
        c("tcp_reverse_restored"),
    );
    print!("\n{section}");
    Ok(section)
}
