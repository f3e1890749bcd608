//! Detection-to-rollback: green dies during a deployment's bake while a
//! steady UDP stream runs. Measures the time from the kill to the automatic
//! flip back, and the messages lost to the dead green, against the same
//! window with no automatic rollback (green forced active and left dead).
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bg_tests::{
    agent::Agent,
    lab::{Backends, Family, Lab, service_addr},
    traffic::{Sink, occurrences, send_paced, sender},
    wait_for,
};

/// Probe settings the issue names: 100 ms interval, fall 3.
const HEALTH: &str = "[service.health]\ninterval_ms = 100\nfall = 3\n";
/// The faster interval while a backend is failing, in the second run.
const FASTINTER_MS: u32 = 25;
const DEPLOY: &str =
    "[deploy]\nhealthy_timeout_s = 10\nbake_s = 60\nkeep_warm_s = 0\nvalidate_messages = 100\n";
const RATE: u32 = 1000;
const STREAM: usize = 3000;
const KILL_AFTER: Duration = Duration::from_millis(500);

struct Outcome {
    kill_to_rollback_ms: Option<u64>,
    /// From the history's "green down" probe event to its rollback: the
    /// controller's reaction, apart from the probes' detection.
    down_to_rollback_ms: Option<u64>,
    lost: usize,
    sent_after_kill: usize,
}

fn scenario(auto_rollback: bool, fastinter_ms: Option<u32>) -> Result<Outcome> {
    let lab = Lab::new(Backends::Local)?;
    let fast = fastinter_ms.map_or(String::new(), |ms| format!("fastinter_ms = {ms}\n"));
    let config = lab.write_test_config(
        &[("udp", 514)],
        Family::V4,
        &format!("{HEALTH}{fast}{DEPLOY}"),
    )?;
    let agent = Agent::start(&lab, &config)?;
    let blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4))?;
    let green = Sink::start(&lab.lb, lab.backend("green", Family::V4))?;
    if auto_rollback {
        // UDP judged by its probe's silence: a deployment needs --force.
        let out = agent.ctl(&["deploy", "green", "--force"]);
        if !out.status.success() {
            bail!("deploy: {}", String::from_utf8_lossy(&out.stderr));
        }
        wait_for(Duration::from_secs(20), || {
            let out = agent.ctl(&["--json", "deploy", "--status"]);
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (d["phase"] == "bake").then_some(())
        })
        .context("the deployment never reached bake")?;
    } else {
        agent.flip("green");
    }
    let socket = sender(&lab.client, service_addr(Family::V4))?;
    let msgs: Vec<String> = (0..STREAM).map(|i| format!("rb-{i} ")).collect();
    let copy = msgs.clone();
    let started = std::time::Instant::now();
    let streamer = std::thread::spawn(move || send_paced(&socket, &copy, RATE));
    std::thread::sleep(KILL_AFTER);
    let killed_at = bluegreen::model::now_unix_ms();
    let kill_offset = started.elapsed();
    let before_kill = green.finish();
    streamer.join().expect("streamer")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.ctl(&["--json", "history", "--limit", "1000"]);
    let events: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let rolled_back_at = events
        .iter()
        .find(|e| e["event"] == "rollback")
        .and_then(|e| e["at_unix_ms"].as_u64());
    let kill_to_rollback_ms = rolled_back_at.map(|at| at.saturating_sub(killed_at));
    let down_at = events
        .iter()
        .filter(|e| e["event"] == "probe" && e["colour"] == "green" && e["state"] == "down")
        .filter_map(|e| e["at_unix_ms"].as_u64())
        .find(|at| *at >= killed_at);
    let down_to_rollback_ms = rolled_back_at
        .zip(down_at)
        .map(|(rb, down)| rb.saturating_sub(down));
    let (on_blue, on_green) = (
        occurrences(&blue.finish(), &msgs),
        occurrences(&before_kill, &msgs),
    );
    let lost = msgs
        .iter()
        .filter(|m| on_blue[*m] + on_green[*m] == 0)
        .count();
    let sent_after_kill = STREAM - (kill_offset.as_secs_f64() * f64::from(RATE)) as usize;
    Ok(Outcome {
        kill_to_rollback_ms,
        down_to_rollback_ms,
        lost,
        sent_after_kill,
    })
}

/// Runs both and returns the figures as a Markdown section.
pub fn run() -> Result<String> {
    let with = scenario(true, None)?;
    let fast = scenario(true, Some(FASTINTER_MS))?;
    let without = scenario(false, None)?;
    let target = 100 * 3 + 20;
    let timing = |o: &Outcome| match o.kill_to_rollback_ms {
        Some(ms) => format!("{ms} ms ({})", if ms <= target { "met" } else { "MISSED" }),
        None => "no rollback happened".to_owned(),
    };
    let reaction = |o: &Outcome| match o.down_to_rollback_ms {
        Some(ms) => format!("{ms} ms"),
        None => "n/a".to_owned(),
    };
    let section = format!(
        "## Rollback\n\nGreen killed during bake, UDP at {RATE} msg/s, probes every 100 ms with fall 3; target {target} ms (interval x fall + 20 ms). Detection-to-rollback: {}, losing {} messages; with fastinter_ms = {FASTINTER_MS}: {}, losing {}. Without automatic rollback: {} lost (of {} sent after the kill). From the probe marking green down to the rollback (the controller's reaction, no poll): {} and {}.\n",
        timing(&with),
        with.lost,
        timing(&fast),
        fast.lost,
        without.lost,
        without.sent_after_kill,
        reaction(&with),
        reaction(&fast)
    );
    print!("\n{section}");
    Ok(section)
}
