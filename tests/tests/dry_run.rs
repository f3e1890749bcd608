//! `--dry-run` on flip, shift and deploy (and `"dry_run": true` over HTTP):
//! the health gate's verdict and the plan, with nothing written: the
//! colour, the split, the deployment and the history stay as they were.
use std::time::Duration;

use bg_tests::{
    agent::{Agent, lab_with_agent},
    http::post,
    lab::{Backends, Family},
    privileged,
    traffic::Sink,
    wait_for,
};

/// History entries an operation writes: probe state changes come and go
/// with the backends, whatever the test does.
fn history_len(agent: &Agent) -> usize {
    let out = agent.ctl(&["--json", "history", "--limit", "500"]);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
        .unwrap()
        .iter()
        .filter(|e| e["event"] != "probe")
        .count()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The data path's steering and the deployment, which a dry run must not
/// touch.
fn untouched(agent: &Agent) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let s = agent.status();
    let d: serde_json::Value =
        serde_json::from_slice(&agent.ctl(&["--json", "deploy", "--status"]).stdout).unwrap();
    (s["active"].clone(), s["split"].clone(), d)
}

#[test]
fn dry_runs_give_the_gates_verdict_and_write_nothing() {
    if !privileged() {
        return;
    }
    let (lab, _, agent) = lab_with_agent(Backends::Local, &[("udp", 514)], Family::V4, "");
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).expect("sink");
    // Green has no listener: its probes find it down.
    let down = wait_for(Duration::from_secs(10), || {
        agent.status()["health_problems"]["green"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
            .then_some(())
    });
    assert!(down.is_some(), "green never went down");
    let before = untouched(&agent);
    let lines = history_len(&agent);

    // Refused as the real flip would be, with its reason, and exit 1.
    let out = agent.ctl(&["flip", "green", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dry run: refusing to flip to green")
            && stderr(&out).contains("syslog-udp-514 backend"),
        "{}",
        stderr(&out)
    );
    // Forced: it would go ahead, and says despite what.
    let out = agent.ctl(&["--json", "flip", "green", "--force", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["action"], "flip blue -> green");
    assert_eq!(p["changes"], true);
    assert_eq!(p["forced"], true);
    assert!(
        p["problems"][0]
            .as_str()
            .unwrap()
            .contains("syslog-udp-514 backend"),
        "{p}"
    );
    // Onto the active colour: nothing would change.
    let out = agent.ctl(&["flip", "blue", "--dry-run"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("nothing would change"),
        "{}",
        stdout(&out)
    );
    // A shift takes the same gate.
    let out = agent.ctl(&["shift", "green", "10%", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("dry run: refusing to shift more senders to green"),
        "{}",
        stderr(&out)
    );
    let out = agent.ctl(&["shift", "blue", "90%", "--dry-run", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would shift blue -> blue 90% / green 10%"),
        "{}",
        stdout(&out)
    );
    // A deploy: the start's checks, then its phases from the config.
    let out = agent.ctl(&["deploy", "blue", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("dry run: ") && stderr(&out).contains("blue is the active colour"),
        "{}",
        stderr(&out)
    );
    // Only a UDP probe: the start refuses as a real deploy would, unforced.
    let out = agent.ctl(&["deploy", "green", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("dry run: refusing to deploy")
            && stderr(&out).contains("kind = \"udp\""),
        "{}",
        stderr(&out)
    );
    let out = agent.ctl(&[
        "deploy",
        "green",
        "--version",
        "9.1",
        "--steps",
        "10,50",
        "--pause",
        "30s",
        "--force",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for phase in [
        "would deploy 9.1 onto green",
        "1. prepare",
        "2. wait-healthy",
        "(now: syslog-udp-514 backend",
        "validate:",
        "shift: green gets 10%, then 50% of senders in turn, each step watched for 30s",
        "switch: every sender to green",
        "bake:",
        "nothing was written",
    ] {
        assert!(text.contains(phase), "{phase:?} not in:\n{text}");
    }
    // Over HTTP, with the token, as the dashboard would send it.
    let token = String::from_utf8(agent.ctl(&["token"]).stdout).unwrap();
    let a = post(
        &lab.lb,
        "/api/flip",
        Some(token.trim()),
        r#"{"colour":"green","force":true,"dry_run":true}"#,
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["preview"]["forced"], true, "{}", a.body);
    let a = post(
        &lab.lb,
        "/api/deploy",
        Some(token.trim()),
        r#"{"colour":"green","force":true,"dry_run":true}"#,
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);

    assert_eq!(untouched(&agent), before, "a dry run changed the agent");
    assert_eq!(history_len(&agent), lines, "a dry run left a history line");
    // The same flip for real does move: the dry run said what would.
    assert!(agent.ctl(&["flip", "green", "--force"]).status.success());
    assert_eq!(agent.status()["active"], "green");
}
