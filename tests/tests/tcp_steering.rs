//! End-to-end TCP steering in namespaces: connections keep their colour
//! across flips (never reset, nothing lost), new connections take the
//! active colour, drain, a real client and server, and agent restarts.
use std::{io::Write as _, time::Duration};

use rstest::rstest;

use bg_tests::{
    agent::{Agent, Launch, lab_with_agent_launched, try_agent},
    lab::{Backends, Family, Lab, service_addr_for},
    packet::{ACK, Frame, SYN},
    privileged,
    rsyslog::Rsyslog,
    spoof,
    traffic::{TcpClient, TcpSink},
    wait_for,
};

fn msgs(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("<13>{prefix} message {i}")).collect()
}

struct TcpLab {
    lab: Lab,
    agent: Agent,
    family: Family,
}

impl TcpLab {
    fn new(backends: Backends, family: Family) -> Self {
        Self::launched(backends, family, Launch::Nsenter)
    }

    fn launched(backends: Backends, family: Family, launch: Launch) -> Self {
        Self::configured(backends, family, launch, "")
    }

    /// With `extra` appended to the test config.
    fn configured(backends: Backends, family: Family, launch: Launch, extra: &str) -> Self {
        let (lab, _, agent) =
            lab_with_agent_launched(backends, &[("tcp", 601)], family, extra, launch);
        Self { lab, agent, family }
    }

    fn sink(&self, colour: &str) -> TcpSink {
        TcpSink::start(
            self.lab.backend_ns(colour),
            self.lab.backend_for(colour, self.family, 601),
        )
        .expect("tcp sink")
    }

    fn connect(&self) -> TcpClient {
        TcpClient::connect(&self.lab.client, service_addr_for(self.family, 601))
            .expect("connect through the service")
    }

    fn live(&self) -> (u64, u64) {
        let s = self.agent.status();
        let live = &s["tcp"]["live_connections"];
        (
            live["blue"].as_u64().unwrap(),
            live["green"].as_u64().unwrap(),
        )
    }
}

/// One connection opened on blue sends through three flips and keeps
/// landing on blue, in order, never reset; a connection opened after the
/// flips lands on the new colour.
#[rstest]
#[case::local_backends_ipv4(Backends::Local, Family::V4)]
#[case::local_backends_ipv6(Backends::Local, Family::V6)]
#[case::namespace_backends_ipv4(Backends::Namespaces, Family::V4)]
#[case::namespace_backends_ipv6(Backends::Namespaces, Family::V6)]
fn tcp_connection_across_flips(#[case] backends: Backends, #[case] family: Family) {
    if privileged() {
        connection_across_flips_in(TcpLab::new(backends, family));
    }
}

fn connection_across_flips_in(t: TcpLab) {
    let (blue, green) = (t.sink("blue"), t.sink("green"));
    let mut first = t.connect();
    let mut sent_first = Vec::new();
    for (phase, next) in ["green", "blue", "green"].iter().enumerate() {
        let batch = msgs("first", phase * 100..(phase + 1) * 100);
        first.send(&batch).expect("no reset across flips");
        sent_first.extend(batch);
        std::thread::sleep(Duration::from_millis(100));
        t.agent.flip(next);
    }
    let mut second = t.connect();
    let sent_second = msgs("second", 0..50);
    second
        .send(&sent_second)
        .expect("send on the new connection");
    let tail = msgs("first", 300..400);
    first.send(&tail).expect("the old connection still works");
    sent_first.extend(tail);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.live(), (1, 1), "one live connection per colour");
    first.close().expect("clean close, no reset");
    second.close().expect("clean close, no reset");
    std::thread::sleep(Duration::from_millis(200));
    let (b, g) = (blue.finish(), green.finish());
    assert_eq!(b.len(), 1, "blue saw exactly one connection");
    assert_eq!(
        b[0], sent_first,
        "every message of the first connection, in order, on blue"
    );
    assert_eq!(g.len(), 1, "green saw exactly one connection");
    assert_eq!(
        g[0], sent_second,
        "the connection opened after the flips is on green"
    );
    let counters = &t.agent.status()["counters"];
    assert!(
        counters["unnat"].as_u64().unwrap() > 0,
        "replies went through reverse NAT: {counters}"
    );
}

