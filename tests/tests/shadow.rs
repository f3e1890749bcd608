//! Shadow traffic end to end (issue 15): a real agent in XDP mode, real
//! rsyslog on both colours behind their own veths, a real UDP sender. A
//! deployment's shadow phase copies live syslog to green's shadow listener
//! while blue keeps every message; a green that refuses copies, or drops
//! them silently, fails the shadow and nothing flips; no ICMP error from
//! green ever reaches the sender.
use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use bg_tests::{
    agent::Agent,
    fixtures::{FAST_HEALTH, service},
    lab::{Backends, Family, Lab, service_addr},
    netns::NetNs,
    privileged,
    rsyslog::{Inputs, Rsyslog},
    wait_for,
};
use rstest::rstest;
use serde_json::Value;

const ROUND: usize = 200;

/// Where green's shadow listener is.
#[derive(Clone, Copy, PartialEq)]
enum Listener {
    /// On green's host, behind green's own veth: XDP copies by devmap
    /// broadcast.
    Green,
    /// None: copies meet a closed port.
    Missing,
    /// On a host behind blue's veth: broadcast cannot tell the copy from
    /// the original there, so copies take the kernel's path.
    BesideBlue,
}

impl Listener {
    fn addr(self) -> &'static str {
        match self {
            Listener::BesideBlue => "198.18.1.2:5514",
            _ => "198.18.2.2:5514",
        }
    }
}

struct Setup {
    // Drop order: agent, servers, then the lab.
    agent: Agent,
    blue: Rsyslog,
    green: Rsyslog,
    _beside_blue: Option<Rsyslog>,
    /// What the shadow listener received ("fromhost-ip msg").
    shadow_log: std::path::PathBuf,
    sender: UdpSocket,
    lab: Lab,
}

/// A lab whose green has a shadow listener where `listener` says, and an
/// agent whose deployments shadow for `shadow_s` and count green's
/// accepted copies by the lines of its shadow file.
fn setup(listener: Listener) -> Setup {
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let blue = Rsyslog::start(
        lab.backend_ns("blue"),
        &lab.dir,
        "blue",
        &[lab.backend("blue", Family::V4)],
        &[],
    )
    .expect("blue rsyslogd");
    let shadow: Vec<SocketAddr> = vec![listener.addr().parse().unwrap()];
    let green = Rsyslog::launch(
        lab.backend_ns("green"),
        &lab.dir,
        "green",
        &Inputs {
            udp: &[lab.backend("green", Family::V4)],
            shadow: if listener == Listener::Green {
                &shadow
            } else {
                &[]
            },
            ..Inputs::default()
        },
    )
    .expect("green rsyslogd");
    let beside_blue = (listener == Listener::BesideBlue).then(|| {
        Rsyslog::launch(
            lab.backend_ns("blue"),
            &lab.dir,
            "beside-blue",
            &Inputs {
                shadow: &shadow,
                ..Inputs::default()
            },
        )
        .expect("shadow rsyslogd beside blue")
    });
    let shadow_log = beside_blue
        .as_ref()
        .map_or(green.shadow_log.clone(), |r| r.shadow_log.clone());
    let count = format!(
        "[\"sh\", \"-c\", \"cat {} 2>/dev/null | wc -l\"]",
        shadow_log.display()
    );
    let config = format!(
        "{}{FAST_HEALTH}[deploy]\nhealthy_timeout_s = 30\nbake_s = 1\nkeep_warm_s = 0\nvalidate_messages = 100\nshadow_s = 3\nshadow_count = {count}\nshadow_broadcast = true\n",
        service(
            "syslog-udp",
            "udp",
            "0.0.0.0:514",
            lab.backend("blue", Family::V4),
            lab.backend("green", Family::V4),
            &format!("shadow_green = \"{}\"", listener.addr()),
        )
    );
    let path = lab.dir.join("bluegreen.toml");
    std::fs::write(&path, config).unwrap();
    bluegreen::dataplane::bpffs::ensure_mounted(&lab.pin_root).expect("bpffs");
    let agent = Agent::start(&lab, &path).expect("agent");
    agent.wait_healthy(&["blue", "green"], Duration::from_secs(30));
    let to = service_addr(Family::V4);
    let sender = lab
        .client
        .enter(move || {
            let s = UdpSocket::bind("198.18.0.2:0").unwrap();
            // Connected: an ICMP error that reached it would show as
            // ECONNREFUSED on a later send or in take_error.
            s.connect(to).unwrap();
            s
        })
        .unwrap();
    Setup {
        agent,
        blue,
        green,
        _beside_blue: beside_blue,
        shadow_log,
        sender,
        lab,
    }
}

