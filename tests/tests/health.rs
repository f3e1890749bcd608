//! Health probes and flip gating end to end: a real agent probing real
//! backends in namespaces.
use std::time::Duration;

use bg_tests::{
    agent::{Agent, lab_with_agent, try_agent},
    fixtures::{FAST_HEALTH, quick_deploy, service},
    lab::{Backends, Family, Lab},
    privileged,
    rsyslog::Rsyslog,
    syslog_ng::SyslogNg,
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
/// A UDP probe that sends a tagged syslog line instead of an empty datagram.
const TAGGED_PROBE: &str = "[service.health]\nudp_payload = \"tagged\"\n";

#[test]
fn flips_to_an_unhealthy_colour_are_refused_unless_forced() {
    if !privileged() {
        return;
    }
    let (lab, _, agent) = lab_with_agent(Backends::Local, &[("udp", 514)], Family::V4, "");
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
    if !privileged() {
        return;
    }
    let (lab, _, agent) = lab_with_agent(Backends::Namespaces, &[("tcp", 601)], Family::V6, "");
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
    if !privileged() {
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
    if !privileged() {
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
                "\"tcp\", \"udp\", \"http\", \"exec\", \"relp\" or \"tls\"",
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

/// Backends the data path cannot reach are down, though no ICMP refuses
/// them: an address with no host behind it (its neighbour never resolves)
/// and one with no route. A deploy onto them is refused while UDP is
/// judged by silence alone; forced, it fails before traffic moves.
#[test]
fn unreachable_udp_hosts_are_down_and_a_deploy_onto_them_fails() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let config = lab.path("dead.toml");
    let text = [
        service(
            "dead-host",
            "udp",
            "0.0.0.0:514",
            "198.18.1.2:514",
            "198.18.2.99:514",
            "",
        ),
        service(
            "no-route",
            "udp",
            "0.0.0.0:515",
            "198.18.1.2:515",
            "198.19.77.1:515",
            "",
        ),
        FAST_HEALTH.into(),
        quick_deploy(2, 1, 50),
    ];
    std::fs::write(&config, text.join("\n")).unwrap();
    let agent = Agent::start(&lab, &config).expect("agent");
    let blue_ns = lab.blue.as_ref().unwrap();
    let _b1 = Sink::start(blue_ns, "198.18.1.2:514".parse().unwrap()).unwrap();
    let _b2 = Sink::start(blue_ns, "198.18.1.2:515".parse().unwrap()).unwrap();
    let both_down = wait_for(Duration::from_secs(10), || {
        let p = problems(&agent, "green");
        (p.len() == 2 && p.iter().all(|x| x.contains("is down"))).then_some(p)
    })
    .unwrap_or_else(|| panic!("green never went down: {:?}", problems(&agent, "green")));
    let dead = both_down.iter().find(|p| p.contains("dead-host")).unwrap();
    assert!(
        dead.contains("no host answers for 198.18.2.99") && dead.contains("unresolved"),
        "{dead}"
    );
    // The kernel refuses the probe's own datagram first here; the data
    // path's FIB would say the same.
    let unrouted = both_down.iter().find(|p| p.contains("no-route")).unwrap();
    assert!(
        unrouted.contains("198.19.77.1")
            && (unrouted.contains("no route") || unrouted.contains("unreachable")),
        "{unrouted}"
    );
    let blue_up = wait_for(Duration::from_secs(10), || {
        problems(&agent, "blue").is_empty().then_some(())
    });
    assert!(
        blue_up.is_some(),
        "blue answers and is reachable: {:?}",
        problems(&agent, "blue")
    );
    let text = String::from_utf8_lossy(&agent.ctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("note: udp probe") && text.contains("cannot confirm"),
        "status says what a UDP probe can know: {text}"
    );

    let out = agent.ctl(&["deploy", "green", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to deploy")
            && stderr.contains("dead-host, no-route")
            && stderr.contains("--force"),
        "{stderr}"
    );
    let none = agent.ctl(&["deploy", "--status"]);
    assert!(String::from_utf8_lossy(&none.stdout).contains("no deployment yet"));

    let out = agent.ctl(&["deploy", "green", "--wait", "--force"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ended Failed") && stderr.contains("no host answers for 198.18.2.99"),
        "{stderr}"
    );
    assert_eq!(agent.status()["active"], "blue", "traffic never moved");
}

/// The gate does not take silence for delivery: green's exec probe says
/// up (it cannot see the host), but the validation load finds no host
/// answering, and the deployment fails before the switch.
#[test]
fn the_udp_gate_fails_a_host_that_is_not_there() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let config = lab.path("gate.toml");
    let exec_probe = "[service.health]\nkind = \"exec\"\ncommand = [\"true\"]\n";
    let text = [
        service(
            "collector",
            "udp",
            "0.0.0.0:514",
            "198.18.1.2:514",
            "198.18.2.99:514",
            exec_probe,
        ),
        FAST_HEALTH.into(),
        quick_deploy(5, 1, 50),
    ];
    std::fs::write(&config, text.join("\n")).unwrap();
    let agent = Agent::start(&lab, &config).expect("agent");
    let out = agent.ctl(&["deploy", "green", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("performance gate") && stderr.contains("no host answers for 198.18.2.99"),
        "{stderr}"
    );
    let d: serde_json::Value =
        serde_json::from_slice(&agent.ctl(&["--json", "deploy", "--status"]).stdout).unwrap();
    let gate = &d["gate"][0];
    assert_eq!(gate["passed"], false, "{d}");
    assert_eq!(
        gate["delivered"],
        serde_json::Value::Null,
        "UDP claims no delivery"
    );
    assert_eq!(gate["refused"], 0, "nothing refused it: silence");
    assert!(
        gate["evidence"]
            .as_str()
            .unwrap()
            .contains("cannot confirm")
    );
    assert_eq!(agent.status()["active"], "blue");
}

/// A backend behind an interface that drops every redirected frame (a
/// veth peer without NAPI) answers its own probes, which the kernel routes,
/// but the data path loses its traffic: it goes down while that lasts.
#[test]
fn a_backend_whose_redirects_fail_is_down() {
    if !privileged() {
        return;
    }
    let (lab, _, agent) = lab_with_agent(Backends::Namespaces, &[("udp", 514)], Family::V4, "");
    let blue_ns = lab.blue.as_ref().unwrap();
    let _sink = Sink::start(blue_ns, lab.backend("blue", Family::V4)).unwrap();
    let _green = Sink::start(
        lab.green.as_ref().unwrap(),
        lab.backend("green", Family::V4),
    )
    .unwrap();
    let up = wait_for(Duration::from_secs(10), || {
        problems(&agent, "blue").is_empty().then_some(())
    });
    assert!(up.is_some(), "{:?}", problems(&agent, "blue"));
    blue_ns.run("ethtool", &["-K", "b0", "gro", "off"]).unwrap();
    let socket =
        bg_tests::traffic::sender(&lab.client, bg_tests::lab::service_addr(Family::V4)).unwrap();
    let msgs: Vec<String> = (0..1500).map(|i| format!("lost-{i}")).collect();
    let stream = std::thread::spawn(move || bg_tests::traffic::send_paced(&socket, &msgs, 1000));
    let down = wait_for(Duration::from_secs(5), || {
        problems(&agent, "blue")
            .into_iter()
            .find(|p| p.contains("is down"))
    });
    blue_ns.run("ethtool", &["-K", "b0", "gro", "on"]).unwrap();
    stream.join().unwrap().unwrap();
    let down = down.expect("blue never went down while its redirects failed");
    assert!(
        down.contains("the kernel dropped") && down.contains("headed out of"),
        "{down}"
    );
    let back = wait_for(Duration::from_secs(5), || {
        problems(&agent, "blue").is_empty().then_some(())
    });
    assert!(
        back.is_some(),
        "blue comes back once frames pass: {:?}",
        problems(&agent, "blue")
    );
}

/// The filters docs/operations.md gives for bluegreen's own messages: the
/// block after its `tested: NAME` marker, so the documented snippet is the
/// tested one.
fn readme_snippet(name: &str) -> String {
    bg_tests::docs::snippet("docs/operations.md", name)
}

/// The default UDP probe is an empty datagram, which rsyslog discards
/// without writing: probes every 100 ms leave its file empty. The tagged
/// probe, and the deployment's validation messages, are dropped by the
/// documented filter, while real messages still land.
#[test]
fn probes_and_validation_leave_no_trace_in_rsyslog() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let (a_blue, a_green) = ("198.18.0.1:10514", "198.18.0.1:20514");
    let (b_blue, b_green) = ("198.18.0.1:10515", "198.18.0.1:20515");
    let config = lab.path("traces.toml");
    let text = [
        service("quiet", "udp", "0.0.0.0:514", a_blue, a_green, ""),
        service(
            "tagged",
            "udp",
            "0.0.0.0:515",
            b_blue,
            b_green,
            TAGGED_PROBE,
        ),
        FAST_HEALTH.into(),
        quick_deploy(5, 0, 200),
    ];
    std::fs::write(&config, text.join("\n")).unwrap();
    let addr = |a: &str| a.parse::<std::net::SocketAddr>().unwrap();
    let rules = readme_snippet("rsyslog-drop");
    let blue = Rsyslog::start(&lab.lb, &lab.dir, "blue", &[addr(a_blue)], &[]).unwrap();
    let control = Rsyslog::start(&lab.lb, &lab.dir, "control", &[addr(b_blue)], &[]).unwrap();
    let green = Rsyslog::start_with(
        &lab.lb,
        &lab.dir,
        "green",
        &[addr(a_green), addr(b_green)],
        &[],
        &rules,
    )
    .unwrap();
    let agent = Agent::start(&lab, &config).expect("agent");
    std::thread::sleep(Duration::from_millis(1500));
    let up = wait_for(Duration::from_secs(5), || {
        (problems(&agent, "blue").is_empty() && problems(&agent, "green").is_empty()).then_some(())
    });
    assert!(up.is_some(), "{:?}", problems(&agent, "green"));
    assert!(
        blue.lines().is_empty(),
        "empty probes leave no line: {:?}",
        blue.lines()
    );
    let tagged = control.lines();
    assert!(
        tagged.len() >= 5 && tagged.iter().all(|l| l.contains("health probe")),
        "tagged probes are written where nothing filters them: {tagged:?}"
    );
    let out = agent.ctl(&["deploy", "green", "--force", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket =
        bg_tests::traffic::sender(&lab.client, bg_tests::lab::service_addr(Family::V4)).unwrap();
    bg_tests::traffic::send_paced(&socket, &["<13>app: a real message".to_owned()], 10).unwrap();
    let real = wait_for(Duration::from_secs(5), || {
        green
            .lines()
            .iter()
            .any(|l| l.contains("a real message"))
            .then_some(())
    });
    assert!(
        real.is_some(),
        "real traffic still lands: {:?}",
        green.lines()
    );
    assert_eq!(
        green.lines(),
        vec!["a real message".to_owned()],
        "no probe and none of the 400 validation messages reached the file"
    );
}

/// The same for syslog-ng (Debian's, unpacked apart by setup): the default
/// empty UDP probe stores nothing, while a tagged probe beside it (the
/// control) is stored; the documented syslog-ng filter drops tagged probes
/// and validation messages; real traffic through the service is stored.
#[test]
fn probes_and_validation_leave_no_trace_in_syslog_ng() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let backends = |port: u16| (format!("198.18.0.1:1{port}"), format!("198.18.0.1:2{port}"));
    let service = |name: &str, port: u16, tagged: bool| {
        let (blue, green) = backends(port);
        let more = if tagged { TAGGED_PROBE } else { "" };
        service(name, "udp", format!("0.0.0.0:{port}"), blue, green, more)
    };
    let config = lab.path("syslog-ng.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}{}[health]\ninterval_ms = 100\nrise = 2\nfall = 2\n",
            service("quiet", 514, false),
            service("tagged", 515, true),
            service("filtered", 516, true)
        ),
    )
    .unwrap();
    let start = |name: &str, port: u16, log: Option<&str>| {
        let (blue, green) = backends(port);
        SyslogNg::launch(
            &lab.lb,
            &lab.dir,
            name,
            &[blue.parse().unwrap(), green.parse().unwrap()],
            log,
        )
        .expect("syslog-ng")
    };
    let quiet = start("quiet", 514, None);
    let tagged = start("tagged", 515, None);
    let filter = readme_snippet("syslog-ng-drop");
    let filtered = start("filtered", 516, Some(&filter));
    let agent = Agent::start(&lab, &config).expect("agent");
    let up = wait_for(Duration::from_secs(5), || {
        (problems(&agent, "blue").is_empty() && problems(&agent, "green").is_empty()).then_some(())
    });
    assert!(up.is_some(), "{:?}", problems(&agent, "green"));
    // About 15 probe rounds on each backend.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        quiet.lines().is_empty(),
        "empty probes leave no line: {:?}",
        quiet.lines()
    );
    let control = tagged.lines();
    assert!(
        control.len() >= 10 && control.iter().all(|l| l.contains("health probe")),
        "tagged probes are stored, so the file would show a stored probe: {control:?}"
    );
    let send = |port: u16, msgs: &[&str]| {
        let to = std::net::SocketAddr::new(bg_tests::lab::service_addr(Family::V4).ip(), port);
        let socket = bg_tests::traffic::sender(&lab.client, to).unwrap();
        let msgs: Vec<String> = msgs.iter().map(|m| m.to_string()).collect();
        bg_tests::traffic::send_paced(&socket, &msgs, 10).unwrap();
    };
    send(514, &["<13>app: a real message"]);
    send(
        516,
        &[
            "<14>bluegreen-validate: validation message 1",
            "<13>app: a real message",
        ],
    );
    for (server, what) in [(&quiet, "quiet"), (&filtered, "filtered")] {
        let real = wait_for(Duration::from_secs(5), || {
            (!server.lines().is_empty()).then_some(())
        });
        assert!(real.is_some(), "real traffic lands on {what}");
    }
    assert_eq!(quiet.lines(), vec!["app [a real message]".to_owned()]);
    assert_eq!(
        filtered.lines(),
        vec!["app [a real message]".to_owned()],
        "the documented filter drops tagged probes and validation messages, and only them"
    );
}