/// On TC ingress, with checksum offload left on in the client (partial
/// checksums, as from a container on this host).
#[rstest]
#[case::namespace_backends_ipv4(Backends::Namespaces, Family::V4)]
#[case::local_backends_ipv6(Backends::Local, Family::V6)]
fn tc_tcp_connection_across_flips_with_offload(#[case] backends: Backends, #[case] family: Family) {
    if !privileged() {
        return;
    }
    let t = TcpLab::configured(
        backends,
        family,
        Launch::Nsenter,
        "[dataplane]\nattach = \"tc\"\n",
    );
    t.lab.client_offload_on().unwrap();
    assert_eq!(t.agent.status()["xdp_mode"], "tc");
    connection_across_flips_in(t);
}

/// util-linux `logger --tcp --octet-count` keeps one connection while we
/// flip; rsyslog on blue writes every line, in order; green gets nothing.
#[rstest]
#[case::local_backends_ipv4(Backends::Local, Family::V4)]
#[case::namespace_backends_ipv6(Backends::Namespaces, Family::V6)]
fn logger_tcp_to_rsyslog(#[case] backends: Backends, #[case] family: Family) {
    if !privileged() {
        return;
    }
    let t = TcpLab::new(backends, family);
    let servers: Vec<Rsyslog> = ["blue", "green"]
        .iter()
        .map(|c| {
            let addr = t.lab.backend_for(c, family, 601);
            Rsyslog::start(t.lab.backend_ns(c), &t.lab.dir, c, &[], &[addr]).expect("rsyslogd")
        })
        .collect();
    let mut logger = t
        .lab
        .logger_tcp(service_addr_for(family, 601), "bgtcp")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("logger (Debian bsdutils)");
    let mut stdin = logger.stdin.take().unwrap();
    let mut sent = Vec::new();
    for (phase, next) in ["green", "blue", "green", "blue"].iter().enumerate() {
        let batch: Vec<String> = (0..50)
            .map(|i| format!("logger-tcp phase {phase} line {i}"))
            .collect();
        for line in &batch {
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.flush().unwrap();
        sent.extend(batch);
        // Let logger send this batch before the flip.
        let blue = &servers[0];
        let n = sent.len();
        let arrived = wait_for(Duration::from_secs(10), || {
            (blue.lines().len() >= n).then_some(())
        });
        assert!(
            arrived.is_some(),
            "phase {phase}: blue has {} of {n} lines",
            blue.lines().len()
        );
        t.agent.flip(next);
    }
    drop(stdin);
    let status = logger.wait().unwrap();
    assert!(
        status.success(),
        "logger exited {status}: its connection was not reset"
    );
    std::thread::sleep(Duration::from_millis(300));
    let written = servers[0].lines();
    assert_eq!(
        written.len(),
        sent.len(),
        "blue rsyslog wrote every line once"
    );
    for (i, (w, s)) in written.iter().zip(&sent).enumerate() {
        assert_eq!(w, s, "line {i} as sent");
    }
    assert!(
        servers[1].lines().is_empty(),
        "nothing reached green: {:?}",
        servers[1].lines()
    );
}

/// `bgctl drain blue` times out (exit 4) while a blue connection stays
/// open, and succeeds (exit 0) once it closes.
#[test]
fn drain_waits_for_the_old_colour_to_empty() {
    if !privileged() {
        return;
    }
    let t = TcpLab::new(Backends::Namespaces, Family::V4);
    let (_blue, _green) = (t.sink("blue"), t.sink("green"));
    let mut conn = t.connect();
    conn.send(&msgs("drain", 0..10)).unwrap();
    t.agent.flip("green");
    let out = t.agent.ctl(&["drain", "blue", "--timeout", "2"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "timeout exit code; stderr: {stderr}"
    );
    assert!(
        stdout.contains("draining blue: 1 live connection(s)"),
        "progress lines: {stdout}"
    );
    assert!(stdout.lines().count() >= 2, "a line each second: {stdout}");
    assert!(
        stderr.contains("timed out after") && stderr.contains("blue still holds 1"),
        "{stderr}"
    );

    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        conn.close()
    });
    let out = t.agent.ctl(&["drain", "blue", "--timeout", "20"]);
    closer.join().unwrap().expect("clean close");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "drained: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("blue is drained"), "{stdout}");
}

