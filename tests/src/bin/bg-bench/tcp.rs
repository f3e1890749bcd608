//! Established TCP connections through flips: each keeps its colour until
//! it closes. Counts the connections that were never reset and delivered
//! every message, in order, to the colour they opened on.
use std::time::Duration;

use anyhow::{Result, bail};
use bg_tests::{
    agent::Agent,
    lab::{Backends, Family, Lab, service_addr_for},
    packet::{ACK, SYN},
    spoof,
    traffic::{TcpClient, TcpSink},
};

pub fn run(quick: bool) -> Result<String> {
    let (connections, flips) = if quick { (20, 5) } else { (200, 50) };
    let lab = Lab::new(Backends::Local)?;
    let config = lab.write_test_config(&[("tcp", 601)], Family::V4, "")?;
    let agent = Agent::start(&lab, &config)?;
    let blue = TcpSink::start(&lab.lb, lab.backend_for("blue", Family::V4, 601))?;
    let green = TcpSink::start(&lab.lb, lab.backend_for("green", Family::V4, 601))?;
    // Flips are gated on health: wait for green's first probes.
    let up = bg_tests::wait_for(Duration::from_secs(10), || {
        (agent.status()["services"][0]["health"]["green"]["state"] == "up").then_some(())
    });
    if up.is_none() {
        bail!("green's TCP sink never came up: {}", agent.status());
    }
    let to = service_addr_for(Family::V4, 601);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Some(TcpClient::connect(&lab.client, to)?));
    }
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); connections];
    for round in 0..=flips {
        for (i, client) in clients.iter_mut().enumerate() {
            let msg = vec![format!("conn-{i} round-{round}")];
            // A failed write is a reset: the connection is lost.
            if client.as_mut().is_some_and(|c| c.send(&msg).is_err()) {
                *client = None;
            }
            sent[i].extend(msg);
        }
        if round < flips {
            let colour = if round % 2 == 0 { "green" } else { "blue" };
            let out = agent.ctl(&["flip", colour]);
            if !out.status.success() {
                bail!("flip {colour}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let closed_cleanly: Vec<bool> = clients
        .into_iter()
        .map(|c| c.is_some_and(|c| c.close().is_ok()))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (on_blue, on_green) = (blue.finish(), green.finish());
    // Every connection opened while blue was active.
    let survived = (0..connections)
        .filter(|&i| closed_cleanly[i] && on_blue.contains(&sent[i]))
        .count();
    let section = format!(
        "## TCP across flips\n\n{connections} established connections (opened on blue) each sent one message, then the agent flipped, {flips} times: {survived} of {connections} survived (never reset, closed cleanly, every message in order on blue). Green received {} connections.\n",
        on_green.len()
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
    let lab = Lab::new(Backends::Local)?;
    let config = lab.write_test_config(
        &[("tcp", 601)],
        Family::V4,
        &format!("[tcp]\nflow_table_size = {TABLE}\npending_table_size = {TABLE}\n"),
    )?;
    let agent = Agent::start(&lab, &config)?;
    // The backends' SYN-ACKs to the spoofed clients leave through the
    // reverse NAT towards the client's side, as on a real network.
    lab.lb.run(
        "ip",
        &["route", "add", "198.19.0.0/16", "via", "198.18.0.2"],
    )?;
    let blue = TcpSink::start(&lab.lb, lab.backend_for("blue", Family::V4, 601))?;
    let green = TcpSink::start(&lab.lb, lab.backend_for("green", Family::V4, 601))?;
    let up = bg_tests::wait_for(Duration::from_secs(10), || {
        (agent.status()["services"][0]["health"]["green"]["state"] == "up").then_some(())
    });
    if up.is_none() {
        bail!("green's TCP sink never came up: {}", agent.status());
    }
    let to = service_addr_for(Family::V4, 601);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Some(TcpClient::connect(&lab.client, to)?));
    }
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); connections];
    let mut send_round = |clients: &mut Vec<Option<TcpClient>>, round: usize| {
        for (i, client) in clients.iter_mut().enumerate() {
            let msg = vec![format!("conn-{i} round-{round}")];
            if client.as_mut().is_some_and(|c| c.send(&msg).is_err()) {
                *client = None;
            }
            sent[i].extend(msg);
        }
    };
    send_round(&mut clients, 0);
    let out = agent.ctl(&["flip", "green"]);
    if !out.status.success() {
        bail!("flip green: {}", String::from_utf8_lossy(&out.stderr));
    }
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
        let started = std::time::Instant::now();
        let count = spoof::send_ipv4(&lab.client, frames, Duration::from_secs(120))?;
        rates.push(format!(
            "{what} {:.0} kpps",
            count as f64 / started.elapsed().as_secs_f64() / 1e3
        ));
        send_round(&mut clients, round + 1);
    }
    std::thread::sleep(Duration::from_millis(300));
    let counters = agent.status()["counters"].clone();
    let closed_cleanly: Vec<bool> = clients
        .into_iter()
        .map(|c| c.is_some_and(|c| c.close().is_ok()))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (on_blue, on_green) = (blue.finish(), green.finish());
    let survived = (0..connections)
        .filter(|&i| closed_cleanly[i] && on_blue.contains(&sent[i]))
        .count();
    let c = |k: &str| counters[k].as_u64().unwrap_or(0);
    let section = format!(
        "## TCP under a flood\n\n{connections} established connections (opened on blue), a flip to green, then three floods of spoofed segments from 198.19.0.0/16, each {factor}x the {TABLE}-entry flow tables ({n} segments: SYNs, blind ACKs, and SYN then ACK per fake client; sent at {}); every connection sent a message after each: **{survived} of {connections} survived** (never reset, every message in order on blue). Green took {} connections' worth of data (the spoofed handshakes never complete). Data path: {} SYNs on live flows, {} admitted, {} admissions refused, {} segments on probation, {} reverse entries restored.\n",
        rates.join(", "),
        on_green.iter().filter(|c| !c.is_empty()).count(),
        c("tcp_syn_on_live_flow"),
        c("tcp_admitted"),
        c("tcp_admission_refused"),
        c("tcp_probation"),
        c("tcp_reverse_restored"),
    );
    print!("\n{section}");
    Ok(section)
}
