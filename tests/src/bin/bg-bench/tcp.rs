//! Established TCP connections through flips: each keeps its colour until
//! it closes. Counts the connections that were never reset and delivered
//! every message, in order, to the colour they opened on.
use std::time::Duration;

use anyhow::{Result, bail};
use bg_tests::{
    agent::Agent,
    lab::{Backends, Family, Lab, service_addr_for},
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
