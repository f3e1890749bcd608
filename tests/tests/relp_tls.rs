//! Pipelines that are not plain syslog, end to end with real servers: RELP
//! backends (rsyslog imrelp) with a real omrelp client, and syslog over TLS
//! backends (rsyslog gtls) with a CA and certificates the test makes.
//! Probes and the deployment gate speak each protocol, so a deployment
//! passes on its merits and the backends log no broken sessions.
use std::{net::SocketAddr, time::Duration};

use bg_tests::{
    agent::Agent,
    certs::TestPki,
    fixtures::{FAST_HEALTH, quick_deploy, service},
    lab::{Backends, Lab},
    privileged,
    rsyslog::{Inputs, Rsyslog},
    wait_for,
};
use bluegreen::transport::tls::{TlsClient, TlsSettings, Verify};

/// Fast probes, and deployments that finish in seconds.
fn fast() -> String {
    format!("{FAST_HEALTH}\n{}", quick_deploy(10, 1, 200))
}
/// A service's backends speak RELP.
const RELP: &str = "app = \"relp\"\n";

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn both_up(agent: &Agent) -> bool {
    let s = agent.status();
    ["blue", "green"].iter().all(|c| {
        s["health_problems"][c]
            .as_array()
            .is_some_and(|p| p.is_empty())
    })
}

fn validation_lines(r: &Rsyslog) -> usize {
    r.lines()
        .iter()
        .filter(|l| l.contains("validation message"))
        .count()
}

