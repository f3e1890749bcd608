//! Progressive shift end to end (issue 14): a real agent splitting real
//! UDP senders (200 source addresses in the client namespace) between
//! real rsyslog backends; stepped deployments that roll back, abort or
//! are promoted.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bg_tests::{
    agent::{Agent, lab_with_agent},
    lab::{Backends, Family, Lab, service_addr},
    privileged,
    rsyslog::Rsyslog,
    wait_for,
};
use bluegreen::{
    dataplane::addr_words,
    model::{Colour, Steering, Weight},
};
use serde_json::Value;

const SENDERS: u32 = 200;
// A generous healthy timeout: on a loaded CI host the first probes of a
// fresh lab can take seconds, which is not what these tests are about.
const FAST: &str = "[deploy]\nhealthy_timeout_s = 30\nbake_s = 1\nkeep_warm_s = 0\nvalidate_messages = 200\nvalidate_rate = 5000\n";

/// 200 UDP senders, each on its own address of the client namespace.
struct Senders {
    sockets: Vec<(IpAddr, UdpSocket)>,
}

impl Senders {
    fn new(lab: &Lab) -> Self {
        let script = format!(
            "for i in $(seq 10 {}); do ip addr add 198.18.0.$i/32 dev c0 || exit 1; done",
            9 + SENDERS
        );
        let out = lab.client.run("sh", &["-c", &script]).expect("addresses");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let to = service_addr(Family::V4);
        let sockets = lab
            .client
            .enter(move || {
                (0..SENDERS)
                    .map(|i| {
                        let ip: IpAddr = format!("198.18.0.{}", 10 + i).parse().unwrap();
                        let s = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
                        s.connect(to).unwrap();
                        (ip, s)
                    })
                    .collect::<Vec<_>>()
            })
            .expect("enter the client namespace");
        Self { sockets }
    }

    /// One message from every sender: "s<i>-<tag>".
    fn round(&self, tag: &str) -> Vec<String> {
        let mut sent = Vec::with_capacity(self.sockets.len());
        for (i, (_, s)) in self.sockets.iter().enumerate() {
            let token = format!("s{i}-{tag}");
            s.send(format!("<13>bgtest: {token} ").as_bytes()).unwrap();
            sent.push(token);
        }
        sent
    }
}

/// How many times each token arrived at `rsyslog`.
fn counts(rsyslog: &Rsyslog) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for line in rsyslog.lines() {
        for word in line.split_whitespace().filter(|w| w.starts_with('s')) {
            *c.entry(word.to_owned()).or_default() += 1;
        }
    }
    c
}

/// The colour the documented hash gives `ip` at green weight `bp`.
fn predicted(seed: u32, bp: u32, ip: IpAddr) -> Colour {
    let word = Steering::split(Colour::Blue, Weight::new(bp).unwrap()).word();
    let (addr, _) = addr_words(ip);
    Colour::from_index(bg_common::split::colour(word, seed, &addr))
}

fn lab() -> (Lab, Agent, Rsyslog, Rsyslog, Senders) {
    let (lab, _, agent) = lab_with_agent(Backends::Local, &[("udp", 514)], Family::V4, FAST);
    let start = |c: &str| {
        Rsyslog::start(&lab.lb, &lab.dir, c, &[lab.backend(c, Family::V4)], &[]).expect("rsyslogd")
    };
    let (blue, green) = (start("blue"), start("green"));
    let senders = Senders::new(&lab);
    agent.wait_healthy(&["blue", "green"], Duration::from_secs(30));
    (lab, agent, blue, green, senders)
}

/// Waits until the deployment is at step `step` (0-based).
fn at_step(agent: &Agent, step: u64) {
    let reached = wait_for(Duration::from_secs(30), || {
        (agent.deploy_status()["progressive"]["step"] == step).then_some(())
    });
    assert!(
        reached.is_some(),
        "never reached step {step}: {}",
        agent.deploy_status()
    );
}

