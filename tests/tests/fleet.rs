//! Fleet mode against a real three-member etcd (Debian's 3.4): three
//! agents, each steering its own lab, follow one desired state. A fleet
//! flip moves every node and loses nothing; two racing flips cannot both
//! win; etcd losing a member changes nothing, losing its quorum refuses
//! flips while every data path keeps steering; a node cut off etcd keeps
//! its colour and catches up when healed; config drift blocks flips.
use std::{process::Output, time::Duration};

use bg_tests::{
    agent::Agent,
    etcd::{EtcdCluster, EtcdLink, fleet_node, fleet_node_serving},
    fixtures::quick_deploy,
    http,
    lab::{Backends, Family, Lab, service_addr, service_addr_for},
    privileged,
    traffic::{Sink, TcpClient, TcpSink, sender},
    wait_for,
};

/// One steering node: its lab, its link to etcd, its agent and its two
/// backends. Fields drop in order: the agent stops before the lab goes.
struct Node {
    agent: Agent,
    sinks: Option<(Sink, Sink)>,
    /// TCP 601's blue and green, on nodes that steer it too.
    tcp: Option<(TcpSink, TcpSink)>,
    link: EtcdLink,
    lab: Lab,
}

impl Node {
    /// Node `k` of `cluster`; `extra` is appended to its config.
    fn start(cluster: &EtcdCluster, k: usize, extra: &str) -> Self {
        let (lab, link, agent) = fleet_node(cluster, k, extra).expect("fleet node");
        let sinks = Some((
            Sink::start(&lab.lb, lab.backend("blue", Family::V4)).expect("sink"),
            Sink::start(&lab.lb, lab.backend("green", Family::V4)).expect("sink"),
        ));
        Self {
            agent,
            sinks,
            tcp: None,
            link,
            lab,
        }
    }

    /// `start`, steering TCP 601 besides UDP 514.
    fn start_with_tcp(cluster: &EtcdCluster, k: usize) -> Self {
        let (lab, link, agent) =
            fleet_node_serving(cluster, k, &[("udp", 514), ("tcp", 601)], "").expect("fleet node");
        let udp = |c: &str| Sink::start(&lab.lb, lab.backend(c, Family::V4)).expect("sink");
        let tcp = |c: &str| {
            TcpSink::start(&lab.lb, lab.backend_for(c, Family::V4, 601)).expect("tcp sink")
        };
        Self {
            sinks: Some((udp("blue"), udp("green"))),
            tcp: Some((tcp("blue"), tcp("green"))),
            agent,
            link,
            lab,
        }
    }

    fn connect(&self) -> TcpClient {
        TcpClient::connect(&self.lab.client, service_addr_for(Family::V4, 601))
            .expect("connect through the service")
    }

    /// Each TCP connection's messages on blue and on green; the sinks stop.
    fn tcp_received(&mut self) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
        let (b, g) = self.tcp.take().expect("tcp sinks");
        (b.finish(), g.finish())
    }

    fn send(&self, tag: &str, n: usize) -> Vec<String> {
        let socket = sender(&self.lab.client, service_addr(Family::V4)).expect("sender");
        let msgs: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
        for m in &msgs {
            socket.send(m.as_bytes()).expect("send");
        }
        std::thread::sleep(Duration::from_millis(300));
        msgs
    }

    /// What blue and green received, in order, without the probes' empty
    /// datagrams; the sinks stop.
    fn received(&mut self) -> (Vec<String>, Vec<String>) {
        let (b, g) = self.sinks.take().expect("sinks");
        let messages =
            |s: Sink| -> Vec<String> { s.finish().into_iter().filter(|m| !m.is_empty()).collect() };
        (messages(b), messages(g))
    }

    fn fleet(&self) -> serde_json::Value {
        let out = self.agent.ctl(&["--json", "fleet", "status"]);
        assert!(out.status.success(), "fleet status: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("fleet status JSON")
    }

    fn active(&self) -> String {
        self.agent.status()["active"].as_str().unwrap().to_owned()
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until `node` sees `n` live nodes, each healthy on both colours.
fn wait_fleet(node: &Node, n: usize) {
    let ready = wait_for(Duration::from_secs(30), || {
        let f = node.fleet();
        let nodes = f["nodes"].as_array()?;
        (f["connected"] == true
            && nodes.len() == n
            && nodes.iter().all(|x| {
                ["blue", "green"].iter().all(|c| {
                    x["health_problems"][c]
                        .as_array()
                        .is_some_and(|p| p.is_empty())
                })
            }))
        .then_some(())
    });
    assert!(
        ready.is_some(),
        "the fleet never showed {n} healthy nodes: {}",
        node.fleet()
    );
}

/// `wait_fleet` on the first of `nodes`, with every node's agent log in
/// the failure: a node missing from the view says why in its own log.
fn wait_fleet_logged(nodes: &[Node]) {
    let first = &nodes[0];
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_fleet(first, nodes.len())
    }))
    .is_err()
    {
        for (k, n) in nodes.iter().enumerate() {
            let log = n.agent.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- node {k}'s agent log (last 40 lines, newest first) ---\n{}",
                tail.join("\n")
            );
        }
        panic!(
            "the fleet never showed {} healthy nodes (logs above)",
            nodes.len()
        );
    }
}

