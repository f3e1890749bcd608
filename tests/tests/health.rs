//! Health probes and flip gating end to end: a real agent probing real
//! backends in namespaces.
use std::time::Duration;

use bg_tests::{
    agent::{Agent, try_agent},
    lab::{Backends, Family, Lab},
    privileged,
    traffic::{Sink, TcpSink},
    wait_for,
};

fn problems(agent: &Agent, colour: &str) -> Vec<String> {
    agent.status()["health_problems"][colour]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

fn history(agent: &Agent) -> Vec<serde_json::Value> {
    let out = agent.ctl(&["--json", "history", "--limit", "200"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

/// A UDP backend nobody listens on is down (ICMP port unreachable): a flip
/// to it is refused with the reason, --force overrides, and both are in the
/// history; once the backend listens, it comes up.
#[test]
fn flips_to_an_unhealthy_colour_are_refused_unless_forced() {
    if !privileged("flips_to_an_unhealthy_colour_are_refused_unless_forced") {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    let agent = Agent::start(&lab, &config).expect("agent");
    let _blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).expect("sink");
    let green = lab.backend("green", Family::V4);
    let down = wait_for(Duration::from_secs(10), || {
        problems(&agent, "green")
            .iter()
            .any(|p| p.contains("is down"))
            .then_some(())
    });
    assert!(
        down.is_some(),
        "green never went down: {:?}",
        problems(&agent, "green")
    );

    let out = agent.ctl(&["flip", "green"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing to flip to green: syslog-udp-514 backend {green} is down"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("port unreachable") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(agent.status()["active"], "blue", "nothing moved");
    let text = String::from_utf8_lossy(&agent.ctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("green is NOT healthy") && text.contains("[DOWN"),
        "{text}"
    );

    let out = agent.ctl(&["flip", "green", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status()["active"], "green");
    assert!(
        agent
            .log_text()
            .contains("although green is not healthy, forced"),
        "{}",
        agent.log_text()
    );

    // Rollback is the way out: never refused, even towards a colour that
    // is unhealthy (here blue is fine; green is what we leave).
    let out = agent.ctl(&["rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status()["active"], "blue");

    let _green = Sink::start(&lab.lb, green).expect("sink");
    let up = wait_for(Duration::from_secs(10), || {
        problems(&agent, "green").is_empty().then_some(())
    });
    assert!(
        up.is_some(),
        "green never came up: {:?}",
        problems(&agent, "green")
    );
    let h = agent.status()["services"][0]["health"]["green"].clone();
    assert_eq!(h["state"], "up");
    assert!(
        h["last_latency_us"].as_u64().is_some() && !h["history"].as_array().unwrap().is_empty(),
        "{h}"
    );

    let events = history(&agent);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"agent-started"), "{kinds:?}");
    let refused = events
        .iter()
        .find(|e| e["event"] == "flip-refused")
        .expect("refusal recorded");
    assert_eq!(refused["to"], "green");
    let forced = events
        .iter()
        .find(|e| e["event"] == "flip")
        .expect("flip recorded");
    assert_eq!(forced["forced"], true);
    assert!(events.iter().any(|e| e["event"] == "rollback"));
    let probe_states: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["event"] == "probe" && e["colour"] == "green")
        .map(|e| (e["state"].as_str().unwrap(), e["backend"].as_str().unwrap()))
        .collect();
    assert_eq!(
        probe_states.first().map(|s| s.0),
        Some("down"),
        "{probe_states:?}"
    );
    assert_eq!(
        probe_states.last().map(|s| s.0),
        Some("up"),
        "{probe_states:?}"
    );
    let human = String::from_utf8_lossy(&agent.ctl(&["history"]).stdout).into_owned();
    assert!(
        human.contains("refused") && human.contains("FORCED"),
        "{human}"
    );
}

/// A TCP backend that stops listening goes down after `fall` probes.
#[test]
fn a_tcp_backend_that_stops_listening_goes_down() {
    if !privileged("a_tcp_backend_that_stops_listening_goes_down") {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let config = lab
        .write_test_config(&[("tcp", 601)], Family::V6, "")
        .expect("config");
    let agent = Agent::start(&lab, &config).expect("agent");
    let blue = TcpSink::start(
        lab.backend_ns("blue"),
        lab.backend_for("blue", Family::V6, 601),
    )
    .unwrap();
    let green = TcpSink::start(
        lab.backend_ns("green"),
        lab.backend_for("green", Family::V6, 601),
    )
    .unwrap();
    agent.flip("green");
    drop(green);
    let down = wait_for(Duration::from_secs(10), || {
        (!problems(&agent, "green").is_empty()).then_some(())
    });
    assert!(down.is_some(), "green should go down");
    assert!(
        problems(&agent, "green")[0].contains("Connection refused"),
        "{:?}",
        problems(&agent, "green")
    );
    assert!(problems(&agent, "blue").is_empty());
    drop(blue);
}

/// An exec probe judges by exit code, sees the backend in its environment,
/// and is killed when it outlives its timeout.
#[test]
fn exec_probes_follow_the_command() {
    if !privileged("exec_probes_follow_the_command") {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let flag = lab.path("healthy");
    let script = format!(
        "[service.health]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"test -e {}-$BG_COLOUR-$BG_BACKEND_PORT\"]\n",
        flag.display()
    );
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    // Put the health table right after the (only) service.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[health]",
        &format!("{script}\n[health]"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&lab, &config).expect("agent");
    let green_port = lab.backend("green", Family::V4).port();
    let blue_port = lab.backend("blue", Family::V4).port();
    std::fs::write(format!("{}-blue-{blue_port}", flag.display()), "").unwrap();
    let settled = wait_for(Duration::from_secs(10), || {
        (problems(&agent, "blue").is_empty()
            && problems(&agent, "green")
                .iter()
                .any(|p| p.contains("is down")))
        .then_some(())
    });
    assert!(
        settled.is_some(),
        "blue up, green down: {:?}",
        problems(&agent, "green")
    );
    assert!(
        problems(&agent, "green")[0].contains("exited with"),
        "{:?}",
        problems(&agent, "green")
    );
    std::fs::write(format!("{}-green-{green_port}", flag.display()), "").unwrap();
    let up = wait_for(Duration::from_secs(10), || {
        problems(&agent, "green").is_empty().then_some(())
    });
    assert!(up.is_some(), "green comes up once its check passes");
}

/// A bad probe config is refused before anything changes, naming the field.
#[test]
fn bad_probe_config_names_the_field() {
    if !privileged("bad_probe_config_names_the_field") {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, "")
        .expect("config");
    let base = std::fs::read_to_string(&config).unwrap();
    for (snippet, needles) in [
        (
            "[service.health]\nkind = \"icmp\"\n",
            vec![
                "service[0].health.kind = \"icmp\"",
                "\"tcp\", \"udp\", \"http\" or \"exec\"",
            ],
        ),
        (
            "[service.health]\nrise = 0\n",
            vec!["service[0].health.rise = \"0\"", "probes from 1 to 100"],
        ),
        (
            "[service.health]\nkind = \"http\"\n",
            vec!["service[0].health.port", "missing"],
        ),
    ] {
        std::fs::write(
            &config,
            base.replacen("[health]", &format!("{snippet}\n[health]"), 1),
        )
        .unwrap();
        let out = try_agent(&lab, &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{snippet}: {stderr}");
        for n in needles {
            assert!(
                stderr.contains(n),
                "{snippet}: stderr lacks {n:?}: {stderr}"
            );
        }
        assert!(
            !lab.pin_root.join(&lab.lb_if).exists(),
            "nothing was attached"
        );
    }
}
