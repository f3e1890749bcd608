//! Fleet flip convergence: from the etcd write to each node's apply, for a
//! few agents and for many, against a three-member etcd; and what an idle
//! fleet agent costs. Flips are forced: the agents carry no traffic and
//! their backends do not answer, which is not what is measured here.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bg_tests::{
    etcd::{EtcdCluster, fleet_node},
    wait_for,
};

use super::median;

pub fn run(quick: bool) -> Result<String> {
    let sizes: &[usize] = if quick { &[3, 10] } else { &[3, 30] };
    let flips = if quick { 10 } else { 50 };
    let mut rows = Vec::new();
    let mut idle = String::new();
    for &n in sizes {
        println!("  fleet of {n} agents, {flips} flips ...");
        let cluster = EtcdCluster::start(3)?;
        let mut nodes = Vec::with_capacity(n);
        for k in 0..n {
            nodes.push(fleet_node(&cluster, k, "")?);
        }
        let (_, _, first) = &nodes[0];
        wait_for(Duration::from_secs(60), || {
            let out = first.ctl(&["--json", "fleet", "status"]);
            let f: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (f["connected"] == true && f["nodes"].as_array()?.len() == n).then_some(())
        })
        .with_context(|| format!("the fleet never showed {n} nodes"))?;
        let mut last_node = Vec::with_capacity(flips);
        let mut every_node = Vec::new();
        for i in 0..flips {
            let colour = if i % 2 == 0 { "green" } else { "blue" };
            let out = first.ctl(&["--json", "flip", "--force", colour]);
            if !out.status.success() {
                bail!("fleet flip {i}: {}", String::from_utf8_lossy(&out.stderr));
            }
            let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let fleet = &r["fleet"];
            last_node.push(
                fleet["converged_ms"]
                    .as_f64()
                    .context("a node did not converge")?,
            );
            for node in fleet["nodes"].as_array().context("nodes")? {
                every_node.push(node["after_ms"].as_f64().unwrap_or(f64::NAN));
            }
        }
        let max = last_node.iter().copied().fold(0.0, f64::max);
        rows.push(format!(
            "| {n} | {flips} | {:.0} | {max:.0} | {:.0} |",
            median(last_node),
            median(every_node),
        ));
        if n == sizes[0] {
            idle = idle_cost(first)?;
        }
    }
    let table = format!(
        "| agents | flips | last node applied, p50 (ms) | last node applied, max (ms) | any node, p50 (ms) |\n|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    print!("\n{table}\n{idle}\n");
    Ok(format!(
        "## Fleet convergence\n\nFrom the etcd write of the desired state to each agent publishing that it applied it (its map write done), as the flipping agent sees the node keys change; three etcd 3.4 members and the agents on this 2-core machine. Goal: under 100 ms at p50 and under 500 ms at max for 30 nodes.\n\n{table}\n{idle}\n"
    ))
}

/// The resident memory and the CPU of one idle fleet agent over 5 s.
fn idle_cost(agent: &bg_tests::agent::Agent) -> Result<String> {
    let pid = agent.status()["agent_pid"].as_u64().context("agent_pid")?;
    let ticks = |pid: u64| -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // utime and stime: fields 14 and 15, after the command in parentheses.
        let rest = stat.rsplit_once(')').context("stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    };
    let before = ticks(pid)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let used = ticks(pid)? - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = used as f64 / hz / started.elapsed().as_secs_f64() * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    Ok(format!(
        "An idle fleet agent (publishing every second, watching the desired state): {rss} kB resident, {cpu:.1}% of one core over 5 s."
    ))
}
