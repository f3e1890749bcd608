//! The deployment controller end to end: a real agent deploying onto real
//! backends in namespaces (rsyslog where a syslog server is what matters).
//!
//! The UDP services here keep the default `udp` probe, whose only evidence
//! is silence, so their deployments say `--force` (health.rs tests the
//! refusal without it).
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bg_tests::{
    agent::{Agent, lab_with_agent},
    lab::{Backends, Family, Lab, service_addr},
    privileged,
    rsyslog::Rsyslog,
    traffic::{Sink, occurrences, send_paced, sender},
};
use serde_json::Value;

const FAST: &str = "[deploy]\nhealthy_timeout_s = 5\nbake_s = 1\nkeep_warm_s = 0\nvalidate_messages = 200\nvalidate_rate = 5000\n";

fn phases(agent: &Agent) -> Vec<String> {
    let out = agent.ctl(&["--json", "history", "--limit", "500"]);
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    events
        .iter()
        .filter(|e| e["event"] == "deploy")
        .map(|e| e["phase"].as_str().unwrap().to_owned())
        .collect()
}

/// Real rsyslog servers as the blue and green UDP backends.
fn rsyslog_backends(lab: &Lab) -> (Rsyslog, Rsyslog) {
    let start = |c: &str| {
        Rsyslog::start(&lab.lb, &lab.dir, c, &[lab.backend(c, Family::V4)], &[]).expect("rsyslogd")
    };
    (start("blue"), start("green"))
}

fn udp_lab(extra: &str) -> (Lab, Agent) {
    let (lab, _, agent) = lab_with_agent(Backends::Local, &[("udp", 514)], Family::V4, extra);
    (lab, agent)
}