/// kill -9 the agent with connections open, keep sending while it is gone,
/// restart it: the connection never resets and stays on its colour, and
/// the restarted agent still counts it.
#[rstest]
#[case::under_ip_netns_exec(Launch::IpNetnsExec)]
#[case::under_nsenter(Launch::Nsenter)]
fn tcp_connections_survive_an_agent_kill9_and_restart(#[case] launch: Launch) {
    if !privileged() {
        return;
    }
    let mut t = TcpLab::launched(Backends::Namespaces, Family::V4, launch);
    let (blue, green) = (t.sink("blue"), t.sink("green"));
    let mut conn = t.connect();
    let mut sent = msgs("restart", 0..50);
    conn.send(&sent).unwrap();
    t.agent.flip("green");
    t.agent.kill9();
    let while_dead = msgs("restart", 50..100);
    conn.send(&while_dead)
        .expect("the data path keeps the connection without the agent");
    sent.extend(while_dead);
    t.agent.restart().expect("restart");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        t.live(),
        (1, 0),
        "the pinned flow table still holds the connection on blue"
    );
    let after = msgs("restart", 100..150);
    conn.send(&after).unwrap();
    sent.extend(after);
    let mut fresh = t.connect();
    fresh.send(&msgs("fresh", 0..10)).unwrap();
    conn.close().expect("clean close");
    fresh.close().expect("clean close");
    std::thread::sleep(Duration::from_millis(200));
    let (b, g) = (blue.finish(), green.finish());
    assert_eq!(
        b,
        vec![sent],
        "one connection on blue with every message in order"
    );
    assert_eq!(
        g,
        vec![msgs("fresh", 0..10)],
        "a new connection goes to green"
    );
}