/// The same ROUND messages each time: "same-<i>".
fn round(sender: &UdpSocket) {
    for i in 0..ROUND {
        sender
            .send(format!("<13>bgtest: same-{i} shadow payload").as_bytes())
            .expect("a send refused: an ICMP error reached the sender");
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// ICMP destination-unreachable messages the namespace has received.
fn unreachables_received(ns: &NetNs) -> u64 {
    let out = ns.run("cat", &["/proc/net/snmp"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
    let (names, values) = (icmp.next().unwrap(), icmp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InDestUnreachs")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

fn lines_with(lines: &[String], token: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.split_whitespace().any(|w| w == token))
        .cloned()
        .collect()
}

/// Waits until `server` wrote `n` lines in all (UDP settles in ms here).
fn settle(server: &Rsyslog, file: &std::path::Path, n: usize) {
    wait_for(Duration::from_secs(10), || {
        let got = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .count();
        (got >= n).then_some(())
    });
    let _ = server;
}

/// Starts a deployment onto green and waits for its shadow phase.
fn deploy_into_shadow(s: &Setup) {
    let out = s.agent.ctl(&["deploy", "green", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.agent.wait_phase("shadow", Duration::from_secs(30));
}

fn shadow_result(d: &Value) -> &Value {
    &d["shadow"][0]
}

#[rstest]
#[case::by_devmap_broadcast(Listener::Green, "xdp-broadcast", "198.18.2.1 ")]
#[case::by_the_kernels_path(Listener::BesideBlue, "kernel", "198.18.1.1 ")]
fn the_shadow_copies_live_syslog_to_greens_listener_while_blue_keeps_it_all(
    #[case] listener: Listener,
    #[case] mechanism: &str,
    #[case] source: &str,
) {
    if !privileged() {
        return;
    }
    let s = setup(listener);
    let icmp_before = unreachables_received(&s.lab.client);
    // Without a shadow: the reference round.
    round(&s.sender);
    settle(&s.blue, &s.blue.log, ROUND);
    deploy_into_shadow(&s);
    // Live traffic during the shadow: the same messages again.
    round(&s.sender);
    let done = s.agent.wait_phase("done", Duration::from_secs(60));
    settle(&s.blue, &s.blue.log, 2 * ROUND);
    let blue = s.blue.lines();
    let shadow: Vec<String> = std::fs::read_to_string(&s.shadow_log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let green = s.green.lines();
    for i in 0..ROUND {
        let token = format!("same-{i}");
        // Blue got every message of both rounds, byte for byte the same.
        let b = lines_with(&blue, &token);
        assert_eq!(b.len(), 2, "{token} on blue: {b:?}");
        assert_eq!(b[0], b[1], "blue's line changed under the shadow");
        // Green's shadow listener got one copy, from the steering host.
        let c = lines_with(&shadow, &token);
        assert_eq!(c.len(), 1, "{token} in green's shadow file: {c:?}");
        assert!(c[0].starts_with(source), "copy's source: {}", c[0]);
        assert!(c[0].ends_with(&b[0]), "copy {} differs from {}", c[0], b[0]);
        // The production store never saw it.
        assert!(
            lines_with(&green, &token).is_empty(),
            "{token} in green's store"
        );
    }
    let r = shadow_result(&done);
    assert_eq!(r["passed"], true, "{done}");
    let how = r["mechanism"].as_str().unwrap_or_default();
    assert!(how.starts_with(mechanism), "{how}");
    let (broadcast, handed) = if mechanism == "kernel" {
        (0, ROUND as u64)
    } else {
        (ROUND as u64, 0)
    };
    assert_eq!(r["look"]["counts"]["broadcast"], broadcast, "{done}");
    assert_eq!(r["look"]["counts"]["handed_to_tc"], handed, "{done}");
    assert_eq!(r["look"]["counts"]["copied"], ROUND as u64, "{done}");
    assert_eq!(r["accepted"], ROUND as u64, "{done}");
    assert_eq!(r["look"]["icmp_errors"], 0);
    assert_eq!(done["colour"], "green");
    assert_eq!(s.agent.status()["active"], "green");
    // The copies ended with the phase.
    assert!(s.agent.status()["shadow"].is_null());
    let metrics = ureq_metrics(&s);
    assert!(
        metrics.contains("bluegreen_shadow_copies_total{service=\"syslog-udp\"} 200"),
        "{metrics}"
    );
    assert_eq!(unreachables_received(&s.lab.client), icmp_before);
    assert!(s.sender.take_error().unwrap().is_none());
}

/// The agent's metrics, from its HTTP server in the steering namespace.
fn ureq_metrics(s: &Setup) -> String {
    bg_tests::http::get(&s.lab.lb, "/metrics")
        .expect("GET /metrics")
        .body
}

#[test]
fn a_green_that_refuses_copies_fails_the_shadow_and_nothing_flips() {
    if !privileged() {
        return;
    }
    // No shadow listener on green: every copy meets a closed port.
    let s = setup(Listener::Missing);
    let icmp_before = unreachables_received(&s.lab.client);
    deploy_into_shadow(&s);
    round(&s.sender);
    let d = s.agent.wait_phase("failed", Duration::from_secs(30));
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ICMP errors") && reason.contains("nothing moved"),
        "{d}"
    );
    assert!(
        shadow_result(&d)["look"]["icmp_errors"].as_u64().unwrap() > 0,
        "{d}"
    );
    assert_eq!(s.agent.status()["active"], "blue");
    assert!(s.agent.status()["shadow"].is_null(), "the copies must end");
    // Blue kept every message; the sender never heard of green's refusals.
    settle(&s.blue, &s.blue.log, ROUND);
    let blue = s.blue.lines();
    for i in 0..ROUND {
        assert_eq!(lines_with(&blue, &format!("same-{i}")).len(), 1, "same-{i}");
    }
    assert_eq!(unreachables_received(&s.lab.client), icmp_before);
    assert!(s.sender.take_error().unwrap().is_none());
}

#[test]
fn a_green_that_drops_copies_silently_fails_the_count_and_nothing_flips() {
    if !privileged() {
        return;
    }
    let s = setup(Listener::Green);
    // Green drops what reaches its shadow listener, without a word.
    let green_ns = s.lab.backend_ns("green");
    for rule in [
        "add table inet bgdrop",
        "add chain inet bgdrop input { type filter hook input priority 0 ; }",
        "add rule inet bgdrop input udp dport 5514 drop",
    ] {
        green_ns
            .run("nft", &rule.split(' ').collect::<Vec<_>>())
            .unwrap();
    }
    deploy_into_shadow(&s);
    round(&s.sender);
    let d = s.agent.wait_phase("failed", Duration::from_secs(40));
    let r = shadow_result(&d);
    assert_eq!(r["look"]["counts"]["copied"], ROUND as u64, "{d}");
    assert_eq!(r["accepted"], 0, "{d}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("accepted 0 of 200"), "{d}");
    assert_eq!(s.agent.status()["active"], "blue");
    settle(&s.blue, &s.blue.log, ROUND);
    assert_eq!(s.blue.lines().len(), ROUND);
}