/// `agent`'s fleet status once it says it is not connected, and why;
/// None if it never does within 15 s.
fn turned_away(agent: &Agent) -> Option<serde_json::Value> {
    wait_for(Duration::from_secs(15), || {
        let out = agent.ctl(&["--json", "fleet", "status"]);
        let f: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (f["connected"] == false && f["error"].as_str().is_some_and(|e| !e.is_empty())).then_some(f)
    })
}

/// The live nodes `node` sees, by name.
fn members(node: &Node) -> Vec<String> {
    node.fleet()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_owned())
        .collect()
}

fn generation(cluster: &EtcdCluster) -> u64 {
    cluster
        .get("/bluegreen/test/desired")
        .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
        .and_then(|v| v["generation"].as_u64())
        .unwrap_or(0)
}

/// A fleet flip moves every node: `bgctl flip` reports each node's apply
/// and exits 0; every UDP message sent before went to blue and every one
/// after to green, on every node, none lost; a TCP connection opened
/// before stays on blue through the flip, one opened after goes to green,
/// neither loses a message. Two racing flips: exactly one writes (the
/// generation rises by one), the other is told why.
#[test]
fn a_fleet_flip_moves_every_node_and_one_of_two_racing_flips_wins() {
    if !privileged() {
        return;
    }
    let cluster = EtcdCluster::start(3).expect("etcd");
    let mut nodes: Vec<Node> = (0..3).map(|k| Node::start_with_tcp(&cluster, k)).collect();
    wait_fleet(&nodes[0], 3);
    let tcp_msgs = |k: usize, tag: &str| -> Vec<String> {
        (0..50).map(|i| format!("node{k} {tag} {i}")).collect()
    };
    let mut early: Vec<TcpClient> = nodes.iter().map(Node::connect).collect();
    for (k, c) in early.iter_mut().enumerate() {
        c.send(&tcp_msgs(k, "early-before"))
            .expect("send before the flip");
    }
    let before: Vec<Vec<String>> = nodes.iter().map(|n| n.send("before", 100)).collect();
    let out = nodes[1].agent.ctl(&["flip", "green"]);
    assert!(out.status.success(), "fleet flip: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("every node applied it within"), "{said}");
    for k in 0..3 {
        assert!(
            said.contains(&format!("node{k}")),
            "node{k} is reported: {said}"
        );
    }
    for n in &nodes {
        assert_eq!(n.active(), "green", "every data path steers to green");
    }
    let after: Vec<Vec<String>> = nodes.iter().map(|n| n.send("after", 100)).collect();
    for (k, (mut c, n)) in early.into_iter().zip(&nodes).enumerate() {
        c.send(&tcp_msgs(k, "early-after"))
            .expect("the early connection survives the flip, not reset");
        let mut late = n.connect();
        late.send(&tcp_msgs(k, "late"))
            .expect("send after the flip");
        c.close().expect("a clean close");
        late.close().expect("a clean close");
    }
    std::thread::sleep(Duration::from_millis(300));
    for (k, n) in nodes.iter_mut().enumerate() {
        let (tcp_blue, tcp_green) = n.tcp_received();
        let early_all: Vec<String> = tcp_msgs(k, "early-before")
            .into_iter()
            .chain(tcp_msgs(k, "early-after"))
            .collect();
        assert_eq!(
            tcp_blue,
            [early_all],
            "node{k}: the connection opened before the flip kept blue, every message"
        );
        assert_eq!(
            tcp_green,
            [tcp_msgs(k, "late")],
            "node{k}: the connection opened after went to green"
        );
        let (blue, green) = n.received();
        assert_eq!(
            blue, before[k],
            "node{k}: every earlier message on blue, once, in order"
        );
        assert_eq!(
            green, after[k],
            "node{k}: every later message on green, once, in order"
        );
    }
    assert_eq!(generation(&cluster), 1);

    // Race: two operators flip at once, on two nodes.
    let (a, b) = (&nodes[0].agent, &nodes[2].agent);
    let (ra, rb) = std::thread::scope(|s| {
        // Forced: the sinks just stopped, and what is tested is the
        // compare-and-swap, not the backends' health.
        let ta = s.spawn(|| a.ctl(&["flip", "--force", "blue"]));
        let tb = s.spawn(|| b.ctl(&["flip", "--force", "blue"]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert_eq!(generation(&cluster), 2, "exactly one flip was written");
    let outcomes = [text(&ra), text(&rb)];
    let won = outcomes
        .iter()
        .filter(|o| o.contains("fleet generation 2 written"))
        .count();
    assert_eq!(won, 1, "one flip wins: {outcomes:?}");
    let lost = outcomes
        .iter()
        .find(|o| !o.contains("fleet generation 2 written"))
        .unwrap();
    assert!(
        lost.contains("another flip changed the fleet's desired state first")
            || lost.contains("already active; nothing changed"),
        "the other is told why: {lost}"
    );
    for n in &nodes {
        assert_eq!(n.active(), "blue");
    }

    // A clean stop leaves the fleet at once (its lease revoked), not after
    // lease_ttl_s (10 s here).
    assert!(nodes[2].agent.terminate(), "the agent stops on SIGTERM");
    let left = wait_for(Duration::from_secs(5), || {
        (nodes[0].fleet()["nodes"].as_array()?.len() == 2).then_some(())
    });
    assert!(left.is_some(), "node2 left the fleet: {}", nodes[0].fleet());
}

/// One etcd member down: flips work. Two down (no quorum): a flip is
/// refused with a clear error and exit code, and every data path keeps
/// steering to its colour.
#[test]
fn losing_an_etcd_member_changes_nothing_losing_quorum_refuses_flips() {
    if !privileged() {
        return;
    }
    let mut cluster = EtcdCluster::start(3).expect("etcd");
    let mut nodes: Vec<Node> = (0..2).map(|k| Node::start(&cluster, k, "")).collect();
    wait_fleet(&nodes[0], 2);
    cluster.kill(2);
    // The two left elect a leader (if the dead one led) within a second.
    cluster
        .wait_healthy(Duration::from_secs(10))
        .expect("two members keep a quorum");
    let out = nodes[0].agent.ctl(&["flip", "green"]);
    assert!(
        out.status.success(),
        "flip with 2 of 3 members: {}",
        text(&out)
    );
    assert!(nodes.iter().all(|n| n.active() == "green"));
    cluster.kill(1);
    let out = nodes[0].agent.ctl(&["flip", "blue"]);
    assert_eq!(out.status.code(), Some(1), "refused: {}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("cannot change while etcd has no quorum or cannot be reached"),
        "{said}"
    );
    for (k, n) in nodes.iter_mut().enumerate() {
        assert_eq!(n.active(), "green", "node{k} keeps steering");
        let sent = n.send("no-quorum", 50);
        let (blue, green) = n.received();
        assert!(blue.is_empty(), "node{k}: nothing on blue");
        assert_eq!(green, sent, "node{k}: the data path steers without etcd");
        // It learns of the lost quorum when its next request or its watch
        // fails: within seconds, not at once.
        let stale = wait_for(Duration::from_secs(10), || {
            (n.fleet()["stale"] == true).then_some(())
        });
        assert!(stale.is_some(), "node{k} says it is stale: {}", n.fleet());
    }
}

/// A node cut off etcd keeps steering on its colour, also across an agent
/// restart. A flip meanwhile moves the others, names the missing node and
/// exits non-zero; once healed the node applies the latest generation.
#[test]
fn a_partitioned_node_keeps_its_colour_and_catches_up_when_healed() {
    if !privileged() {
        return;
    }
    let cluster = EtcdCluster::start(3).expect("etcd");
    let mut nodes: Vec<Node> = (0..3).map(|k| Node::start(&cluster, k, "")).collect();
    wait_fleet(&nodes[0], 3);
    nodes[2].link.cut().expect("cut");
    let out = nodes[0].agent.ctl(&["flip", "green"]);
    let said = text(&out);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a node did not converge: {said}"
    );
    assert!(said.contains("NOT applied by node2"), "{said}");
    assert!(
        said.contains("node0") && said.contains("node1") && said.contains("applied after"),
        "the others converged: {said}"
    );
    assert_eq!(nodes[0].active(), "green");
    assert_eq!(nodes[1].active(), "green");
    let cut_off = nodes[2].send("partitioned", 50);
    let stale = wait_for(Duration::from_secs(10), || {
        (nodes[2].fleet()["stale"] == true).then_some(())
    });
    assert!(
        stale.is_some(),
        "the cut node says it is stale: {}",
        nodes[2].fleet()
    );
    let metrics = http::get(&nodes[2].lab.lb, "/metrics")
        .expect("metrics")
        .body;
    assert!(metrics.contains("bluegreen_fleet_stale 1"), "{metrics}");
    assert!(metrics.contains("bluegreen_fleet_connected 0"), "{metrics}");
    // A fleet node exports every metric the shipped rules and dashboard
    // query, the fleet's included.
    let parsed = prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses");
    let missing = bg_tests::observability::missing_from(&parsed, |_| false);
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    // A restart while cut off keeps the colour applied last.
    nodes[2]
        .agent
        .restart()
        .expect("restart during the partition");
    assert_eq!(
        nodes[2].active(),
        "blue",
        "the restarted node keeps its colour"
    );
    nodes[2].link.heal().expect("heal");
    let caught_up = wait_for(Duration::from_secs(20), || {
        (nodes[2].active() == "green").then_some(())
    });
    assert!(
        caught_up.is_some(),
        "healed node converges: {}",
        nodes[2].fleet()
    );
    assert_eq!(nodes[2].fleet()["applied_generation"], 1);
    let healed = nodes[2].send("healed", 50);
    let (blue, green) = nodes[2].received();
    assert_eq!(blue, cut_off, "while cut off, node2 kept steering to blue");
    assert_eq!(green, healed, "once healed, node2 steers to green");
}

/// A node whose config differs is flagged in `fleet status` and blocks an
/// unforced flip; `--force` goes through.
#[test]
fn config_drift_is_flagged_and_blocks_flips_unless_forced() {
    if !privileged() {
        return;
    }
    let cluster = EtcdCluster::start(1).expect("etcd");
    let nodes = [
        Node::start(&cluster, 0, ""),
        Node::start(&cluster, 1, "[tcp]\nidle_timeout = 60\n"),
    ];
    wait_fleet(&nodes[0], 2);
    let f = nodes[0].fleet();
    let drift: Vec<bool> = f["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["drift"] == true)
        .collect();
    assert_eq!(drift, [false, true], "node1 differs from node0: {f}");
    let out = nodes[0].agent.ctl(&["flip", "green"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("config drift: node1"), "{}", text(&out));
    assert!(nodes.iter().all(|n| n.active() == "blue"), "nothing moved");
    let out = nodes[0].agent.ctl(&["deploy", "green"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refusing to deploy: config drift: node1"),
        "{}",
        text(&out)
    );
    let out = nodes[0].agent.ctl(&["status"]);
    assert!(
        text(&out).contains("fleet test (node node0): connected")
            && text(&out).contains("CONFIG DRIFT on node1"),
        "status flags the drift: {}",
        text(&out)
    );
    let metrics = http::get(&nodes[0].lab.lb, "/metrics")
        .expect("metrics")
        .body;
    assert!(
        metrics.contains("bluegreen_fleet_drifted_nodes 1"),
        "{metrics}"
    );
    // Through the HTTP API, as the dashboard would: forced, it goes through.
    let token = String::from_utf8(nodes[0].agent.ctl(&["token"]).stdout).unwrap();
    let answer = http::post(
        &nodes[0].lab.lb,
        "/api/flip",
        Some(token.trim()),
        r#"{"colour":"green","force":true}"#,
    )
    .expect("POST /api/flip");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let nodes_applied = answer.json()["flip"]["fleet"]["nodes"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(nodes_applied, 2, "{}", answer.body);
    assert!(nodes.iter().all(|n| n.active() == "green"));
}

/// etcd on TLS with client certificates required: a node with the CA and
/// a client certificate joins and flips; a node with only the CA is turned
/// away by etcd, says so in `fleet status`, and keeps steering.
#[test]
fn etcd_over_tls_needs_the_client_certificate() {
    if !privileged() {
        return;
    }
    let cluster = EtcdCluster::start_tls(1).expect("etcd with TLS");
    let good = Node::start(&cluster, 0, "");
    // Only the CA: the TLS handshake completes, etcd refuses the client.
    let no_cert = cluster
        .fleet_section("node1")
        .lines()
        .filter(|l| !l.starts_with("cert =") && !l.starts_with("key ="))
        .collect::<Vec<_>>()
        .join("\n");
    let lab = Lab::new(Backends::Local).expect("lab");
    let _link = cluster.join(&lab.lb, 1).expect("link");
    let config = lab
        .write_test_config(&[("udp", 514)], Family::V4, &format!("{no_cert}\n"))
        .expect("config");
    let agent = Agent::start(&lab, &config).expect("agent");
    wait_fleet(&good, 1);
    let out = good.agent.ctl(&["flip", "--force", "green"]);
    assert!(out.status.success(), "flip over TLS: {}", text(&out));
    assert_eq!(good.active(), "green");
    let refused = turned_away(&agent).expect("the node without a certificate is not let in");
    let why = refused["error"].as_str().unwrap_or_default();
    println!("node1, without a client certificate: {why}");
    // The reason TLS gives varies (an alert, or a closed connection when
    // TLS 1.3 learns of the refusal only after its handshake): what holds
    // is that etcd never let node1 in.
    assert!(why.contains("no etcd member answers"), "{refused}");
    assert_eq!(members(&good), ["node0"], "node1 never published itself");
    assert_eq!(
        agent.status()["active"],
        "blue",
        "it keeps steering on its own colour"
    );
}

/// The fleet's deployment record, as etcd holds it.
fn deployment(cluster: &EtcdCluster) -> serde_json::Value {
    cluster
        .get("/bluegreen/test/deployment")
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default()
}

fn wait_deployment(cluster: &EtcdCluster, phase: &str, limit: Duration) -> serde_json::Value {
    wait_for(limit, || {
        let d = deployment(cluster);
        (d["phase"] == phase).then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "the deployment never reached {phase}: {}",
            deployment(cluster)
        )
    })
}

/// A fleet deployment is run by one agent and seen by all: a second one
/// is refused while it runs, and `bgctl abort` on another node reaches
/// it. Killed (kill -9) mid-bake, its agent's lease expires and another
/// agent takes it over; that one's bake watches every node, so green
/// failing on a third node rolls the whole fleet back.
#[test]
fn a_fleet_deployment_is_taken_over_when_its_agent_dies_mid_bake() {
    if !privileged() {
        return;
    }
    let cluster = EtcdCluster::start(3).expect("etcd");
    // The UDP probe's silence is all the evidence here: --force.
    let deploy = quick_deploy(10, 60, 200);
    let mut nodes: Vec<Node> = (0..3).map(|k| Node::start(&cluster, k, &deploy)).collect();
    wait_fleet(&nodes[0], 3);

    // One deployment at a time, seen from every node, aborted from any.
    let out = nodes[0]
        .agent
        .ctl(&["deploy", "green", "--force", "--version", "v1"]);
    assert!(out.status.success(), "deploy: {}", text(&out));
    let d = wait_deployment(&cluster, "bake", Duration::from_secs(30));
    assert_eq!(d["controller"], "node0", "{d}");
    for n in &nodes {
        assert_eq!(n.active(), "green", "the switch moved every node");
    }
    for k in [1, 2] {
        let seen = wait_for(Duration::from_secs(5), || {
            let out = nodes[k].agent.ctl(&["--json", "deploy", "--status"]);
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (d["phase"] == "bake" && d["controller"] == "node0").then_some(())
        });
        assert!(seen.is_some(), "node{k} shows node0's deployment");
    }
    let out = nodes[1].agent.ctl(&["deploy", "blue", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is still in phase Bake, run by node0"),
        "{}",
        text(&out)
    );
    let out = nodes[2].agent.ctl(&["abort"]);
    assert!(out.status.success(), "abort on node2: {}", text(&out));
    let d = wait_deployment(&cluster, "rolled-back", Duration::from_secs(15));
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("aborted by the operator"),
        "{d}"
    );
    for n in &nodes {
        assert_eq!(n.active(), "blue", "the rollback moved every node");
    }

    // The controller dies mid-bake; another agent takes over.
    let out = nodes[0]
        .agent
        .ctl(&["deploy", "green", "--force", "--version", "v2"]);
    assert!(out.status.success(), "deploy: {}", text(&out));
    wait_deployment(&cluster, "bake", Duration::from_secs(30));
    nodes[0].agent.kill9();
    // node0's lease (10 s) expires, then a follower tick wins the key.
    let taker = wait_for(Duration::from_secs(30), || {
        let holder = cluster.get("/bluegreen/test/controller")?;
        (holder != "node0").then_some(holder)
    })
    .unwrap_or_else(|| panic!("nobody took over: {}", deployment(&cluster)));
    let d = deployment(&cluster);
    assert_eq!(d["controller"], taker.as_str(), "{d}");
    assert_eq!(
        d["phase"], "bake",
        "the new controller resumed the bake: {d}"
    );
    assert_eq!(d["version"], "v2");
    // Green fails on the node that does not run the deployment: the
    // controller's bake sees it through that node's published health.
    let other = if taker == "node1" { 2 } else { 1 };
    let (_blue, _green) = nodes[other].received();
    let d = wait_deployment(&cluster, "rolled-back", Duration::from_secs(20));
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("green failed during bake") && reason.contains(&format!("node{other}: ")),
        "rolled back for node{other}'s green: {d}"
    );
    for k in [1, 2] {
        assert_eq!(nodes[k].active(), "blue", "node{k} rolled back");
    }
    let taker_k = if other == 1 { 2 } else { 1 };
    let out = nodes[taker_k]
        .agent
        .ctl(&["--json", "history", "--limit", "100"]);
    let events: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "deploy" && e["phase"] == "rolled-back"),
        "the taker's history records the end: {events:?}"
    );
}

/// A fleet deployment's new backend (`--backend`) travels in the desired
/// state: every node steers green to it, none to the old green, and the
/// record in etcd keeps it for nodes that join later.
#[test]
fn a_fleet_deployment_puts_its_backend_on_every_node() {
    if !privileged() {
        return;
    }
    let cluster = EtcdCluster::start(1).expect("etcd");
    let deploy = quick_deploy(10, 1, 200);
    let mut nodes: Vec<Node> = (0..2).map(|k| Node::start(&cluster, k, &deploy)).collect();
    let new_green: std::net::SocketAddr = "198.18.0.1:22514".parse().unwrap();
    let sinks: Vec<Sink> = nodes
        .iter()
        .map(|n| Sink::start(&n.lab.lb, new_green).expect("new green sink"))
        .collect();
    wait_fleet(&nodes[0], 2);
    let out = nodes[1].agent.ctl(&[
        "deploy",
        "green",
        "--force",
        "--backend",
        &format!("syslog-udp-514={new_green}"),
    ]);
    assert!(out.status.success(), "deploy: {}", text(&out));
    let d = wait_for(Duration::from_secs(30), || {
        let d = deployment(&cluster);
        (d["phase"] == "done").then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "not done: {}\nnode1's log:\n{}",
            deployment(&cluster),
            nodes[1].agent.log_text()
        )
    });
    assert_eq!(d["controller"], "node1", "{d}");
    let desired: serde_json::Value =
        serde_json::from_str(&cluster.get("/bluegreen/test/desired").unwrap()).unwrap();
    assert_eq!(desired["colour"], "green", "{desired}");
    assert_eq!(
        desired["backends"][0]["backend"],
        new_green.to_string(),
        "the backend is in the desired state: {desired}"
    );
    let sent: Vec<Vec<String>> = nodes.iter().map(|n| n.send("new-green", 100)).collect();
    for (k, (n, sink)) in nodes.iter_mut().zip(sinks).enumerate() {
        assert_eq!(n.active(), "green");
        let (_, old_green) = n.received();
        let got: Vec<String> = sink
            .finish()
            .into_iter()
            .filter(|m| m.starts_with("new-green"))
            .collect();
        assert_eq!(got, sent[k], "node{k}: every message on the new green");
        assert!(
            !old_green.iter().any(|m| m.starts_with("new-green")),
            "node{k}: nothing on the old green"
        );
    }
}

/// etcd with authentication on, the node's user allowed only the fleet's
/// prefix: a node with the user and its password file joins and flips;
/// one with a wrong password is turned away, says why, and keeps
/// steering.
#[test]
fn etcd_authentication_lets_in_the_configured_user_only() {
    if !privileged() {
        return;
    }
    let mut cluster = EtcdCluster::start(1).expect("etcd");
    let password = cluster
        .enable_auth("bluegreen", "s3cret-for-tests")
        .expect("etcd auth");
    let wrong = password.with_file_name("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let login =
        |file: &std::path::Path| format!("user = \"bluegreen\"\npassword_file = {file:?}\n");
    let good = Node::start(&cluster, 0, &login(&password));
    let bad = Node::start(&cluster, 1, &login(&wrong));
    wait_fleet(&good, 1);
    let out = good.agent.ctl(&["flip", "green"]);
    assert!(
        out.status.success(),
        "flip as the etcd user: {}",
        text(&out)
    );
    assert_eq!(good.active(), "green");
    let refused = turned_away(&bad.agent).expect("the node with the wrong password is not let in");
    let why = refused["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("authentication failed"),
        "it says why: {refused}"
    );
    assert_eq!(members(&good), ["node0"], "node1 never published itself");
    assert_eq!(bad.active(), "blue", "it keeps steering on its own colour");
}

/// A shift on one node splits every node's senders alike: the weight and
/// the hash's key travel in the desired state, so a sender lands on the
/// same colour whichever node steers it (each lab's client has the same
/// address). A flip ends the split everywhere.
#[test]
fn a_fleet_shift_splits_every_node_alike() {
    if !privileged() {
        return;
    }
    let cluster = EtcdCluster::start(1).expect("etcd");
    let mut nodes: Vec<Node> = (0..3).map(|k| Node::start(&cluster, k, "")).collect();
    wait_fleet_logged(&nodes);
    let seeds = |nodes: &[Node]| -> Vec<u64> {
        nodes
            .iter()
            .map(|n| n.agent.status()["split_seed"].as_u64().unwrap())
            .collect()
    };
    let own = seeds(&nodes);
    assert!(
        own[0] != own[1] && own[1] != own[2],
        "each agent made its own key: {own:?}"
    );
    let out = nodes[1].agent.ctl(&["shift", "green", "50%"]);
    assert!(out.status.success(), "fleet shift: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("every node applied it within"), "{said}");
    assert_eq!(seeds(&nodes), vec![own[1]; 3], "node1's key is the fleet's");
    for n in &nodes {
        assert_eq!(n.agent.status()["split"], 5000);
    }
    // The client's one address, by the documented hash, on every node.
    let word = bluegreen::model::Steering::split(
        bluegreen::model::Colour::Blue,
        bluegreen::model::Weight::new(5000).unwrap(),
    )
    .word();
    let (addr, _) = bluegreen::dataplane::addr_words("198.18.0.2".parse().unwrap());
    let colour = bg_common::split::colour(word, own[1] as u32, &addr);
    let sent: Vec<Vec<String>> = nodes.iter().map(|n| n.send("split", 20)).collect();
    for (k, n) in nodes.iter_mut().enumerate() {
        let (blue, green) = n.received();
        let (on, off) = if colour == 1 {
            (green, blue)
        } else {
            (blue, green)
        };
        assert_eq!(
            on, sent[k],
            "node{k}: the sender on its colour, every message"
        );
        assert!(
            off.is_empty(),
            "node{k}: nothing on the other colour: {off:?}"
        );
    }
    let out = nodes[0].agent.ctl(&["flip", "--force", "blue"]);
    assert!(out.status.success(), "fleet flip: {}", text(&out));
    for n in &nodes {
        let s = n.agent.status();
        assert_eq!(
            (s["active"].as_str(), s["split"].as_u64()),
            (Some("blue"), None),
            "{s}"
        );
    }
    assert_eq!(generation(&cluster), 2);
}