/// The live connection count follows opens and closes.
#[test]
fn status_counts_live_connections_per_colour() {
    if !privileged() {
        return;
    }
    let t = TcpLab::new(Backends::Local, Family::V4);
    let (_blue, _green) = (t.sink("blue"), t.sink("green"));
    let conns: Vec<TcpClient> = (0..3).map(|_| t.connect()).collect();
    t.agent.flip("green");
    let more: Vec<TcpClient> = (0..2).map(|_| t.connect()).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(t.live(), (3, 2));
    for c in conns {
        c.close().unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(t.live(), (0, 2));
    let text = t.agent.ctl(&["status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("blue 0, green 2"));
    drop(more);
}

/// `tcp.reverse_nat_interfaces` attaches reverse NAT to more egresses,
/// refuses unknown interfaces by name, and detaches what the config drops.
#[test]
fn reverse_nat_interfaces_are_attached_checked_and_detached() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let config = lab
        .write_test_config(&[("tcp", 601)], Family::V4, "")
        .expect("config");
    let base = std::fs::read_to_string(&config).unwrap();
    let extra = format!("bg{}l1", lab.id);
    std::fs::write(
        &config,
        format!("{base}[tcp]\nreverse_nat_interfaces = [\"{extra}\"]\n"),
    )
    .unwrap();
    let mut agent = Agent::start(&lab, &config).expect("agent");
    let ifindex: u32 = {
        let link = lab
            .lb
            .run("ip", &["-o", "link", "show", "dev", &extra])
            .unwrap();
        String::from_utf8_lossy(&link.stdout)
            .split(':')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let pin = lab
        .pin_root
        .join(&lab.lb_if)
        .join(format!("unnat_link_if{ifindex}"));
    assert!(pin.exists(), "{} pinned", pin.display());
    let sink = TcpSink::start(
        lab.backend_ns("blue"),
        lab.backend_for("blue", Family::V4, 601),
    )
    .unwrap();
    let mut conn =
        TcpClient::connect(&lab.client, service_addr_for(Family::V4, 601)).expect("connect");
    conn.send(&msgs("extra", 0..5)).unwrap();
    conn.close().expect("clean close");
    std::fs::write(&config, &base).unwrap();
    agent
        .restart()
        .expect("restart without the extra interface");
    assert!(!pin.exists(), "the dropped interface's link is unpinned");
    assert!(
        agent
            .log_text()
            .contains("interface no longer in tcp.reverse_nat_interfaces")
    );

    std::fs::write(
        &config,
        format!("{base}[tcp]\nreverse_nat_interfaces = [\"nosuch0\"]\n"),
    )
    .unwrap();
    agent.kill9();
    let out = try_agent(&lab, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tcp.reverse_nat_interfaces") && stderr.contains("nosuch0"),
        "{stderr}"
    );
    assert_eq!(sink.finish(), vec![msgs("extra", 0..5)]);
}

/// An attacker on the client's network: after a flip, one spoofed SYN with
/// a live connection's own 4-tuple, then floods of spoofed SYNs, of blind
/// ACKs, and of both in turn, each ten times the size of the flow tables
/// (green answers the SYNs, and its SYN-ACKs pass the reverse NAT). The connection never
/// resets, stays on blue, and loses nothing; no established flow is lost.
#[test]
fn a_connection_survives_a_spoofed_syn_and_floods_after_a_flip() {
    if !privileged() {
        return;
    }
    let t = TcpLab::configured(
        Backends::Namespaces,
        Family::V4,
        Launch::Nsenter,
        "[tcp]\nflow_table_size = 1024\npending_table_size = 1024\n",
    );
    // Green's SYN-ACKs to the spoofed clients leave through the lb's
    // egress (and its reverse NAT), towards the client's side.
    t.lab
        .lb
        .run(
            "ip",
            &["route", "add", "198.19.0.0/16", "via", "198.18.0.2"],
        )
        .unwrap();
    let (blue, green) = (t.sink("blue"), t.sink("green"));
    let mut conn = t.connect();
    let mut sent = msgs("attacked", 0..50);
    conn.send(&sent).unwrap();
    t.agent.flip("green");
    let me = conn.local_addr();
    let mut syn = Frame::tcp(&me.ip().to_string(), "198.18.0.1", me.port(), 601, SYN, b"");
    syn.seq = 7;
    let n = spoof::send_ipv4(&t.lab.client, vec![syn.build()], Duration::from_secs(5)).unwrap();
    assert_eq!(n, 1);
    std::thread::sleep(Duration::from_millis(100));
    let after_syn = msgs("attacked", 50..100);
    conn.send(&after_syn)
        .expect("no reset after the spoofed SYN");
    sent.extend(after_syn);
    // SYNs; then blind ACKs; then each fake client's SYN and ACK in turn.
    let pairs: Vec<Vec<u8>> = spoof::flood("198.18.0.1", 601, SYN, 5 * 1024)
        .into_iter()
        .zip(spoof::flood("198.18.0.1", 601, ACK, 5 * 1024))
        .flat_map(|(syn, ack)| [syn, ack])
        .collect();
    let floods = [
        spoof::flood("198.18.0.1", 601, SYN, 10 * 1024),
        spoof::flood("198.18.0.1", 601, ACK, 10 * 1024),
        pairs,
    ];
    for (i, frames) in floods.into_iter().enumerate() {
        let n = spoof::send_ipv4(&t.lab.client, frames, Duration::from_secs(30)).unwrap();
        assert_eq!(n, 10 * 1024, "the whole flood was sent");
        let batch = msgs(&format!("after-flood-{i}"), 0..50);
        conn.send(&batch).expect("no reset during the floods");
        sent.extend(batch);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(t.live().0, 1, "blue still holds the connection");
    let c = t.agent.status()["counters"].clone();
    conn.close().expect("clean close, no reset");
    std::thread::sleep(Duration::from_millis(200));
    let (b, g) = (blue.finish(), green.finish());
    assert_eq!(
        b,
        vec![sent],
        "one connection on blue, every message in order"
    );
    assert!(g.is_empty(), "nothing of it reached green: {g:?}");
    assert!(c["tcp_syn_on_live_flow"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(
        c["tcp_admitted"].as_u64().unwrap(),
        1,
        "only the real handshake: {c}"
    );
    assert!(
        c["tcp_admission_refused"].as_u64().unwrap() > 0,
        "blind ACKs on pending handshakes were refused: {c}"
    );
    let s = t.agent.status();
    let blue_misses = s["services"][0]["traffic"]["blue"]["tcp_flow_miss"].as_u64();
    assert_eq!(blue_misses, Some(0), "no established flow was lost");
}
