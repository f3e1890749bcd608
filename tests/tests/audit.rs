//! The history says who acted: the control socket's peer as the kernel
//! vouches for it (SO_PEERCRED: uid and pid), and the HTTP client's
//! address; the agent's own entries (probes) name nobody.
use std::process::{Command, Stdio};

use bg_tests::{
    agent::bgctl_bin,
    http::{UdpLab, get, post},
    privileged,
};

/// The last history entry of `kind`, as /api/history gives it.
fn last(t: &UdpLab, kind: &str) -> serde_json::Value {
    let h = get(&t.lab.lb, "/api/history?limit=100")
        .expect("history")
        .json();
    h.as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["event"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} entry in {h}"))
}

#[test]
fn history_entries_name_the_socket_peer_and_the_http_client() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();

    // Over the socket: uid and the very pid of the bgctl that asked.
    let child = Command::new(bgctl_bin())
        .arg("--socket")
        .arg(&t.agent.socket)
        .args(["flip", "green"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bgctl");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let flip = last(&t, "flip");
    assert_eq!(
        flip["actor"],
        serde_json::json!({"via": "socket", "uid": 0, "pid": pid}),
        "{flip}"
    );
    // The CLI shows it.
    let text = String::from_utf8(t.agent.ctl(&["history"]).stdout).unwrap();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("flip blue -> green"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(&format!("[by uid 0 (pid {pid})]")), "{line}");

    // Over HTTP: the client's address, from the lab namespace's loopback.
    let back = post(&t.lab.lb, "/api/rollback", Some(&t.token()), "").expect("POST /api/rollback");
    assert_eq!(back.status, 200, "{}", back.body);
    let rollback = last(&t, "rollback");
    assert_eq!(rollback["actor"]["via"], "http", "{rollback}");
    let client: std::net::SocketAddr = rollback["actor"]["client"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{rollback}"));
    assert!(client.ip().is_loopback() && client.port() > 0, "{client}");

    // The agent's own acts name nobody.
    let probe = last(&t, "probe");
    assert!(probe.get("actor").is_none(), "{probe}");
    let started = last(&t, "agent-started");
    assert!(started.get("actor").is_none(), "{started}");
}
