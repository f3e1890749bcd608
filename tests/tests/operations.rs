//! Running the agent as an operator does: `check-config` before a change,
//! `bgctl reload` and SIGHUP to apply it, and the service manager's
//! notifications (READY, RELOADING) a `Type=notify` unit waits for.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use bg_tests::{
    agent::{Agent, Launch, bgctl_bin, try_agent},
    lab::{Backends, Family, Lab, service_addr},
    notify::Notify,
    privileged,
    traffic::{Sink, occurrences, send_paced, sender},
    wait_for,
};

/// The example config the package installs.
fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/bluegreen.toml")
}

fn check_config(args: &[&str]) -> std::process::Output {
    Command::new(bgctl_bin())
        .arg("check-config")
        .args(args)
        .output()
        .expect("running bgctl check-config")
}

/// The line `bgctl: ...` that a failing command ends with.
fn error_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .find(|l| l.starts_with("bgctl: "))
        .unwrap_or_default()
        .to_owned()
}

/// A directory of this test's own, removed however the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("bg-check-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const BAD_DEPLOY: &str = "[deploy]\nshadow_max_pps = -1\n";

#[test]
fn check_config_passes_the_example_and_explains_a_bad_file() {
    let out = check_config(&[example_config().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("valid: 2 service(s)"), "{text}");
    let out = check_config(&["--json", example_config().to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["config"]["services"].as_array().unwrap().len(), 2);

    let scratch = Scratch::new();
    let dir = &scratch.0;
    let bad = dir.join("bad.toml");
    let good = std::fs::read_to_string(example_config()).unwrap();
    std::fs::write(&bad, good.replace("[deploy]", BAD_DEPLOY.trim_end())).unwrap();
    let out = check_config(&[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out.stderr);
    for part in ["bad.toml", "deploy.shadow_max_pps", "-1", "accepted"] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    let out = check_config(&["--json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("deploy.shadow_max_pps")
    );
    let out = check_config(&[dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out.stderr).contains("cannot read"));
}

#[test]
fn check_config_says_what_the_agent_says() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, BAD_DEPLOY)
        .expect("config");
    let checked = check_config(&[config.to_str().unwrap()]);
    let started = try_agent(&lab, &config);
    assert!(!started.status.success());
    assert_eq!(checked.status.code(), started.status.code());
    let line = error_line(&checked.stderr);
    assert!(line.contains("deploy.shadow_max_pps"), "{line}");
    assert_eq!(line, error_line(&started.stderr));
}

fn history(agent: &Agent) -> Vec<serde_json::Value> {
    let out = agent.ctl(&["--json", "history", "--limit", "500"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn reloads(agent: &Agent) -> Vec<serde_json::Value> {
    history(agent)
        .into_iter()
        .filter(|e| e["event"] == "reload")
        .collect()
}

#[test]
fn reload_applies_a_new_config_in_place_and_loses_nothing() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    let mut notify = Notify::bind(&lab.path("notify.sock"));
    let setup: &'static str = Box::leak(
        format!("export NOTIFY_SOCKET={}", lab.path("notify.sock").display()).into_boxed_str(),
    );
    let agent = Agent::start_with(&lab, &config, Launch::Shell { setup }).expect("agent");
    let ready = notify.wait_for("READY=1");
    assert!(ready.contains("STATUS="), "{ready}");
    let pid = agent.status()["agent_pid"].clone();
    let sinks: Vec<(&str, Sink)> = ["blue", "green"]
        .iter()
        .map(|&c| {
            let s = Sink::start(lab.backend_ns(c), lab.backend(c, Family::V4)).expect("sink");
            (c, s)
        })
        .collect();
    agent.flip("green");

    // A reload that changes nothing does nothing.
    let out = agent.ctl(&["reload"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing changed"));

    // A second service, added while a stream runs: 3000 at 1000/s.
    let socket = sender(&lab.client, service_addr(Family::V4)).expect("sender");
    let msgs: Vec<String> = (0..3000).map(|i| format!("reload-{i} ")).collect();
    let copy = msgs.clone();
    let streamer = std::thread::spawn(move || send_paced(&socket, &copy, 1000));
    std::thread::sleep(Duration::from_millis(800));
    lab.write_test_config(&[("udp", 514), ("udp", 5514)], Family::V4, "")
        .expect("new config");
    // Callers during the restart: the control socket and the HTTP port
    // are handed over, so each call waits and is answered, none finds
    // nobody there. 2 s of calls, one after another.
    let (socket, ns) = (agent.socket.clone(), &lab.lb);
    let poll = |http: bool| {
        let (start, mut calls) = (std::time::Instant::now(), Vec::new());
        while start.elapsed() < Duration::from_secs(2) {
            let t = std::time::Instant::now();
            // Err: what the failed call saw, for the assertion's message.
            let outcome: Result<(), String> = if http {
                match bg_tests::http::get(ns, "/api/status") {
                    Ok(a) if a.status == 200 => Ok(()),
                    Ok(a) => Err(format!("HTTP {}: {}", a.status, a.body)),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                match Command::new(bgctl_bin())
                    .arg("--socket")
                    .arg(&socket)
                    .args(["--json", "status"])
                    .output()
                {
                    Ok(o) if o.status.success() => Ok(()),
                    Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
                    Err(e) => Err(e.to_string()),
                }
            };
            calls.push((outcome, t.elapsed()));
            std::thread::sleep(Duration::from_millis(10));
        }
        calls
    };
    // A caller the old image took but had not heard from when the reload
    // began: it must still be answered, not cut by the exec.
    let mut early = std::os::unix::net::UnixStream::connect(&agent.socket).expect("connect");
    early
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (socket_calls, http_calls, out, late_answer) = std::thread::scope(|scope| {
        let (a, b) = (scope.spawn(|| poll(false)), scope.spawn(|| poll(true)));
        std::thread::sleep(Duration::from_millis(100));
        let out = agent.ctl(&["reload"]);
        std::thread::sleep(Duration::from_millis(300));
        let mut answer = String::new();
        let sent = std::io::Write::write_all(&mut early, b"{\"op\":\"status\"}\n");
        let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(&early), &mut answer);
        drop(early);
        let late = (sent.is_ok() && read.is_ok()).then_some(answer);
        (a.join().unwrap(), b.join().unwrap(), out, late)
    });
    let late_answer = late_answer.unwrap_or_default();
    assert!(
        late_answer.contains("\"active\""),
        "a connection taken before the reload went unanswered: {late_answer:?}"
    );
    for (surface, calls) in [("control socket", socket_calls), ("HTTP", http_calls)] {
        let failed: Vec<String> = calls
            .iter()
            .filter_map(|(outcome, took)| {
                outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("{e} after {took:?}"))
            })
            .collect();
        let longest = calls.iter().map(|(_, d)| *d).max().unwrap_or_default();
        eprintln!(
            "{surface}: {} calls across the reload, {} failed, the longest {longest:?}",
            calls.len(),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "{surface} calls failed during the reload: {failed:?}"
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("service syslog-udp-5514 added"), "{text}");
    let reloading = notify.wait_for("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notify.wait_for("READY=1");
    let status = wait_for(Duration::from_secs(15), || {
        let out = agent.ctl(&["--json", "status"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (s["services"].as_array()?.len() == 2).then_some(s)
    })
    .expect("the new config's services");
    assert_eq!(status["agent_pid"], pid, "re-executed in place: same pid");
    assert_eq!(status["active"], "green");
    assert_eq!(status["xdp_mode"], "adopted");
    streamer.join().unwrap().expect("stream");
    std::thread::sleep(Duration::from_millis(500));
    let got: std::collections::HashMap<&str, Vec<String>> =
        sinks.into_iter().map(|(c, s)| (c, s.finish())).collect();
    let green = occurrences(&got["green"], &msgs);
    let lost: Vec<_> = msgs.iter().filter(|m| green[*m] != 1).take(5).collect();
    assert!(lost.is_empty(), "not delivered exactly once: {lost:?}");
    let applied = reloads(&agent);
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert_eq!(applied[0]["applied"], true);
    assert_eq!(applied[0]["by"], "bgctl reload");
}

#[test]
fn a_bad_config_is_refused_by_reload_and_sighup_and_the_agent_goes_on() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    let agent = Agent::start(&lab, &config).expect("agent");
    let pid = agent.status()["agent_pid"].as_u64().unwrap() as i32;
    lab.write_test_config(&[("udp", 514), ("udp", 5514)], Family::V4, BAD_DEPLOY)
        .expect("bad config");
    let out = agent.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out.stderr);
    assert!(line.contains("deploy.shadow_max_pps"), "{line}");
    assert!(line.contains("the running config stays"), "{line}");
    // SAFETY: kill(2) on the agent's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let refused = wait_for(Duration::from_secs(10), || {
        let r = reloads(&agent);
        (r.len() == 2).then_some(r)
    })
    .expect("both refusals in the history");
    assert_eq!(refused[0]["by"], "bgctl reload");
    assert_eq!(refused[1]["by"], "SIGHUP");
    assert!(refused.iter().all(|r| r["applied"] == false));
    let status = agent.status();
    assert_eq!(status["agent_pid"].as_u64(), Some(pid as u64));
    assert_eq!(status["services"].as_array().unwrap().len(), 1);
    let text = String::from_utf8_lossy(&agent.ctl(&["history"]).stdout).into_owned();
    assert!(text.contains("config reload (SIGHUP) REFUSED"), "{text}");
}

/// `BGCTL_LOG_FORMAT=json`: every line the agent logs is one JSON object
/// a log shipper can take as is, warnings too (multi-line messages stay
/// one line: the unit test of `host::logging`).
#[test]
fn json_logs_are_one_object_per_line() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    let setup = "export BGCTL_LOG_FORMAT=json";
    let agent = Agent::start_with(&lab, &config, Launch::Shell { setup }).expect("agent");
    // A refused reload logs a warning.
    lab.write_test_config(&[("udp", 514)], Family::V4, BAD_DEPLOY)
        .expect("bad config");
    assert_eq!(agent.ctl(&["reload"]).status.code(), Some(1));
    let log = wait_for(Duration::from_secs(5), || {
        let t = agent.log_text();
        t.contains("\"WARN\"").then_some(t)
    })
    .unwrap_or_else(|| panic!("no warning logged:\n{}", agent.log_text()));
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    for l in &lines {
        let ts = l["ts"].as_str().unwrap_or_default();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "ts: {l}");
        assert!(l["msg"].is_string() && l["target"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["msg"].as_str().unwrap().contains("active colour")),
        "{log}"
    );
}

/// The unit file's `CapabilityBoundingSet=`, as setpriv spells it
/// ("+bpf,+net_admin,...").
fn unit_capabilities() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/bluegreen@.service");
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds the capabilities");
    line.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn the_agent_runs_with_only_the_units_capabilities() {
    if !privileged() {
        return;
    }
    let caps = unit_capabilities();
    assert!(
        caps.contains("+bpf") && caps.contains("+net_admin"),
        "{caps}"
    );
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    // Root's capabilities after exec are its bounding set: the unit's.
    let setup: &'static str =
        Box::leak(format!("set -- setpriv --bounding-set=-all,{caps} -- \"$@\"").into_boxed_str());
    let agent = Agent::start_with(&lab, &config, Launch::Shell { setup }).expect("agent");
    let pid = agent.status()["agent_pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    // CAP_BPF (39) in, CAP_SYS_MODULE (16) out: the unit's set, not root's.
    assert_eq!(
        bounding & (1 << 39 | 1 << 16),
        1 << 39,
        "CapBnd {bounding:x}"
    );
    let sinks: Vec<(&str, Sink)> = ["blue", "green"]
        .iter()
        .map(|&c| {
            let s = Sink::start(lab.backend_ns(c), lab.backend(c, Family::V4)).expect("sink");
            (c, s)
        })
        .collect();
    agent.flip("green");
    let socket = sender(&lab.client, service_addr(Family::V4)).expect("sender");
    let msgs: Vec<String> = (0..200).map(|i| format!("caps-{i} ")).collect();
    send_paced(&socket, &msgs, 1000).expect("send");
    std::thread::sleep(Duration::from_millis(500));
    let got: std::collections::HashMap<&str, Vec<String>> =
        sinks.into_iter().map(|(c, s)| (c, s.finish())).collect();
    let green = occurrences(&got["green"], &msgs);
    assert!(msgs.iter().all(|m| green[m] == 1), "steered to green");
    assert!(
        !agent.log_text().contains("Operation not permitted"),
        "{}",
        agent.log_text()
    );
}
