//! Faults of the agent's own files and resources: an interface recreated
//! under it, a torn state file, a garbled token, a damaged history, too many
//! open connections, and a teardown aimed at the wrong agent.
use std::{
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use bg_tests::{
    agent::{Agent, lab_with_agent, try_agent},
    http::{self, UdpLab, get, post},
    lab::{Backends, Family, Lab, service_addr},
    privileged,
    soak::{TmpfsMount, fill},
    traffic::{Sink, occurrences, send_paced, sender},
    wait_for,
};

fn history_events(agent: &Agent) -> Vec<serde_json::Value> {
    let out = agent.ctl(&["--json", "history", "--limit", "500"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The steering interface is deleted and made again (a new ifindex) while
/// green is active and the agent is down. The restarted agent finds its
/// pins stale and starts clean, and green comes back from the state
/// directory, with a history event; rollback works from there.
#[test]
fn the_colour_comes_back_when_the_interface_is_recreated() {
    if !privileged() {
        return;
    }
    let (lab, _, mut agent) = lab_with_agent(Backends::Local, &[("udp", 514)], Family::V4, "");
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let green = Sink::start(&lab.lb, lab.backend("green", Family::V4)).unwrap();
    agent.flip("green");
    agent.kill9();
    lab.recreate_steering_interface().expect("recreate");
    agent.restart().expect("restart");
    let s = agent.status();
    assert_eq!(s["active"], "green", "{}", agent.log_text());
    assert!(
        agent.log_text().contains("removing it"),
        "stale pins noticed"
    );
    let restored = history_events(&agent)
        .into_iter()
        .find(|e| e["event"] == "colour-restored")
        .expect("a colour-restored event");
    assert_eq!(restored["colour"], "green");
    // Traffic lands on green through the new interface.
    let msgs: Vec<String> = (0..50).map(|i| format!("recreated-{i} ")).collect();
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    send_paced(&socket, &msgs, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = occurrences(&green.finish(), &msgs);
    assert!(msgs.iter().all(|m| got[m] == 1), "steered to green");
    let out = agent.ctl(&["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status()["active"], "blue");
}

/// With the state directory's disk full, a flip still goes through (the
/// map write needs no disk), and its caller hears that it was not
/// recorded: in the CLI's warning and in the JSON answer.
#[test]
fn a_flip_on_a_full_disk_goes_through_and_says_it_was_not_recorded() {
    if !privileged() {
        return;
    }
    let (lab, _, agent) = lab_with_agent(Backends::Local, &[("udp", 514)], Family::V4, "");
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let _green = Sink::start(&lab.lb, lab.backend("green", Family::V4)).unwrap();
    agent.wait_healthy(&["blue", "green"], Duration::from_secs(15));
    // Recorded while there is room: no warning.
    let out = agent.ctl(&["flip", "green"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("NOT recorded"),
        "{err}"
    );
    let full = TmpfsMount::new(&lab.path("state"), "64k").expect("tmpfs over the state dir");
    fill(&lab.path("state/filler")).expect("fill it");
    let out = agent.ctl(&["flip", "blue"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the flip goes through: {err}");
    assert!(
        err.contains("warning: the flip is live but NOT recorded")
            && err.contains("state.json")
            && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(agent.status()["active"], "blue");
    let out = agent.ctl(&["--json", "flip", "green"]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["to"], "green");
    assert!(
        answer["unrecorded"]
            .as_str()
            .is_some_and(|why| why.contains("No space left on device")),
        "{answer}"
    );
    // Room again: the next flip is recorded and says nothing more.
    std::fs::remove_file(lab.path("state/filler")).unwrap();
    let out = agent.ctl(&["--json", "flip", "blue"]);
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(answer.get("unrecorded").is_none(), "{answer}");
    drop(full);
}

/// A torn state.json (it holds a deployed backend) makes the agent refuse
/// to start, naming the previous copy; the data path keeps steering to the
/// deployed backend meanwhile, and restoring the copy brings it back.
#[test]
fn a_torn_state_file_is_refused_not_forgotten() {
    if !privileged() {
        return;
    }
    let (lab, config, mut agent) = lab_with_agent(
        Backends::Local,
        &[("udp", 514)],
        Family::V4,
        "[deploy]\nhealthy_timeout_s = 5\nbake_s = 0\nkeep_warm_s = 0\nvalidate_messages = 10\n",
    );
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let fresh: std::net::SocketAddr = "198.18.0.1:30514".parse().unwrap();
    let deployed = Sink::start(&lab.lb, fresh).unwrap();
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
    agent.kill9();
    let state = lab.path("state/state.json");
    let good = std::fs::read(&state).unwrap();
    std::fs::write(&state, &good[..good.len() / 2]).unwrap();
    let out = try_agent(&lab, &config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("state.json does not parse")
            && err.contains("refuses")
            && err.contains("state.json.prev"),
        "{err}"
    );
    // The data path outlives the refusal: traffic still reaches the
    // deployed backend.
    let msgs: Vec<String> = (0..50).map(|i| format!("torn-{i} ")).collect();
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    send_paced(&socket, &msgs, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = occurrences(&deployed.finish(), &msgs);
    assert!(msgs.iter().all(|m| got[m] == 1));
    // The previous copy is a whole file; the current good one is back.
    std::fs::write(&state, &good).unwrap();
    agent.restart().expect("restart");
    assert_eq!(
        agent.status()["services"][0]["green"],
        fresh.to_string(),
        "the deployed backend is kept"
    );
}

/// A token file left empty or garbled (a crash while it was made) no
/// longer blocks startup: the agent makes a new one, says so, and the API
/// takes only the new one.
#[test]
fn a_garbled_token_file_is_replaced() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    std::fs::create_dir_all(lab.path("state")).unwrap();
    std::fs::write(lab.path("state/token"), b"").unwrap();
    let agent = Agent::start(&lab, &config).expect("agent starts");
    assert!(
        agent.log_text().contains("making a new one"),
        "{}",
        agent.log_text()
    );
    let token = String::from_utf8(agent.ctl(&["token"]).stdout).unwrap();
    assert_eq!(token.trim().len(), 64);
    let on_disk = std::fs::read_to_string(lab.path("state/token")).unwrap();
    assert_eq!(on_disk.trim(), token.trim());
    let a = post(&lab.lb, "/api/rollback", Some(&"0".repeat(64)), "").unwrap();
    assert_eq!(a.status, 401);
}

/// A damaged history (a torn line, a byte that is not UTF-8) loses only
/// the damaged lines, and says how many it skipped.
#[test]
fn a_damaged_history_loses_only_its_bad_lines() {
    if !privileged() {
        return;
    }
    let (lab, _, mut agent) = lab_with_agent(Backends::Local, &[("udp", 514)], Family::V4, "");
    agent.kill9();
    let path = lab.path("state/history.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{\"at_unix_ms\":1,\"event\":\"fl\xff\xfe\n{\"at_unix_ms\":2,\"ev")
        .unwrap();
    drop(f);
    agent.restart().expect("restart");
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let _green = Sink::start(&lab.lb, lab.backend("green", Family::V4)).unwrap();
    agent.flip("green");
    let out = agent.ctl(&["history"]);
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        text.matches("agent v").count(),
        2,
        "both starts, the one after the damage too: {text}"
    );
    assert!(text.contains("flip blue -> green"), "{text}");
    assert!(err.contains("2 line(s)"), "{err}");
    let a = get(&lab.lb, "/api/history?limit=1").unwrap();
    assert_eq!(a.json().as_array().unwrap().len(), 1);
}

/// 260 idle event-stream connections under a 256 open-file limit: the
/// HTTP server holds at most its cap (the rest wait in the kernel), the
/// probes keep their descriptors and every backend stays up, and accept
/// errors, if any, are logged at most once a second.
#[test]
fn idle_connections_cannot_starve_the_probes() {
    if !privileged() {
        return;
    }
    let t = UdpLab::launched(&["blue", "green"], http::LIMITED_FILES);
    let lab = &t.lab;
    let started = Instant::now();
    let idle = lab
        .lb
        .enter(|| {
            (0..260)
                .filter_map(|_| {
                    let mut s = std::net::TcpStream::connect("127.0.0.1:9514").ok()?;
                    s.write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:9514\r\n\r\n")
                        .ok()?;
                    Some(s)
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(
        idle.len(),
        260,
        "the kernel queues what the server does not take"
    );
    // Several probe rounds (100 ms each) with every connection held open.
    std::thread::sleep(Duration::from_secs(2));
    let s = t.agent.status();
    for colour in ["blue", "green"] {
        assert_eq!(
            s["services"][0]["health"][colour]["state"], "up",
            "{colour} stays up: {}",
            s["services"][0]["health"][colour]
        );
    }
    let downs = history_events(&t.agent)
        .into_iter()
        .filter(|e| e["event"] == "probe" && e["state"] == "down")
        .count();
    assert_eq!(downs, 0, "no probe went down");
    let log = t.agent.log_text();
    let accept_lines = log.lines().filter(|l| l.contains("accept")).count() as u64;
    assert!(
        accept_lines <= started.elapsed().as_secs() + 2,
        "accept errors back off: {accept_lines} lines"
    );
    // The agent still serves: a flip through the control socket.
    t.agent.flip("green");
    drop(idle);
    let later = wait_for(Duration::from_secs(5), || {
        get(&lab.lb, "/api/status").ok().filter(|a| a.status == 200)
    });
    assert!(
        later.is_some(),
        "the server takes new clients once those go"
    );
}

/// `bgctl teardown` sent to another socket than the agent's would once pull
/// the pins from under it. It now refuses while that agent holds the
/// interface; --force removes them, and the agent says its data path is
/// detached and refuses flips.
#[test]
fn teardown_never_pulls_the_pins_from_under_a_live_agent() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let lab = &t.lab;
    let teardown = |extra: &[&str]| {
        lab.lb
            .command(bg_tests::agent::bgctl_bin().to_str().unwrap())
            .arg("--socket")
            .arg(lab.path("not-the-agent.sock"))
            .args(["teardown", "--iface", &lab.lb_if, "--pin-root"])
            .arg(&lab.pin_root)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = teardown(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("still manages") && err.contains("--force"),
        "{err}"
    );
    assert!(
        lab.pin_root.join(&lab.lb_if).join("link").exists(),
        "pins kept"
    );
    let out = teardown(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let detached = wait_for(Duration::from_secs(5), || {
        t.agent.status()["detached"].as_str().map(str::to_owned)
    })
    .expect("the agent notices");
    assert!(detached.contains("gone"), "{detached}");
    let out = t.agent.ctl(&["flip", "green", "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the data path is detached"), "{err}");
    let text = String::from_utf8(t.agent.ctl(&["status"]).stdout).unwrap();
    assert!(text.contains("DATA PATH DETACHED"), "{text}");
}

/// The HTTP API's smaller defences: the token is checked before a body is
/// read, a Host that names someone else's domain is refused (DNS
/// rebinding), and a deployment's version label is bounded.
#[test]
fn the_api_checks_the_token_before_the_body_and_the_host() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let lab = &t.lab;
    // Headers promising a megabyte that never comes: the answer must not
    // wait for it.
    let answer = lab
        .lb
        .enter(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9514").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(
                b"POST /api/flip HTTP/1.1\r\nHost: 127.0.0.1:9514\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{",
            )
            .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    let (status, body) = lab
        .lb
        .enter(|| {
            match ureq::get("http://127.0.0.1:9514/api/status")
                .set("Host", "rebind.attacker.example:9514")
                .call()
            {
                Ok(r) => (r.status(), String::new()),
                Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
                Err(e) => panic!("{e}"),
            }
        })
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("DNS rebinding"), "{body}");
    let long = "v".repeat(500);
    let a = post(
        &lab.lb,
        "/api/deploy",
        Some(&t.token()),
        &format!(r#"{{"colour":"green","version":"{long}","force":true}}"#),
    )
    .unwrap();
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("1 to 128 characters"), "{}", a.body);
    let out = t
        .agent
        .ctl(&["deploy", "green", "--force", "--version", &long]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no control characters"));
}
