//! Where the steering program runs (`[dataplane] attach`): TC where native
//! XDP is unavailable, and moving between XDP and TC by an agent restart
//! without losing a message.
use std::time::Duration;

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
