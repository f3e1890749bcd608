//! Direct server return end to end: backends whose default route is a
//! router, not the steering node, as on a real network.
//!
//! ```text
//!  client ──c0── lb (XDP; dsr-l2) ──b0── blue  (service address on lo, rsyslogd)
//!    │                           └──b0── green (the same)
//!    └──c1── router ──b1── blue, green: their default route
//! ```
//! Each backend is set up by running what `bgctl backend-setup` prints for
//! it (its `ip` and `sysctl` lines), starting from strict reverse-path
//! filtering as on a hardened host. A TCP syslog stream and a UDP stream
//! run across three flips; nothing is lost, rsyslog sees the client's own
//! address, and replies cross the router, never the steering node. The same
//! topology in NAT mode cannot even open a TCP connection, as the README
//! says.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use aya::programs::TcAttachType;

use bg_tests::{
    agent::{Agent, bgctl_bin},
    lab::{Backends, Lab, addr, veth},
    netns::NetNs,
    privileged,
    prog::BenchTc,
    rsyslog::{Inputs, Rsyslog},
    traffic::{TcpClient, occurrences},
    wait_for,
};
use bluegreen::{
    dataplane::addr_words,
    model::{Colour, Steering, Weight},
};

/// Outside the client's subnet, so the client routes to it through the lb.
const VIP: &str = "198.18.10.10";
const CLIENT: &str = "198.18.0.2";

/// The lab's addresses in one family.
struct Net {
    /// The service address, outside the client's subnet.
    vip: &'static str,
    client: &'static str,
    blue: &'static str,
    green: &'static str,
    /// Any address, for the collectors' inputs.
    any: &'static str,
}

const V4: Net = Net {
    vip: VIP,
    client: CLIENT,
    blue: "198.18.1.2",
    green: "198.18.2.2",
    any: "0.0.0.0",
};

const V6: Net = Net {
    vip: "2001:db8:10::10",
    client: "2001:db8::2",
    blue: "2001:db8:1::2",
    green: "2001:db8:2::2",
    any: "::",
};

impl Net {
    fn at(&self, ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }
}

fn config(mode: &str) -> String {
    config_in(&V4, mode)
}

fn config_in(net: &Net, mode: &str) -> String {
    let (vip, blue, green) = (
        |p| net.at(net.vip, p),
        |p| net.at(net.blue, p),
        |p| net.at(net.green, p),
    );
    format!(
        r#"
[[service]]
name = "tcp"
protocol = "tcp"
listen = "{}"
blue = "{}"
green = "{}"
{mode}

[[service]]
name = "udp"
protocol = "udp"
listen = "{}"
blue = "{}"
green = "{}"
{mode}

[health]
interval_ms = 200
"#,
        vip(601),
        blue(601),
        green(601),
        vip(514),
        blue(514),
        green(514)
    )
}

/// Deployments that finish in seconds, with a gate of 200 messages.
fn deploy_settings() -> String {
    bg_tests::fixtures::quick_deploy(10, 1, 200) + "validate_rate = 5000\n"
}