fn ok(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `bgctl shift`, retried while green's probe has not yet seen it up.
fn shift(agent: &Agent, colour: &str, weight: &str) -> String {
    wait_for(Duration::from_secs(15), || {
        let out = agent.ctl(&["shift", colour, weight]);
        out.status.success().then(|| ok(&out))
    })
    .unwrap_or_else(|| ok(&agent.ctl(&["shift", colour, weight])))
}

#[test]
fn two_hundred_senders_at_10_percent_each_stay_on_one_colour() {
    if !privileged() {
        return;
    }
    let (_lab, agent, blue, green, senders) = lab();
    let said = shift(&agent, "green", "10%");
    assert!(said.contains("blue 90% / green 10%"), "{said}");
    let status = agent.status();
    assert_eq!(status["active"], "blue");
    assert_eq!(status["split"], 1000, "{status}");
    let seed = status["split_seed"].as_u64().unwrap() as u32;
    let mut tokens = Vec::new();
    for r in 0..10 {
        tokens.extend(senders.round(&format!("a{r}")));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Green's share rises; its senders stay (monotonic), others join.
    shift(&agent, "green", "50%");
    for r in 0..10 {
        tokens.extend(senders.round(&format!("b{r}")));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (b, g) = wait_for(Duration::from_secs(10), || {
        let (b, g) = (counts(&blue), counts(&green));
        let total: usize = b.values().chain(g.values()).sum();
        (total >= tokens.len()).then_some((b, g))
    })
    .unwrap_or_else(|| (counts(&blue), counts(&green)));
    let mut on_green = [0, 0];
    for (i, (ip, _)) in senders.sockets.iter().enumerate() {
        for (phase, bp) in [("a", 1000), ("b", 5000)] {
            let mine: Vec<String> = (0..10).map(|r| format!("s{i}-{phase}{r}")).collect();
            let nb: usize = mine.iter().map(|t| b.get(t).copied().unwrap_or(0)).sum();
            let ng: usize = mine.iter().map(|t| g.get(t).copied().unwrap_or(0)).sum();
            assert_eq!(
                nb + ng,
                10,
                "{ip} at {bp} bp: {nb} on blue, {ng} on green of 10"
            );
            let colour = if ng == 10 {
                Colour::Green
            } else {
                assert_eq!(
                    nb, 10,
                    "{ip} at {bp} bp split its stream: {nb} blue, {ng} green"
                );
                Colour::Blue
            };
            assert_eq!(colour, predicted(seed, bp, *ip), "{ip} at {bp} bp");
            if colour == Colour::Green {
                on_green[usize::from(bp == 5000)] += 1;
            }
        }
    }
    println!(
        "{} of {SENDERS} senders on green at 10%, {} at 50%",
        on_green[0], on_green[1]
    );
    // Binomial bounds, 5 standard deviations: 200 senders at 10 % and 50 %.
    assert!((2..=41).contains(&on_green[0]), "{on_green:?}");
    assert!((65..=135).contains(&on_green[1]), "{on_green:?}");
    let history = ok(&agent.ctl(&["history"]));
    assert!(
        history.contains("shift blue -> blue 90% / green 10%")
            && history.contains("shift blue 90% / green 10% -> blue 50% / green 50%"),
        "{history}"
    );
    // Rollback ends the split on the colour it started from.
    ok(&agent.ctl(&["rollback"]));
    assert_eq!(agent.status()["split"], Value::Null);
    assert_eq!(agent.status()["active"], "blue");
}

/// A stream from every sender, one round each 100 ms, until stopped.
fn stream(senders: Senders) -> (Arc<AtomicBool>, std::thread::JoinHandle<(Senders, u32)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let started = Instant::now();
        let mut r = 0;
        // Bounded: 60 s at most, whatever the test does.
        while !flag.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
            senders.round(&format!("r{r}"));
            r += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        (senders, r)
    });
    (stop, thread)
}

#[test]
fn a_stepped_deployment_whose_green_fails_at_10_percent_rolls_back_and_blue_loses_nothing() {
    if !privileged() {
        return;
    }
    let hook_out = std::env::temp_dir().join(format!("bg-step-hook-{}", std::process::id()));
    let (lab, _, agent) = lab_with_agent(
        Backends::Local,
        &[("udp", 514)],
        Family::V4,
        &format!(
            "{FAST}rollback = [\"sh\", \"-c\", \"echo $BG_HOOK $BG_COLOUR > {}\"]\n",
            hook_out.display()
        ),
    );
    let start = |c: &str| {
        Rsyslog::start(&lab.lb, &lab.dir, c, &[lab.backend(c, Family::V4)], &[]).expect("rsyslogd")
    };
    let (blue, green) = (start("blue"), start("green"));
    let senders = Senders::new(&lab);
    agent.wait_healthy(&["blue", "green"], Duration::from_secs(30));
    let ips: Vec<IpAddr> = senders.sockets.iter().map(|(ip, _)| *ip).collect();
    let seed = agent.status()["split_seed"].as_u64().unwrap() as u32;
    let (stop, streamer) = stream(senders);
    ok(&agent.ctl(&[
        "deploy",
        "green",
        "--force",
        "--steps",
        "1,10,50,100",
        "--pause",
        "3s",
    ]));
    // At the 10 % step, green dies.
    at_step(&agent, 1);
    assert_eq!(agent.status()["split"], 1000);
    drop(green);
    let d = agent.wait_phase("rolled-back", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let (_, rounds) = streamer.join().unwrap();
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("at the 10% step") && reason.contains("green"),
        "{d}"
    );
    let status = agent.status();
    assert_eq!(
        (status["active"].clone(), status["split"].clone()),
        ("blue".into(), Value::Null)
    );
    // Blue's senders (blue at 10 %, so at 1 % too) lost nothing.
    std::thread::sleep(Duration::from_millis(500));
    let b = counts(&blue);
    let mut blue_senders = 0;
    for (i, ip) in ips.iter().enumerate() {
        if predicted(seed, 1000, *ip) != Colour::Blue {
            continue;
        }
        blue_senders += 1;
        for r in 0..rounds {
            let token = format!("s{i}-r{r}");
            assert_eq!(b.get(&token).copied().unwrap_or(0), 1, "{token} from {ip}");
        }
    }
    println!("{blue_senders} blue senders x {rounds} rounds, all delivered once");
    assert!(blue_senders > 150, "{blue_senders}");
    let hook = std::fs::read_to_string(&hook_out).unwrap_or_default();
    let _ = std::fs::remove_file(&hook_out);
    assert_eq!(hook.trim(), "rollback green");
    let history = ok(&agent.ctl(&["history", "--limit", "200"]));
    assert!(history.contains("-> blue 99% / green 1%"), "{history}");
    assert!(history.contains("-> blue 90% / green 10%"), "{history}");
    assert!(
        !history.contains("green 50%"),
        "the 50% step never came: {history}"
    );
}

#[test]
fn a_paused_deployment_waits_for_promote_and_abort_takes_it_back() {
    if !privileged() {
        return;
    }
    let (_lab, agent, _blue, _green, _senders) = lab();
    let out = agent.ctl(&["promote"]);
    assert!(
        !out.status.success(),
        "promote with no deployment must fail"
    );
    // The first one is aborted at its step: every sender back on blue.
    ok(&agent.ctl(&[
        "deploy",
        "green",
        "--force",
        "--steps",
        "20",
        "--pause",
        "indefinite",
    ]));
    at_step(&agent, 0);
    assert_eq!(agent.status()["split"], 2000);
    // The deployment owns the split while it runs.
    let out = agent.ctl(&["shift", "green", "50%"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("sets the split itself"),
        "{out:?}"
    );
    assert_eq!(agent.status()["split"], 2000);
    ok(&agent.ctl(&["abort"]));
    let d = agent.wait_phase("rolled-back", Duration::from_secs(10));
    assert!(d["reason"].as_str().unwrap().contains("aborted"), "{d}");
    assert_eq!(agent.status()["split"], Value::Null);
    assert_eq!(agent.status()["active"], "blue");
    // The second waits at its step until promoted, then switches.
    ok(&agent.ctl(&[
        "deploy",
        "green",
        "--force",
        "--steps",
        "20,60",
        "--pause",
        "indefinite",
    ]));
    at_step(&agent, 0);
    std::thread::sleep(Duration::from_secs(2));
    let d = agent.deploy_status();
    assert_eq!(d["phase"], "shift", "an indefinite pause waits: {d}");
    let said = ok(&agent.ctl(&["promote"]));
    assert!(said.contains("promoted from step 1 of 2"), "{said}");
    at_step(&agent, 1);
    assert_eq!(agent.status()["split"], 6000);
    ok(&agent.ctl(&["promote"]));
    let d = agent.wait_phase("done", Duration::from_secs(15));
    assert_eq!(agent.status()["active"], "green");
    assert_eq!(agent.status()["split"], Value::Null);
    let looks = d["progressive"]["looks"].as_array().unwrap();
    assert_eq!(looks.len(), 2, "{d}");
    assert!(looks.iter().all(|l| l["promoted"] == true), "{d}");
    let text = ok(&agent.ctl(&["deploy", "--status"]));
    assert!(text.contains("steps 20%, 60% then 100%"), "{text}");
}

#[test]
fn an_agent_killed_at_a_step_takes_every_sender_back_when_it_restarts() {
    if !privileged() {
        return;
    }
    let (_lab, mut agent, _blue, _green, _senders) = lab();
    ok(&agent.ctl(&[
        "deploy",
        "green",
        "--force",
        "--steps",
        "30",
        "--pause",
        "indefinite",
    ]));
    at_step(&agent, 0);
    agent.kill9();
    // The data path outlived the agent, split as it was.
    agent.restart().expect("restart");
    let d = agent.wait_phase("rolled-back", Duration::from_secs(10));
    assert!(
        d["reason"].as_str().unwrap().contains("during its steps"),
        "{d}\n{}",
        agent.log_text()
    );
    let status = agent.status();
    assert_eq!(status["split"], Value::Null, "{status}");
    assert_eq!(status["active"], "blue");
    let history: Vec<Value> =
        serde_json::from_str(&ok(&agent.ctl(&["--json", "history"]))).unwrap();
    assert!(
        history
            .iter()
            .any(|e| e["event"] == "rollback" && e["reason"] == "interrupted"),
        "{history:?}"
    );
}
