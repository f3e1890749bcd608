//! Where the steering program runs (`[dataplane] attach`): TC where native
//! XDP is unavailable, and moving between XDP and TC by an agent restart
//! without losing a message, and sharing tcx with the programs after ours.
use std::time::Duration;

use aya::{maps::PerCpuArray, programs::TcAttachType};
use bg_tests::{
    agent::{Agent, lab_with_agent},
    lab::{Backends, Family, Lab, service_addr},
    privileged,
    prog::PassXdp,
    traffic::{Sink, occurrences, send_paced, sender},
};

fn tokens(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i} ")).collect()
}

fn xdp_on(lab: &Lab) -> bool {
    let out = lab.lb.run("ip", &["link", "show", &lab.lb_if]).unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// `attach = "auto"` takes native XDP where it can; where it cannot (here
/// another XDP program holds the interface), it steers on TC ingress, not
/// in generic XDP.
#[test]
fn auto_steers_on_tc_where_native_xdp_is_unavailable() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Local).expect("lab");
    let config = lab
        .write_test_config(
            &[("udp", 514)],
            Family::V4,
            "[dataplane]\nattach = \"auto\"\n",
        )
        .expect("config");
    let _other = PassXdp::attach(&lab.lb, &lab.lb_if).expect("another XDP program");
    let agent = Agent::start(&lab, &config).expect("agent");
    assert_eq!(agent.status()["xdp_mode"], "tc", "{}", agent.log_text());
    assert!(agent.log_text().contains("native XDP unavailable"));
    let blue = Sink::start(&lab.lb, lab.backend("blue", Family::V4)).unwrap();
    let msgs = tokens("auto", 200);
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    send_paced(&socket, &msgs, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = occurrences(&blue.finish(), &msgs);
    assert!(msgs.iter().all(|m| got[m] == 1), "steered on TC");
    assert!(agent.status()["counters"]["tc_to_kernel"].as_u64().unwrap() >= 200);

    // Where native XDP is free, auto takes it.
    let (_lab, _, agent) = lab_with_agent(
        Backends::Local,
        &[("udp", 514)],
        Family::V4,
        "[dataplane]\nattach = \"auto\"\n",
    );
    assert_eq!(agent.status()["xdp_mode"], "driver");
}

/// A stream runs while the agent is restarted with attach = "tc", then
/// back with "xdp": the new program is in place before the old link goes,
/// so every message arrives exactly once, and only one program steers.
#[test]
fn moving_between_xdp_and_tc_by_restart_loses_nothing() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let write = |attach: &str| {
        lab.write_test_config(
            &[("udp", 514)],
            Family::V4,
            &format!("[dataplane]\nattach = \"{attach}\"\n"),
        )
        .expect("config")
    };
    let config = write("xdp");
    let mut agent = Agent::start(&lab, &config).expect("agent");
    let blue = Sink::start(lab.blue.as_ref().unwrap(), lab.backend("blue", Family::V4)).unwrap();
    assert!(xdp_on(&lab));
    let msgs = tokens("move", 3000);
    let copy = msgs.clone();
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    let stream = std::thread::spawn(move || send_paced(&socket, &copy, 1000));
    let pins = lab.pin_root.join(&lab.lb_if);
    std::thread::sleep(Duration::from_millis(700));
    write("tc");
    agent.restart().expect("restart on TC");
    assert_eq!(agent.status()["xdp_mode"], "tc");
    assert!(!xdp_on(&lab), "the XDP link is gone");
    assert!(pins.join("steer_tc_link").exists() && !pins.join("link").exists());
    // TC steering copies shadow traffic inline: no separate copier.
    assert!(!pins.join("shadow_tc_link").exists());
    std::thread::sleep(Duration::from_millis(700));
    write("xdp");
    agent.restart().expect("restart on XDP");
    assert_eq!(agent.status()["xdp_mode"], "driver");
    assert!(xdp_on(&lab));
    assert!(pins.join("link").exists() && !pins.join("steer_tc_link").exists());
    assert!(
        pins.join("shadow_tc_link").exists(),
        "XDP steering's shadow copier"
    );
    stream.join().unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = occurrences(&blue.finish(), &msgs);
    let bad: Vec<_> = msgs.iter().filter(|m| got[*m] != 1).take(5).collect();
    assert!(bad.is_empty(), "not exactly once: {bad:?}");
    let c = &agent.status()["counters"];
    assert!(
        c["tc_to_kernel"].as_u64().unwrap() > 0,
        "TC steered a part: {c}"
    );
}

/// `bg_count_tc` (bench object) on `iface` in `ns`, tcx `direction`,
/// appended after whatever is attached there; detached on drop.
struct TcCounter {
    ebpf: aya::Ebpf,
}

impl TcCounter {
    fn attach(ns: &bg_tests::netns::NetNs, iface: &str, direction: TcAttachType) -> Self {
        let tc = bg_tests::prog::BenchTc::attach(ns, iface, "bg_count_tc", direction)
            .expect("attach the counter");
        Self { ebpf: tc.ebpf }
    }

    fn seen(&self) -> u64 {
        let seen: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("TC_SEEN").unwrap()).unwrap();
        seen.get(&0, 0).unwrap().iter().sum()
    }
}

/// bluegreen shares the interface's tcx chains: on ingress (steering) and
/// on egress (reverse NAT) it hands every packet on to the programs after
/// it, steered or not, as a firewall or another tool attached there needs.
#[test]
fn programs_after_ours_on_tc_see_every_packet() {
    if !privileged() {
        return;
    }
    let (lab, _, agent) = lab_with_agent(
        Backends::Namespaces,
        &[("udp", 514)],
        Family::V4,
        "[dataplane]\nattach = \"tc\"\n",
    );
    assert_eq!(agent.status()["xdp_mode"], "tc");
    let ingress = TcCounter::attach(&lab.lb, &lab.lb_if, TcAttachType::Ingress);
    let egress = TcCounter::attach(&lab.lb, &lab.lb_if, TcAttachType::Egress);
    let blue = Sink::start(lab.backend_ns("blue"), lab.backend("blue", Family::V4)).unwrap();
    // Steered packets: they reach blue, and the program after ours.
    let msgs = tokens("chained", 200);
    let socket = sender(&lab.client, service_addr(Family::V4)).unwrap();
    send_paced(&socket, &msgs, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = occurrences(&blue.finish(), &msgs);
    assert!(msgs.iter().all(|m| got[m] == 1), "steered to blue");
    let steered = ingress.seen();
    assert!(
        steered >= 200,
        "the next ingress program saw {steered} of 200"
    );
    // Packets for no service, both ways: in to a port nothing steers, and
    // out from the steering node, past `bg_unnat`.
    // Nothing listens on port 9: a fresh socket for each datagram, as a
    // connected one fails once the port-unreachable comes back.
    let mut to_nobody = service_addr(Family::V4);
    to_nobody.set_port(9);
    let client: std::net::SocketAddr = "198.18.0.2:9".parse().unwrap();
    for _ in 0..5 {
        sender(&lab.client, to_nobody).unwrap().send(b"x").unwrap();
        sender(&lab.lb, client).unwrap().send(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let seen = ingress.seen();
    assert!(seen >= steered + 5, "unsteered in: {seen} after {steered}");
    assert!(egress.seen() >= 5, "out: {}", egress.seen());
}