/// RELP backends: the default probe opens and closes a RELP session, so
/// imrelp reports nothing (a TCP-connect probe on the same kind of backend
/// makes it report a broken session each time); the gate counts RELP
/// acknowledgements, and the deployment completes with every validation
/// message stored. A real omrelp client keeps its session, on its colour,
/// through a flip, and loses nothing.
#[test]
fn relp_backends_are_probed_and_validated_in_relp() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let config = lab.path("relp.toml");
    std::fs::write(
        &config,
        [
            service(
                "relp",
                "tcp",
                "0.0.0.0:2514",
                "198.18.1.2:2514",
                "198.18.2.2:2514",
                RELP,
            ),
            service(
                "relp-tcp-probed",
                "tcp",
                "0.0.0.0:2515",
                "198.18.1.2:2515",
                "198.18.2.2:2515",
                &format!("{RELP}[service.health]\nkind = \"tcp\"\n"),
            ),
            fast(),
        ]
        .join("\n"),
    )
    .unwrap();
    let start = |name: &str, ns: &bg_tests::netns::NetNs, ip: &str| {
        let relp = [addr(&format!("{ip}:2514"))];
        Rsyslog::launch(
            ns,
            &lab.dir,
            name,
            &Inputs {
                relp: &relp,
                ..Inputs::default()
            },
        )
        .expect("rsyslogd with imrelp")
    };
    let blue = start("blue", lab.blue.as_ref().unwrap(), "198.18.1.2");
    let green = start("green", lab.green.as_ref().unwrap(), "198.18.2.2");
    let tcp_probed = [addr("198.18.1.2:2515")];
    let control = Rsyslog::launch(
        lab.blue.as_ref().unwrap(),
        &lab.dir,
        "control",
        &Inputs {
            relp: &tcp_probed,
            ..Inputs::default()
        },
    )
    .unwrap();
    let _green2 = Rsyslog::launch(
        lab.green.as_ref().unwrap(),
        &lab.dir,
        "green2",
        &Inputs {
            relp: &[addr("198.18.2.2:2515")],
            ..Inputs::default()
        },
    )
    .unwrap();
    let agent = Agent::start(&lab, &config).expect("agent");
    assert!(
        wait_for(Duration::from_secs(10), || both_up(&agent).then_some(())).is_some(),
        "{}",
        agent.status()["health_problems"]
    );
    std::thread::sleep(Duration::from_millis(1500));
    for r in [&blue, &green] {
        assert!(
            !r.errors().contains("session broken"),
            "RELP probes leave no broken session: {}",
            r.errors()
        );
        assert!(r.lines().is_empty(), "and no message: {:?}", r.lines());
    }
    eprintln!(
        "imrelp 'session broken' reports so far: relp-probed {} + {}, tcp-probed {}",
        blue.errors().matches("session broken").count(),
        green.errors().matches("session broken").count(),
        control.errors().matches("session broken").count()
    );
    assert!(
        control.errors().contains("session broken"),
        "a bare TCP connect breaks a RELP session every probe: {}",
        control.errors()
    );

    let out = agent.ctl(&["deploy", "green", "--wait"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value =
        serde_json::from_slice(&agent.ctl(&["--json", "deploy", "--status"]).stdout).unwrap();
    let gate = d["gate"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["service"] == "relp")
        .unwrap()
        .clone();
    eprintln!("RELP gate: {gate}");
    assert_eq!(gate["delivered"], 200, "{gate}");
    assert!(
        gate["evidence"].as_str().unwrap().contains("RELP"),
        "{gate}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || (validation_lines(&green) == 200)
            .then_some(()))
        .is_some(),
        "every acknowledged message is stored: {}",
        validation_lines(&green)
    );
    assert!(
        !green.errors().contains("session broken"),
        "{}",
        green.errors()
    );

    // A real omrelp client (rsyslog in the client namespace) forwards what
    // it receives to the service; its session is opened on green and stays
    // there through a flip to blue.
    let client_in = [addr("127.0.0.1:5514")];
    let client = Rsyslog::launch(
        &lab.client,
        &lab.dir,
        "client",
        &Inputs {
            udp: &client_in,
            rules: "module(load=\"omrelp\")\naction(type=\"omrelp\" target=\"198.18.0.1\" port=\"2514\")\nstop",
            ..Inputs::default()
        },
    )
    .unwrap();
    let sender = bg_tests::traffic::sender(&lab.client, client_in[0]).unwrap();
    let msgs: Vec<String> = (0..600).map(|i| format!("<13>omrelp: relp-{i} ")).collect();
    bg_tests::traffic::send_paced(&sender, &msgs[..300], 1000).unwrap();
    agent.flip("blue");
    bg_tests::traffic::send_paced(&sender, &msgs[300..], 1000).unwrap();
    let tokens: Vec<String> = (0..600).map(|i| format!("relp-{i} ")).collect();
    let all = wait_for(Duration::from_secs(10), || {
        let got = bg_tests::traffic::occurrences(&green.lines(), &tokens);
        tokens.iter().all(|t| got[t] == 1).then_some(())
    });
    let got = bg_tests::traffic::occurrences(&green.lines(), &tokens);
    let missing = tokens.iter().filter(|t| got[*t] != 1).count();
    assert!(
        all.is_some(),
        "{missing} of 600 not on green exactly once; blue has {}; client: {}",
        blue.lines().len(),
        client.errors()
    );
    assert!(
        blue.lines().iter().all(|l| !l.contains("relp-")),
        "the session kept its colour"
    );
    drop(client);
}