/// The router namespace and its links; the backends' default route moves
/// to it. Returns the router (deleted on drop).
fn add_router(lab: &Lab) -> NetNs {
    let router = NetNs::new(&format!("bg{}-rt", lab.id)).expect("router netns");
    let sh = |ns: &NetNs, args: &[&str]| {
        ns.run(args[0], &args[1..])
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    };
    veth(&lab.client, "c1", &router, "r0").unwrap();
    addr(&lab.client, "c1", "198.18.7.2/24", "2001:db8:7::2/64").unwrap();
    addr(&router, "r0", "198.18.7.1/24", "2001:db8:7::1/64").unwrap();
    sh(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    sh(
        &router,
        &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
    );
    sh(
        &router,
        &["ip", "route", "add", "198.18.0.0/24", "via", "198.18.7.2"],
    );
    sh(
        &router,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8::/64",
            "via",
            "2001:db8:7::2",
        ],
    );
    for (ns, n) in [(lab.backend_ns("blue"), 8), (lab.backend_ns("green"), 9)] {
        let r_if = format!("r{n}");
        veth(&router, &r_if, ns, "b1").unwrap();
        addr(
            &router,
            &r_if,
            &format!("198.18.{n}.1/24"),
            &format!("2001:db8:{n}::1/64"),
        )
        .unwrap();
        addr(
            ns,
            "b1",
            &format!("198.18.{n}.2/24"),
            &format!("2001:db8:{n}::2/64"),
        )
        .unwrap();
        sh(
            ns,
            &[
                "ip",
                "route",
                "replace",
                "default",
                "via",
                &format!("198.18.{n}.1"),
            ],
        );
        sh(
            ns,
            &[
                "ip",
                "-6",
                "route",
                "replace",
                "default",
                "via",
                &format!("2001:db8:{n}::1"),
            ],
        );
        // A hardened host: strict reverse-path filtering everywhere.
        sh(ns, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"]);
        sh(ns, &["sysctl", "-qw", "net.ipv4.conf.b0.rp_filter=1"]);
    }
    // Replies reach the client on c1, whose route to the service is c0.
    sh(
        &lab.client,
        &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"],
    );
    sh(
        &lab.client,
        &["sysctl", "-qw", "net.ipv4.conf.c1.rp_filter=0"],
    );
    router
}

/// Runs the `ip` and `sysctl` lines of `bgctl backend-setup` for a colour
/// in its backend's namespace: what an operator pipes into `sh` there.
fn set_up_backend(lab: &Lab, file: &Path, colour: &str) {
    set_up_backend_but(lab, file, colour, &[]);
}

/// `set_up_backend`, leaving out the lines that contain any of `skip`.
fn set_up_backend_but(lab: &Lab, file: &Path, colour: &str, skip: &[&str]) {
    let out = std::process::Command::new(bgctl_bin())
        .args(["backend-setup", "--config"])
        .arg(file)
        .args(["--service", "tcp", "--colour", colour])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    let ns = lab.backend_ns(colour);
    let mut ran = 0;
    for line in script
        .lines()
        .filter(|l| l.starts_with("ip ") || l.starts_with("sysctl "))
        .filter(|l| !skip.iter().any(|s| l.contains(s)))
    {
        ns.run("sh", &["-c", line])
            .unwrap_or_else(|e| panic!("{colour}: {line}: {e}"));
        ran += 1;
    }
    // At least the service address on loopback (all IPv6 dsr-l2 needs).
    assert!(ran >= 1, "the script set up nothing:\n{script}");
}

/// Counts packets from `from` to `to` (the client) arriving in `ns`
/// (before routing: whether forwarded or local), in a table named bgdsr;
/// read with `counted`. (The probes' own answers, to the steering node, do
/// not count.)
fn count_from(ns: &NetNs, from: &str, to: &str) {
    let chain = "{ type filter hook prerouting priority -300; }";
    let ip = if from.contains(':') { "ip6" } else { "ip" };
    for args in [
        vec!["add", "table", "inet", "bgdsr"],
        vec!["add", "chain", "inet", "bgdsr", "c", chain],
        vec![
            "add", "rule", "inet", "bgdsr", "c", ip, "saddr", from, ip, "daddr", to, "counter",
        ],
    ] {
        ns.run("nft", &args).expect("nft counter");
    }
}

fn counted(ns: &NetNs) -> u64 {
    let out = ns
        .run("nft", &["-j", "list", "table", "inet", "bgdsr"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum()
}

fn rsyslog(lab: &Lab, colour: &str) -> Rsyslog {
    rsyslog_in(&V4, lab, colour)
}

fn rsyslog_in(net: &Net, lab: &Lab, colour: &str) -> Rsyslog {
    let any_udp = [net.at(net.any, 514)];
    let any_tcp = [net.at(net.any, 601)];
    let from = lab.path(&format!("{colour}-from.log"));
    let rules = format!(
        "template(name=\"bgfrom\" type=\"string\" string=\"%fromhost-ip% %msg%\\n\")\naction(type=\"omfile\" file=\"{}\" template=\"bgfrom\" asyncWriting=\"off\" flushOnTXEnd=\"on\" flushInterval=\"0\")",
        from.display()
    );
    Rsyslog::launch(
        lab.backend_ns(colour),
        &lab.dir,
        colour,
        &Inputs {
            udp: &any_udp,
            tcp: &any_tcp,
            rules: &rules,
            ..Inputs::default()
        },
    )
    .expect("rsyslogd")
}

#[test]
fn dsr_l2_backends_routed_elsewhere_lose_nothing_across_flips() {
    lose_nothing_across_flips("mode = \"dsr-l2\"", false);
}

/// Blue by MAC, green through the tunnel: modes differ per colour. Green
/// decapsulates with `bg_decap_tc`, a stand-in for the `tunl0` the script
/// brings up, which this kernel lacks (no ipip module).
#[test]
fn dsr_l2_blue_and_dsr_ipip_green_lose_nothing_across_flips() {
    lose_nothing_across_flips(
        "mode_blue = \"dsr-l2\"\nmode_green = \"dsr-ipip\"\ntunnel_source = \"198.18.2.1\"",
        true,
    );
}

/// The DSR lab with `modes` and rsyslog on both colours, each backend set
/// up by its `backend-setup` script; the colours in `decap` decapsulate
/// with `bg_decap_tc`. Replies to the client are counted at the
/// steering node and the router. Fields drop in order: the agent first,
/// the namespaces last.
struct DsrLab {
    agent: Agent,
    blue: Rsyslog,
    green: Rsyslog,
    _decap: Vec<BenchTc>,
    router: NetNs,
    lab: Lab,
}

impl DsrLab {
    fn new(modes: &str, decap: &[&str]) -> Self {
        Self::with(modes, decap, "")
    }

    /// `new`, with `extra` appended to the config.
    fn with(modes: &str, decap: &[&str], extra: &str) -> Self {
        Self::build(&V4, modes, decap, extra)
    }

    /// The lab in `net`'s family.
    fn build(net: &Net, modes: &str, decap: &[&str], extra: &str) -> Self {
        let lab = Lab::new(Backends::Namespaces).unwrap();
        let router = add_router(&lab);
        let file = lab.path("dsr.toml");
        std::fs::write(&file, config_in(net, modes) + extra).unwrap();
        for colour in ["blue", "green"] {
            set_up_backend_but(&lab, &file, colour, &["tunl0", "ip6tnl0"]);
        }
        let _decap = decap
            .iter()
            .map(|colour| {
                BenchTc::attach(
                    lab.backend_ns(colour),
                    "b0",
                    "bg_decap_tc",
                    TcAttachType::Ingress,
                )
                .expect("the stand-in decapsulator")
            })
            .collect();
        let blue = rsyslog_in(net, &lab, "blue");
        let green = rsyslog_in(net, &lab, "green");
        count_from(&lab.lb, net.vip, net.client);
        count_from(&router, net.vip, net.client);
        let agent = Agent::start(&lab, &file).unwrap();
        agent.wait_healthy(&["blue", "green"], Duration::from_secs(15));
        Self {
            agent,
            blue,
            green,
            _decap,
            router,
            lab,
        }
    }

    /// Replies crossed the router, never the steering node.
    fn assert_replies_bypassed_the_steering_node(&self) {
        let (via_lb, via_router) = (counted(&self.lab.lb), counted(&self.router));
        assert_eq!(via_lb, 0, "replies through the steering node");
        assert!(via_router > 0, "no reply seen at the router");
    }
}

/// IPv6: blue by MAC, green through an IPv6 tunnel (next header 41).
#[test]
fn ipv6_dsr_l2_blue_and_dsr_ipip_green_lose_nothing_across_flips() {
    lose_nothing_across_flips_in(
        &V6,
        "mode_blue = \"dsr-l2\"\nmode_green = \"dsr-ipip\"\ntunnel_source = \"2001:db8:2::1\"",
        true,
    );
}

fn lose_nothing_across_flips(modes: &str, green_ipip: bool) {
    lose_nothing_across_flips_in(&V4, modes, green_ipip);
}

fn lose_nothing_across_flips_in(net: &Net, modes: &str, green_ipip: bool) {
    if !privileged() {
        return;
    }
    let decap: &[&str] = if green_ipip { &["green"] } else { &[] };
    let t = DsrLab::build(net, modes, decap, "");
    let (lab, agent, blue, green) = (&t.lab, &t.agent, &t.blue, &t.green);
    let (tcp_vip, udp_vip) = (net.at(net.vip, 601), net.at(net.vip, 514));
    let mut stream = TcpClient::connect(&lab.client, tcp_vip).expect("TCP through DSR");
    let mut udp_sent = Vec::new();
    let mut tcp_sent = Vec::new();
    let mut later = Vec::new();
    for (round, colour) in ["green", "blue", "green", "blue"].iter().enumerate() {
        let udp_msgs: Vec<String> = (0..200).map(|i| format!("u{round}-{i} ")).collect();
        lab.log(lab.logger(udp_vip, "bgdsr"), &udp_msgs);
        let tcp_msgs: Vec<String> = (0..50).map(|i| format!("t{round}-{i} ")).collect();
        let framed: Vec<String> = tcp_msgs.iter().map(|t| format!("<13>bgdsr: {t}")).collect();
        stream.send(&framed).expect("the stream lives across flips");
        udp_sent.extend(udp_msgs);
        tcp_sent.extend(tcp_msgs);
        if round < 3 {
            agent.flip(colour);
            // A connection opened now goes to the colour just made active.
            let msg = format!("new{round}-on-{colour} ");
            lab.log(lab.logger_tcp(tcp_vip, "bgdsr"), std::slice::from_ref(&msg));
            later.push((msg, *colour));
        }
    }
    stream.close().expect("closed cleanly, not reset");
    let every: Vec<String> = udp_sent.iter().chain(&tcp_sent).cloned().collect();
    let arrived = wait_for(Duration::from_secs(10), || {
        let all: Vec<String> = blue.lines().into_iter().chain(green.lines()).collect();
        let got = occurrences(&all, &every);
        every.iter().all(|m| got[m] >= 1).then_some(())
    });
    assert!(arrived.is_some(), "not everything arrived");
    std::thread::sleep(Duration::from_millis(300));
    let (b, g) = (blue.lines(), green.lines());
    let all: Vec<String> = b.iter().chain(&g).cloned().collect();
    let got = occurrences(&all, &udp_sent);
    let lost: Vec<_> = udp_sent.iter().filter(|m| got[*m] != 1).collect();
    assert!(
        lost.is_empty(),
        "UDP lost or doubled: {} of {}",
        lost.len(),
        udp_sent.len()
    );
    let on_blue = occurrences(&b, &tcp_sent);
    assert!(
        tcp_sent.iter().all(|m| on_blue[m] == 1),
        "the first connection stays on blue, every message once"
    );
    for (msg, colour) in &later {
        let lines = if *colour == "blue" { &b } else { &g };
        assert_eq!(
            occurrences(lines, std::slice::from_ref(msg))[msg],
            1,
            "{msg}"
        );
    }
    // The collectors see the sender's own address (blue: round 0 and the
    // stream; green: round 1's datagrams).
    for (colour, marks, least) in [
        ("blue", [" u0-", " t0-"], 250),
        ("green", [" u1-", " u1-"], 200),
    ] {
        let from = std::fs::read_to_string(lab.path(&format!("{colour}-from.log"))).unwrap();
        let ours: Vec<&str> = from
            .lines()
            .filter(|l| marks.iter().any(|m| l.contains(m)))
            .collect();
        assert!(ours.len() >= least, "{colour}: {from}");
        let client = format!("{} ", net.client);
        assert!(
            ours.iter().all(|l| l.starts_with(&client)),
            "{colour}: {from}"
        );
    }
    t.assert_replies_bypassed_the_steering_node();
    let status = agent.status();
    let counter = |name: &str| status["counters"][name].as_u64().unwrap();
    assert!(counter("dsr_l2") > 400, "{status}");
    if green_ipip {
        assert!(counter("dsr_ipip") > 400, "{status}");
    }
}

/// The same topology in NAT mode: the backend's SYN-ACK comes from its own
/// address through the router, and the client never completes a handshake
/// with the service address.
#[test]
fn nat_cannot_serve_backends_routed_elsewhere() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).unwrap();
    let router = add_router(&lab);
    for colour in ["blue", "green"] {
        // Loose, so that what fails is the reply path, not the filter.
        lab.backend_ns(colour)
            .run("sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=2"])
            .unwrap();
    }
    count_from(&router, "198.18.1.2", CLIENT);
    let file = lab.path("nat.toml");
    std::fs::write(&file, config("")).unwrap();
    let _blue = rsyslog(&lab, "blue");
    let _green = rsyslog(&lab, "green");
    let agent = Agent::start(&lab, &file).unwrap();
    agent.wait_healthy(&["blue", "green"], Duration::from_secs(15));
    let tcp_vip: SocketAddr = format!("{VIP}:601").parse().unwrap();
    assert!(
        TcpClient::connect(&lab.client, tcp_vip).is_err(),
        "a TCP handshake through NAT with replies routed elsewhere"
    );
    // Blue answered, from its own address, by the router.
    assert!(counted(&router) > 0, "no SYN-ACK from blue at the router");
    let config = std::fs::read_to_string(&file).unwrap();
    assert!(!config.contains("mode"), "NAT, the default");
}