/// A deployment onto a healthy green completes, and traffic ends on green;
/// UDP messages sent through the whole deployment arrive exactly once.
#[test]
fn a_good_deployment_completes_and_loses_nothing() {
    if !privileged() {
        return;
    }
    let (lab, agent) = udp_lab(FAST);
    let (blue, green) = rsyslog_backends(&lab);
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    let msgs: Vec<String> = (0..6000).map(|i| format!("deploy-{i} ")).collect();
    // Real syslog lines (RFC 3164), so rsyslog writes the token as the message.
    let copy: Vec<String> = msgs.iter().map(|m| format!("<13>bgtest: {m}")).collect();
    let streamer = std::thread::spawn(move || send_paced(&socket, &copy, 1000));
    std::thread::sleep(Duration::from_millis(500));
    let out = agent.ctl(&["deploy", "green", "--force", "--version", "v2", "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every phase, in order, however short (the follower reads the history).
    let at = |p: &str| {
        stdout
            .find(&format!(": {p}"))
            .unwrap_or_else(|| panic!("{p} missing: {stdout}"))
    };
    let order = [
        "WaitHealthy",
        "Validate",
        "Switch",
        "Bake",
        "Complete",
        "Done",
    ]
    .map(at);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{stdout}");
    streamer.join().unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.status()["active"], "green");
    let d = agent.deploy_status();
    assert_eq!(d["phase"], "done");
    assert_eq!(d["version"], "v2");
    assert_eq!(d["gate"][0]["passed"], true, "{d}");
    assert_eq!(d["gate"][0]["sent"], 200);
    assert_eq!(d["gate"][0]["refused"], 0);
    assert_eq!(
        d["gate"][0]["delivered"],
        Value::Null,
        "UDP claims no delivery"
    );
    assert_eq!(
        phases(&agent),
        [
            "prepare",
            "wait-healthy",
            "validate",
            "switch",
            "bake",
            "complete",
            "done"
        ]
    );
    let (b, g) = (blue.lines(), green.lines());
    let (ob, og) = (occurrences(&b, &msgs), occurrences(&g, &msgs));
    let bad: Vec<_> = msgs
        .iter()
        .filter(|m| ob[*m] + og[*m] != 1)
        .take(5)
        .collect();
    assert!(bad.is_empty(), "not exactly once: {bad:?}");
    assert!(msgs.iter().any(|m| og[m] == 1) && msgs.iter().any(|m| ob[m] == 1));
}

/// A green that never becomes healthy stops the deployment; traffic never
/// moves and the reason is in status and history.
#[test]
fn an_unhealthy_green_fails_the_deployment_before_traffic_moves() {
    if !privileged() {
        return;
    }
    let (lab, agent) = udp_lab(&FAST.replace("healthy_timeout_s = 5", "healthy_timeout_s = 1"));
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let out = agent.ctl(&["deploy", "green", "--force", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ended Failed") && stderr.contains("not healthy within 1 s"),
        "{stderr}"
    );
    assert_eq!(agent.status()["active"], "blue");
    let d = agent.deploy_status();
    assert_eq!(d["phase"], "failed");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains(&lab.backend("green", Family::V4).to_string()),
        "{d}"
    );
    assert_eq!(phases(&agent).last().map(String::as_str), Some("failed"));
}

/// A TCP green that accepts but does not keep up fails the performance gate:
/// the deployment stops at validate and traffic never moves.
#[test]
fn a_slow_green_fails_the_performance_gate() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let extra = FAST.replace(
        "validate_messages = 200\nvalidate_rate = 5000",
        "validate_messages = 20000\nvalidate_rate = 200000",
    );
    let config = lab
        .write_test_config(&[("tcp", 601)], Family::V4, &extra)
        .expect("config");
    let agent = Agent::start(&lab, &config).expect("agent");
    let _blue = bg_tests::traffic::TcpSink::start(
        lab.backend_ns("blue"),
        lab.backend_for("blue", Family::V4, 601),
    )
    .unwrap();
    // Green accepts (so its probe passes) but never reads: its window closes.
    let green: SocketAddr = lab.backend_for("green", Family::V4, 601);
    let listener = lab
        .backend_ns("green")
        .enter(move || std::net::TcpListener::bind(green))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end && held.len() < 1000 {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let out = agent.ctl(&["deploy", "green", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("performance gate") && stderr.contains("min_delivered_ratio"),
        "{stderr}"
    );
    assert_eq!(agent.status()["active"], "blue");
    let d = agent.deploy_status();
    assert_eq!(d["gate"][0]["passed"], false);
    assert!(d["gate"][0]["delivered"].as_u64().unwrap() < 20000);
    drop(holder);
}

/// Kill green during bake: the agent flips back to blue by itself. The test
/// prints how long that took and how many messages went to the dead green.
#[test]
fn a_green_that_dies_during_bake_is_rolled_back() {
    if !privileged() {
        return;
    }
    let hook_out = std::env::temp_dir().join(format!("bg-rollback-hook-{}", std::process::id()));
    let extra = format!(
        "{}rollback = [\"sh\", \"-c\", \"echo $BG_HOOK $BG_COLOUR $BG_FROM > {}\"]\n",
        FAST.replace("bake_s = 1", "bake_s = 30"),
        hook_out.display()
    );
    let (lab, agent) = udp_lab(&extra);
    let (blue, green) = rsyslog_backends(&lab);
    let out = agent.ctl(&["deploy", "green", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_phase("bake", Duration::from_secs(15));
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    let msgs: Vec<String> = (0..3000).map(|i| format!("bake-{i} ")).collect();
    let copy: Vec<String> = msgs.iter().map(|m| format!("<13>bgtest: {m}")).collect();
    let streamer = std::thread::spawn(move || send_paced(&socket, &copy, 1000));
    std::thread::sleep(Duration::from_millis(500));
    let killed_ms = bluegreen::model::now_unix_ms();
    let green_log = green.log.clone();
    drop(green); // kills rsyslogd
    let before_kill: Vec<String> = std::fs::read_to_string(&green_log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let d = agent.wait_phase("rolled-back", Duration::from_secs(10));
    streamer.join().unwrap().unwrap();
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("green failed during bake"),
        "{d}"
    );
    assert_eq!(agent.status()["active"], "blue");
    let out = agent.ctl(&["--json", "history", "--limit", "500"]);
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rollback_ms = events
        .iter()
        .find(|e| e["event"] == "rollback")
        .expect("rollback recorded")["at_unix_ms"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let on_blue = occurrences(&blue.lines(), &msgs);
    let on_green = occurrences(&before_kill, &msgs);
    let lost = msgs
        .iter()
        .filter(|m| on_blue[*m] + on_green[*m] == 0)
        .count();
    println!(
        "kill-to-rollback {} ms (probe interval 100 ms, fall 2); {lost} messages went to the dead green",
        rollback_ms.saturating_sub(killed_ms)
    );
    let hook = std::fs::read_to_string(&hook_out).unwrap_or_default();
    let _ = std::fs::remove_file(&hook_out);
    assert_eq!(
        hook.trim(),
        "rollback green blue",
        "rollback hook with its environment"
    );
}

/// Hooks get the colour, version and deployment id; a failing pre-switch
/// hook stops the deployment before the switch.
#[test]
fn hooks_see_the_deployment_and_a_failing_pre_switch_stops_it() {
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("bg-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("env");
    let extra = format!(
        "{FAST}pre_switch = [\"sh\", \"-c\", \"env | grep ^BG_ | sort > {0}.pre; test ! -e {0}.fail\"]\npost_switch = [\"sh\", \"-c\", \"env | grep ^BG_ | sort > {0}.post\"]\n",
        env_file.display()
    );
    let (lab, agent) = udp_lab(&extra);
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let _green = Sink::start(&lab.lb, lab.backend("green", Family::V4)).unwrap();
    // First a failing pre-switch hook.
    std::fs::write(format!("{}.fail", env_file.display()), "").unwrap();
    let out = agent.ctl(&["deploy", "green", "--force", "--version", "v3", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pre-switch hook") && stderr.contains("nothing moved"),
        "{stderr}"
    );
    assert_eq!(agent.status()["active"], "blue");
    // Then a passing one.
    std::fs::remove_file(format!("{}.fail", env_file.display())).unwrap();
    let out = agent.ctl(&["deploy", "green", "--force", "--version", "v3", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = agent.deploy_status()["id"].as_str().unwrap().to_owned();
    for (file, hook) in [("pre", "pre-switch"), ("post", "post-switch")] {
        let env = std::fs::read_to_string(format!("{}.{file}", env_file.display())).unwrap();
        for want in [
            format!("BG_HOOK={hook}"),
            "BG_COLOUR=green".into(),
            "BG_FROM=blue".into(),
            "BG_VERSION=v3".into(),
            format!("BG_DEPLOYMENT_ID={id}"),
        ] {
            assert!(
                env.lines().any(|l| l == want),
                "{hook}: {want} missing from {env}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bgctl abort` before the switch ends the deployment where it is; after
/// the switch it rolls back.
#[test]
fn abort_ends_before_the_switch_and_rolls_back_after_it() {
    if !privileged() {
        return;
    }
    let (lab, agent) = udp_lab(
        &FAST
            .replace("healthy_timeout_s = 5", "healthy_timeout_s = 60")
            .replace("bake_s = 1", "bake_s = 30"),
    );
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    assert!(agent.ctl(&["deploy", "green", "--force"]).status.success());
    agent.wait_phase("wait-healthy", Duration::from_secs(5));
    let out = agent.ctl(&["abort"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = agent.wait_phase("aborted", Duration::from_secs(5));
    assert!(
        d["reason"].as_str().unwrap().contains("before the switch"),
        "{d}"
    );
    assert_eq!(agent.status()["active"], "blue");
    let out = agent.ctl(&["abort"]);
    assert_eq!(out.status.code(), Some(1), "nothing left to abort");

    // After the switch, abort means roll back.
    let _green = Sink::start(&lab.lb, lab.backend("green", Family::V4)).unwrap();
    assert!(agent.ctl(&["deploy", "green", "--force"]).status.success());
    agent.wait_phase("bake", Duration::from_secs(15));
    assert_eq!(agent.status()["active"], "green");
    assert!(agent.ctl(&["abort"]).status.success());
    let d = agent.wait_phase("rolled-back", Duration::from_secs(5));
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("aborted by the operator after the switch"),
        "{d}"
    );
    assert_eq!(agent.status()["active"], "blue");
}

/// An agent killed during bake is restarted: it resumes the bake and the
/// deployment ends correctly, without flipping on its own.
#[test]
fn an_agent_killed_during_bake_resumes_and_finishes() {
    if !privileged() {
        return;
    }
    let (lab, mut agent) = udp_lab(&FAST.replace("bake_s = 1", "bake_s = 3"));
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let _green = Sink::start(&lab.lb, lab.backend("green", Family::V4)).unwrap();
    assert!(agent.ctl(&["deploy", "green", "--force"]).status.success());
    agent.wait_phase("bake", Duration::from_secs(15));
    agent.kill9();
    agent.restart().expect("restart");
    let active = agent.status()["active"].clone();
    assert_eq!(
        active,
        "green",
        "the switch survived the kill; log:\n{}",
        agent.log_text()
    );
    let d = agent.wait_phase("done", Duration::from_secs(15));
    assert_eq!(d["colour"], "green");
    assert!(
        agent.log_text().contains("resuming the bake"),
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.status()["active"], "green");
}

/// `--backend` puts a new backend in place on the idle colour first; traffic
/// lands there after the switch, and the change survives an agent restart.
/// Bad replacements are refused before anything changes.
#[test]
fn deploy_with_a_new_backend_puts_it_in_place_and_keeps_it() {
    if !privileged() {
        return;
    }
    let (lab, mut agent) = udp_lab(FAST);
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let fresh: SocketAddr = "198.18.0.1:30514".parse().unwrap();
    let new_green = Sink::start(&lab.lb, fresh).unwrap();
    // The configured green (20514) has no listener: only the new one is healthy.
    for (arg, code, needle) in [
        ("nosuch=198.18.0.1:30514", 1, "no service \"nosuch\""),
        ("syslog-udp-514=198.18.0.1:10514", 1, "blue's backend"),
        ("syslog-udp-514=nonsense", 2, "not ADDR:PORT"),
    ] {
        let out = agent.ctl(&["deploy", "green", "--force", "--backend", arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{arg}: {stderr}");
        assert!(stderr.contains(needle), "{arg}: {stderr}");
    }
    let out = agent.ctl(&[
        "deploy",
        "green",
        "--force",
        "--backend",
        &format!("syslog-udp-514={fresh}"),
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status()["services"][0]["green"], fresh.to_string());
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    let msgs: Vec<String> = (0..100).map(|i| format!("fresh-{i} ")).collect();
    send_paced(&socket, &msgs, 5000).unwrap();
    agent.restart().expect("restart");
    assert_eq!(
        agent.status()["services"][0]["green"],
        fresh.to_string(),
        "kept across a restart"
    );
    assert!(agent.log_text().contains("overrides the config file"));
    std::thread::sleep(Duration::from_millis(200));
    let got = occurrences(&new_green.finish(), &msgs);
    assert!(
        msgs.iter().all(|m| got[m] == 1),
        "traffic reaches the new backend"
    );
}