/// Syslog over TLS (RFC 5425) on 6514, with a CA and server certificates
/// made here: probes complete TLS handshakes against the configured CA,
/// the gate sends its messages over TLS and counts what TCP acknowledged,
/// and rsyslog stores every one. A TLS client keeps its session through a
/// flip. A probe that does not trust the CA fails, saying why.
#[test]
fn tls_backends_are_probed_and_validated_over_tls() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(Backends::Namespaces).expect("lab");
    let ips = ["198.18.0.1", "198.18.1.2", "198.18.2.2"].map(|i| i.parse().unwrap());
    let pki = TestPki::new(&lab.dir, &["collector.test"], &ips).expect("certificates");
    let config = lab.path("tls.toml");
    std::fs::write(
        &config,
        service(
            "tls",
            "tcp",
            "0.0.0.0:6514",
            "198.18.1.2:6514",
            "198.18.2.2:6514",
            &format!(
                "[service.tls]\nca = {:?}\nserver_name = \"collector.test\"\n",
                pki.ca
            ),
        ) + &fast(),
    )
    .unwrap();
    let start = |name: &str, ns: &bg_tests::netns::NetNs, ip: &str| {
        let tls = [addr(&format!("{ip}:6514"))];
        Rsyslog::launch(
            ns,
            &lab.dir,
            name,
            &Inputs {
                tls: &tls,
                pki: Some(&pki),
                ..Inputs::default()
            },
        )
        .expect("rsyslogd with gtls")
    };
    let blue = start("blue", lab.blue.as_ref().unwrap(), "198.18.1.2");
    let green = start("green", lab.green.as_ref().unwrap(), "198.18.2.2");
    let agent = Agent::start(&lab, &config).expect("agent");
    assert!(
        wait_for(Duration::from_secs(10), || both_up(&agent).then_some(())).is_some(),
        "{}",
        agent.status()["health_problems"]
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        blue.lines().is_empty(),
        "handshakes store nothing: {:?}",
        blue.lines()
    );

    let out = agent.ctl(&["deploy", "green", "--wait"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value =
        serde_json::from_slice(&agent.ctl(&["--json", "deploy", "--status"]).stdout).unwrap();
    eprintln!("TLS gate: {}", d["gate"][0]);
    assert_eq!(d["gate"][0]["delivered"], 200, "{d}");
    assert!(d["gate"][0]["evidence"].as_str().unwrap().contains("TLS"));
    assert!(
        wait_for(Duration::from_secs(5), || (validation_lines(&green) == 200)
            .then_some(()))
        .is_some(),
        "rsyslog decrypted and stored every message: {}",
        validation_lines(&green)
    );

    // A TLS client of the service verifies the service's address in the
    // backends' certificate; its session stays on green through a flip.
    let client = TlsClient::new(TlsSettings {
        ca: Some(pki.ca.clone()),
        verify: Verify::Full,
        ..TlsSettings::default()
    })
    .unwrap();
    let mut stream = lab
        .client
        .enter(move || client.connect(addr("198.18.0.1:6514"), Duration::from_secs(5)))
        .unwrap()
        .expect("TLS through the service");
    let send = |stream: &mut rustls::StreamOwned<_, _>, range: std::ops::Range<usize>| {
        use std::io::Write as _;
        for i in range {
            let msg = format!("<13>app: tls-{i} ");
            stream
                .write_all(format!("{} {msg}", msg.len()).as_bytes())
                .unwrap();
        }
        stream.flush().unwrap();
    };
    send(&mut stream, 0..100);
    agent.flip("blue");
    send(&mut stream, 100..200);
    let tokens: Vec<String> = (0..200).map(|i| format!("tls-{i} ")).collect();
    let all = wait_for(Duration::from_secs(5), || {
        let got = bg_tests::traffic::occurrences(&green.lines(), &tokens);
        tokens.iter().all(|t| got[t] == 1).then_some(())
    });
    assert!(all.is_some(), "every message on green, through the flip");

    // The wrong CA: the probe fails on the certificate, and says so.
    std::fs::create_dir_all(lab.path("other")).unwrap();
    let other = TestPki::new(&lab.path("other"), &["x"], &[]).unwrap();
    let wrong = TlsClient::new(TlsSettings {
        ca: Some(other.ca.clone()),
        verify: Verify::Full,
        server_name: Some("collector.test".into()),
        ..TlsSettings::default()
    })
    .unwrap();
    let err = lab
        .lb
        .enter(move || {
            bluegreen::transport::tls::probe(
                &wrong,
                addr("198.18.1.2:6514"),
                Duration::from_secs(5),
            )
        })
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
}