/// The classic DSR mistake: green lacks the service address. Its own
/// probes pass (rsyslog answers on green's address), but the probe through
/// the service address does not, so green shows as down and a flip onto it
/// is refused, until the address is there.
#[test]
fn a_backend_without_the_service_address_is_down_and_a_flip_onto_it_is_refused() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).unwrap();
    let _router = add_router(&lab);
    let file = lab.path("dsr.toml");
    std::fs::write(&file, config("mode = \"dsr-l2\"")).unwrap();
    set_up_backend(&lab, &file, "blue");
    set_up_backend_but(&lab, &file, "green", &["dev lo"]);
    let _blue = rsyslog(&lab, "blue");
    let _green = rsyslog(&lab, "green");
    let agent = Agent::start(&lab, &file).unwrap();
    agent.wait_healthy(&["blue"], Duration::from_secs(15));
    let down = wait_for(Duration::from_secs(10), || {
        let problems = agent.status()["health_problems"]["green"].to_string();
        problems.contains("service address").then_some(problems)
    });
    assert!(down.is_some(), "green not down: {}", agent.status());
    let out = agent.ctl(&["flip", "green"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("198.18.10.10"), "{stderr}");
    assert_eq!(agent.status()["active"], "blue");

    lab.backend_ns("green")
        .run("ip", &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])
        .unwrap();
    agent.flip("green");
    assert_eq!(agent.status()["active"], "green");
}

/// A deployment onto a DSR colour: the gate's synthetic load goes straight
/// to green's own address on the agent's connection (its acknowledgements
/// never cross the data path in DSR either), then the switch and the bake;
/// a new connection through the service address then lands on green.
#[test]
fn a_deploy_onto_a_dsr_colour_validates_switches_and_bakes() {
    if !privileged() {
        return;
    }
    let t = DsrLab::with("mode = \"dsr-l2\"", &[], &deploy_settings());
    let (lab, agent, green) = (&t.lab, &t.agent, &t.green);
    // --force: the UDP service's only probe is `udp` (silence).
    let out = agent.ctl(&["deploy", "green", "--force", "--wait"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status()["active"], "green");
    let tcp_vip: SocketAddr = format!("{VIP}:601").parse().unwrap();
    let msg = "after-deploy ".to_owned();
    lab.log(lab.logger_tcp(tcp_vip, "bgdsr"), std::slice::from_ref(&msg));
    let landed = wait_for(Duration::from_secs(5), || {
        (occurrences(&green.lines(), std::slice::from_ref(&msg))[&msg] == 1).then_some(())
    });
    assert!(landed.is_some(), "not on green: {:?}", green.lines());
}

/// Canary weights and drain on DSR colours, blue by MAC and green through
/// the tunnel. At 50 % each of 40 UDP senders (own addresses) stays on the
/// colour the documented hash gives its address, and a TCP stream opened
/// before the shift stays on blue. Once green is active, `bgctl drain
/// blue` waits for that stream (the steering node sees only the client's
/// side of it) and ends when the client closes it.
#[test]
fn shift_and_drain_work_on_dsr_colours() {
    if !privileged() {
        return;
    }
    let t = DsrLab::new(
        "mode_blue = \"dsr-l2\"\nmode_green = \"dsr-ipip\"\ntunnel_source = \"198.18.2.1\"",
        &["green"],
    );
    let (lab, agent) = (&t.lab, &t.agent);
    let tcp_vip: SocketAddr = format!("{VIP}:601").parse().unwrap();
    let udp_vip: SocketAddr = format!("{VIP}:514").parse().unwrap();
    let mut stream = TcpClient::connect(&lab.client, tcp_vip).expect("TCP through DSR");
    let mut on_stream = vec!["before-shift ".to_owned()];
    stream
        .send(&[format!("<13>bgdsr: {}", on_stream[0])])
        .unwrap();

    let out = lab
        .client
        .run(
            "sh",
            &[
                "-c",
                "for i in $(seq 20 59); do ip addr add 198.18.0.$i/32 dev c0 || exit 1; done",
            ],
        )
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let senders: Vec<(IpAddr, UdpSocket)> = lab
        .client
        .enter(move || {
            (20..60)
                .map(|i| {
                    let ip: IpAddr = format!("198.18.0.{i}").parse().unwrap();
                    let s = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
                    s.connect(udp_vip).unwrap();
                    (ip, s)
                })
                .collect()
        })
        .unwrap();

    let out = agent.ctl(&["shift", "green", "50%"]);
    assert!(out.status.success(), "{out:?}");
    let status = agent.status();
    assert_eq!(status["split"], 5000, "{status}");
    let seed = status["split_seed"].as_u64().unwrap() as u32;
    let word = Steering::split(Colour::Blue, Weight::new(5000).unwrap()).word();
    let mut expected: Vec<(String, Colour)> = Vec::new();
    for round in 0..5 {
        for (i, (ip, s)) in senders.iter().enumerate() {
            let token = format!("s{i}x{round} ");
            s.send(format!("<13>bgdsr: {token}").as_bytes()).unwrap();
            let (addr, _) = addr_words(*ip);
            let colour = Colour::from_index(bg_common::split::colour(word, seed, &addr));
            expected.push((token, colour));
        }
        let token = format!("during-shift-{round} ");
        stream.send(&[format!("<13>bgdsr: {token}")]).unwrap();
        on_stream.push(token);
    }
    let tokens: Vec<String> = expected.iter().map(|(t, _)| t.clone()).collect();
    let arrived = wait_for(Duration::from_secs(10), || {
        let all: Vec<String> = t.blue.lines().into_iter().chain(t.green.lines()).collect();
        let got = occurrences(&all, &tokens);
        tokens.iter().all(|m| got[m] >= 1).then_some(())
    });
    assert!(arrived.is_some(), "not every sender's datagrams arrived");
    let (b, g) = (t.blue.lines(), t.green.lines());
    let (on_blue, on_green) = (occurrences(&b, &tokens), occurrences(&g, &tokens));
    for (token, colour) in &expected {
        let (want, other) = match colour {
            Colour::Blue => (on_blue[token], on_green[token]),
            Colour::Green => (on_green[token], on_blue[token]),
        };
        assert_eq!((want, other), (1, 0), "{token} belongs on {colour}");
    }
    let greens = expected.iter().filter(|(_, c)| *c == Colour::Green).count();
    assert!(
        greens > 0 && greens < expected.len(),
        "50 % sent every sender one way ({greens} of {} green)",
        expected.len()
    );

    agent.flip("green");
    let out = agent.ctl(&["drain", "blue", "--timeout", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("draining blue: 1 live connection(s)"),
        "{stdout}"
    );
    on_stream.push("after-flip ".to_owned());
    stream.send(&["<13>bgdsr: after-flip ".to_owned()]).unwrap();
    stream.close().expect("closed cleanly, not reset");
    let out = agent.ctl(&["drain", "blue", "--timeout", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("blue is drained"), "{stdout}");
    let stayed = wait_for(Duration::from_secs(5), || {
        let got = occurrences(&t.blue.lines(), &on_stream);
        on_stream.iter().all(|m| got[m] == 1).then_some(())
    });
    assert!(
        stayed.is_some(),
        "the stream's messages, once each on blue: {:?}",
        t.blue.lines()
    );
    assert_eq!(
        occurrences(&t.green.lines(), &on_stream)
            .values()
            .sum::<usize>(),
        0
    );
    t.assert_replies_bypassed_the_steering_node();
}

/// Shadow copies while a DSR colour serves (blue by MAC): XDP hands each
/// datagram to the kernel untouched, TC copies it to green and sends the
/// original on to blue as XDP would have. Every datagram reaches blue once
/// with the client's address, and green gets each one's copy.
#[test]
fn a_shadow_copies_what_a_dsr_l2_colour_serves() {
    shadow_from_dsr("mode = \"dsr-l2\"", &[], "dsr_l2");
}

/// The same with blue through the tunnel: TC adds the outer header.
#[test]
fn a_shadow_copies_what_a_dsr_ipip_colour_serves() {
    shadow_from_dsr(
        "mode_blue = \"dsr-ipip\"\nmode_green = \"dsr-l2\"\ntunnel_source = \"198.18.1.1\"",
        &["blue"],
        "dsr_ipip",
    );
}

fn shadow_from_dsr(modes: &str, decap: &[&str], counter: &str) {
    if !privileged() {
        return;
    }
    let t = DsrLab::with(modes, decap, &(deploy_settings() + "shadow_s = 3\n"));
    let (lab, agent) = (&t.lab, &t.agent);
    let before = agent.status()["counters"][counter].as_u64().unwrap();
    let out = agent.ctl(&["deploy", "green", "--force"]);
    assert!(out.status.success(), "{out:?}");
    agent.wait_phase("shadow", Duration::from_secs(30));
    let udp_vip: SocketAddr = format!("{VIP}:514").parse().unwrap();
    let msgs: Vec<String> = (0..200).map(|i| format!("sh{i} ")).collect();
    lab.log(lab.logger(udp_vip, "bgdsr"), &msgs);
    let status = agent.status();
    assert_eq!(status["active"], "blue", "sent during the shadow: {status}");
    let arrived = wait_for(Duration::from_secs(10), || {
        let (b, g) = (
            occurrences(&t.blue.lines(), &msgs),
            occurrences(&t.green.lines(), &msgs),
        );
        msgs.iter().all(|m| b[m] >= 1 && g[m] >= 1).then_some(())
    });
    let (b, g) = (
        occurrences(&t.blue.lines(), &msgs),
        occurrences(&t.green.lines(), &msgs),
    );
    assert!(
        arrived.is_some(),
        "blue got {} of 200, green's copies {} of 200; {}",
        b.values().filter(|&&n| n > 0).count(),
        g.values().filter(|&&n| n > 0).count(),
        agent.status()["counters"]
    );
    assert!(msgs.iter().all(|m| b[m] == 1), "blue: each datagram once");
    assert!(msgs.iter().all(|m| g[m] == 1), "green: each copy once");
    // Blue sees the client; green's copies come from the steering node.
    for (colour, from) in [("blue", "198.18.0.2 "), ("green", "198.18.2.1 ")] {
        let log = std::fs::read_to_string(lab.path(&format!("{colour}-from.log"))).unwrap();
        let ours: Vec<&str> = log.lines().filter(|l| l.contains(" sh")).collect();
        assert!(ours.len() >= 200, "{colour}: {log}");
        assert!(ours.iter().all(|l| l.starts_with(from)), "{colour}: {log}");
    }
    let status = agent.status();
    let count = |name: &str| status["counters"][name].as_u64().unwrap();
    assert!(count(counter) - before >= 200, "{status}");
    assert_eq!(count("dsr_unsupported"), 0, "{status}");
    // The deployment goes on past its shadow to green.
    let done = wait_for(Duration::from_secs(30), || {
        (agent.status()["active"] == "green").then_some(())
    });
    assert!(done.is_some(), "{}", agent.deploy_status());
}
