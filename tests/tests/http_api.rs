//! The agent's HTTP server against a real agent in a namespace lab: the
//! JSON API, token enforcement, the live event stream and the metrics.
use std::time::Duration;

use bg_tests::{
    http::{self, UdpLab, get, post},
    lab::{Family, Lab, service_addr},
    privileged,
    traffic::{send_paced, sender},
    wait_for,
};

#[test]
fn status_history_dashboard_and_token_enforcement() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let ns = &t.lab.lb;

    let status = get(ns, "/api/status").expect("GET /api/status");
    assert_eq!(status.status, 200);
    let s = status.json();
    assert_eq!(s["active"], "blue");
    assert_eq!(s["services"][0]["name"], "syslog-udp-514");
    assert_eq!(s["services"][0]["health"]["green"]["state"], "up");
    assert_eq!(
        s["services"][0]["blue"],
        t.lab.backend("blue", Family::V4).to_string()
    );
    assert!(s["traffic_history"].is_array(), "{s}");
    assert!(s["deployment"].is_null(), "no deployment yet: {s}");

    let history = get(ns, "/api/history?limit=50").expect("history").json();
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"agent-started"), "{kinds:?}");
    assert!(kinds.contains(&"probe"), "probe state changes: {kinds:?}");

    // The page is self-contained: nothing loaded from elsewhere.
    let page = get(ns, "/").expect("dashboard");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>bluegreen</title>"));
    for external in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "@import",
        "url(http",
    ] {
        assert!(!page.body.contains(external), "external asset: {external}");
    }

    // The token: 64 hex digits, in a 0600 file.
    let token = t.token();
    assert_eq!(token.len(), 64);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(t.lab.path("state/token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Without a token, or with a wrong one: 401 and nothing changes.
    let flip = r#"{"colour":"green"}"#;
    let wrong = "0".repeat(64);
    for (what, tok) in [("no token", None), ("wrong token", Some(wrong.as_str()))] {
        for (path, body) in [
            ("/api/flip", flip),
            ("/api/rollback", ""),
            ("/api/deploy", r#"{"colour":"green"}"#),
            ("/api/abort", ""),
        ] {
            let a = post(ns, path, tok, body).expect("POST");
            assert_eq!(a.status, 401, "{what} {path}: {}", a.body);
            assert!(a.body.contains("bgctl token"), "{}", a.body);
        }
    }
    assert_eq!(t.active(), "blue", "nothing changed");
    let refused: Vec<String> = get(ns, "/api/history?limit=500")
        .unwrap()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !refused.iter().any(|k| k == "flip" || k == "deploy"),
        "{refused:?}"
    );

    // Bad bodies: 400, naming the value and what is accepted.
    let a = post(ns, "/api/flip", Some(&token), r#"{"colour":"red"}"#).unwrap();
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body.contains("red") && a.body.contains("green"),
        "{}",
        a.body
    );
    let a = post(
        ns,
        "/api/flip",
        Some(&token),
        r#"{"colour":"green","forse":true}"#,
    )
    .unwrap();
    assert_eq!(a.status, 400, "unknown field: {}", a.body);
    assert_eq!(t.active(), "blue");

    // With the token the flip happens, through the same path as the CLI.
    let a = post(ns, "/api/flip", Some(&token), flip).unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["flip"]["to"], "green");
    assert_eq!(t.active(), "green");
    assert_eq!(get(ns, "/api/status").unwrap().json()["active"], "green");
    let a = post(ns, "/api/rollback", Some(&token), "").unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(t.active(), "blue");
    // An error answer: its status and its message.
    let answer = |a: &bg_tests::http::Answer| {
        let message = a.json()["error"].as_str().unwrap_or_default().to_owned();
        (a.status, message)
    };
    // Nothing to abort: not found, with the reason, not a crash.
    let a = post(ns, "/api/abort", Some(&token), "").unwrap();
    let (status, message) = answer(&a);
    assert_eq!(status, 404, "{}", a.body);
    assert!(message.contains("no deployment is running"), "{}", a.body);
    // A backend for a service that does not exist: 404 naming it.
    let a = post(
        ns,
        "/api/deploy",
        Some(&token),
        r#"{"colour":"green","backends":{"nope":"198.18.2.9:514"},"force":true}"#,
    )
    .unwrap();
    let (status, message) = answer(&a);
    assert_eq!(status, 404, "{}", a.body);
    assert!(message.contains(r#"no service "nope""#), "{}", a.body);
    // Deploying onto the active colour is refused: 409.
    let a = post(
        ns,
        "/api/deploy",
        Some(&token),
        r#"{"colour":"blue","force":true}"#,
    )
    .unwrap();
    let (status, message) = answer(&a);
    assert_eq!(status, 409, "{}", a.body);
    assert!(message.contains("is the active colour"), "{}", a.body);
}

#[test]
fn health_gating_applies_to_the_api() {
    if !privileged() {
        return;
    }
    // Green has no listener: it goes down by ICMP.
    let t = UdpLab::start(&["blue"]);
    let down = wait_for(Duration::from_secs(10), || {
        (t.agent.status()["services"][0]["health"]["green"]["state"] == "down").then_some(())
    });
    assert!(down.is_some(), "{}", t.agent.status());
    let a = t.flip_with_token("green");
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(a.body.contains("refusing to flip to green"), "{}", a.body);
    assert_eq!(t.active(), "blue");
    let a = post(
        &t.lab.lb,
        "/api/flip",
        Some(&t.token()),
        r#"{"colour":"green","force":true}"#,
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(t.active(), "green");
}

#[test]
fn event_stream_delivers_a_flip() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let events = http::events(&t.lab.lb, Duration::from_secs(20)).expect("event stream");
    let a = t.flip_with_token("green");
    assert_eq!(a.status, 200, "{}", a.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let flip = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match events.recv_timeout(left) {
            Ok((name, data)) if name == "flip" => break data,
            Ok(other) => seen.push(other),
            Err(_) => panic!("no flip event within 10 s; saw {seen:?}"),
        }
    };
    let e: serde_json::Value = serde_json::from_str(&flip).unwrap();
    assert_eq!(e["event"], "flip");
    assert_eq!(
        (e["from"].as_str(), e["to"].as_str()),
        (Some("blue"), Some("green"))
    );
    assert!(e["at_unix_ms"].as_u64().is_some());
}

/// Samples of a scrape, by metric name and labels.
fn scrape(lab: &Lab) -> prometheus_parse::Scrape {
    let a = get(&lab.lb, "/metrics").expect("GET /metrics");
    assert_eq!(a.status, 200);
    prometheus_parse::Scrape::parse(a.body.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses")
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    }
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    if !privileged() {
        return;
    }
    let t = UdpLab::new();
    let before = scrape(&t.lab);
    let names: std::collections::BTreeSet<&str> =
        before.samples.iter().map(|s| s.metric.as_str()).collect();
    for name in [
        "bluegreen_packets_total",
        "bluegreen_bytes_total",
        "bluegreen_active_colour",
        "bluegreen_flips_total",
        "bluegreen_rollbacks_total",
        "bluegreen_backend_up",
        "bluegreen_probe_duration_seconds",
        "bluegreen_probe_duration_seconds_count",
        "bluegreen_tcp_connections",
        "bluegreen_flow_misses_total",
        "bluegreen_redirect_errors_total",
        "bluegreen_transmit_drops_total",
        "bluegreen_malformed_packets_total",
        "bluegreen_deployment_phase",
        "bluegreen_counter_available",
        "bluegreen_data_path_packets_total",
        "bluegreen_data_path_attached",
        "bluegreen_green_weight",
        "bluegreen_shifts_total",
        "bluegreen_build_info",
        "bluegreen_drops_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    // Every metric the shipped alert rules and Grafana dashboard query,
    // but the fleet's (fleet.rs checks those on a fleet).
    let missing = bg_tests::observability::missing_from(&before, |n| n.contains("_fleet_"));
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    let build = before
        .samples
        .iter()
        .find(|x| x.metric == "bluegreen_build_info")
        .expect("build info");
    assert_eq!(
        build.labels.get("version"),
        Some(env!("CARGO_PKG_VERSION")),
        "{build:?}"
    );
    let digest = build.labels.get("data_path").unwrap_or_default();
    assert!(
        digest.len() == 12 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{build:?}"
    );
    let rss = value(&before, "process_resident_memory_bytes", &[]);
    let fds = value(&before, "process_open_fds", &[]);
    assert!(rss > 1e6 && fds >= 3.0, "rss {rss}, fds {fds}");
    // Drops split by what they cost; the kernel's refusals are lost.
    for (reason, impact) in [
        ("kernel_redirect_err", "lost"),
        ("xmit_drops", "lost"),
        ("tx_drops", "lost"),
        ("redirect_failed", "harmless"),
        ("shadow_over_budget", "harmless"),
    ] {
        let labels = [("reason", reason), ("impact", impact)];
        assert_eq!(value(&before, "bluegreen_drops_total", &labels), 0.0);
    }
    assert_eq!(value(&before, "bluegreen_green_weight", &[]), 0.0);
    let svc = [("service", "syslog-udp-514"), ("colour", "blue")];
    assert_eq!(
        value(&before, "bluegreen_active_colour", &[("colour", "blue")]),
        1.0
    );
    assert_eq!(
        value(&before, "bluegreen_active_colour", &[("colour", "green")]),
        0.0
    );
    assert_eq!(value(&before, "bluegreen_backend_up", &svc), 1.0);
    assert_eq!(value(&before, "bluegreen_flips_total", &[]), 0.0);
    assert_eq!(value(&before, "bluegreen_data_path_attached", &[]), 1.0);
    // Redirect errors by outcome: harmless (passed to the kernel) or lost.
    for outcome in ["passed", "lost"] {
        assert_eq!(
            value(
                &before,
                "bluegreen_redirect_errors_total",
                &[("outcome", outcome)]
            ),
            0.0
        );
    }
    for counter in ["kernel_redirect_err", "xmit_drops", "tx_drops"] {
        assert_eq!(
            value(
                &before,
                "bluegreen_counter_available",
                &[("counter", counter)]
            ),
            1.0,
            "{counter} counts on this host, no tracefs needed"
        );
    }
    let probes = value(&before, "bluegreen_probe_duration_seconds_count", &svc);
    assert!(probes >= 2.0, "probes observed: {probes}");
    // The buckets are a real histogram: cumulative, ending at the count.
    let histogram = before
        .samples
        .iter()
        .find(|x| {
            x.metric == "bluegreen_probe_duration_seconds"
                && svc.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .expect("probe histogram");
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {:?}", histogram.value)
    };
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));
    assert_eq!(buckets.last().map(|b| b.count), Some(probes));

    // 500 messages of 100 bytes through the steered service.
    let n = 500;
    let msgs: Vec<String> = (0..n)
        .map(|i| format!("metrics-{i:04} {}", "x".repeat(87)))
        .collect();
    let socket = sender(&t.lab.client, service_addr(Family::V4)).expect("sender");
    send_paced(&socket, &msgs, 5000).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let a = t.flip_with_token("green");
    assert_eq!(a.status, 200, "{}", a.body);
    let after = scrape(&t.lab);
    let delta = |name: &str| value(&after, name, &svc) - value(&before, name, &svc);
    assert_eq!(
        delta("bluegreen_packets_total"),
        f64::from(n),
        "every message counted once"
    );
    // Each data-path counter by name: local backends, so pass_local.
    let local = |s: &prometheus_parse::Scrape| {
        value(
            s,
            "bluegreen_data_path_packets_total",
            &[("counter", "pass_local")],
        )
    };
    assert_eq!(local(&after) - local(&before), f64::from(n));
    // Each frame: Ethernet 14 + IPv4 20 + UDP 8 + 100 bytes.
    assert_eq!(delta("bluegreen_bytes_total"), f64::from(n) * 142.0);
    let green = [("service", "syslog-udp-514"), ("colour", "green")];
    assert_eq!(
        value(&after, "bluegreen_packets_total", &green),
        value(&before, "bluegreen_packets_total", &green)
    );
    assert_eq!(value(&after, "bluegreen_flips_total", &[]), 1.0);
    assert_eq!(
        value(&after, "bluegreen_active_colour", &[("colour", "green")]),
        1.0
    );
    assert_eq!(
        value(&after, "bluegreen_rollbacks_total", &[("reason", "manual")]),
        0.0
    );
    assert_eq!(value(&after, "bluegreen_green_weight", &[]), 1.0);
    // A shift through the API: green's weight is the split's share.
    let a = post(
        &t.lab.lb,
        "/api/shift",
        Some(&t.token()),
        r#"{"colour":"blue","weight":"75%"}"#,
    )
    .expect("POST /api/shift");
    assert_eq!(a.status, 200, "{}", a.body);
    let split = scrape(&t.lab);
    assert_eq!(value(&split, "bluegreen_green_weight", &[]), 0.25);
    assert_eq!(value(&split, "bluegreen_shifts_total", &[]), 1.0);
    let bad = post(
        &t.lab.lb,
        "/api/shift",
        Some(&t.token()),
        r#"{"colour":"green","weight":"120%"}"#,
    )
    .expect("POST /api/shift");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("120%") && bad.body.contains("accepted"),
        "{}",
        bad.body
    );
}

/// On a host without kernel BTF the drop counters that need it cannot
/// count. status (JSON and text) and /metrics say so and why, instead of
/// showing a 0 that means nothing; the one that needs no BTF still counts.
#[test]
fn counters_that_cannot_count_say_why() {
    if !privileged() {
        return;
    }
    let t = UdpLab::launched(&["blue", "green"], http::NO_KERNEL_BTF);
    let s = t.agent.status();
    let off = s["unavailable"].as_object().expect("unavailable map");
    for counter in ["xmit_drops", "tx_drops"] {
        let why = off[counter].as_str().unwrap_or_default();
        assert!(
            why.contains("BTF") && why.contains("net_device.ifindex"),
            "{counter}: {why}"
        );
    }
    assert!(
        !off.contains_key("kernel_redirect_err"),
        "filtered by map id, it needs no BTF: {off:?}"
    );
    let text = String::from_utf8(t.agent.ctl(&["status"]).stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("xmit_drops"))
        .unwrap_or_else(|| panic!("no xmit_drops line in:\n{text}"));
    assert!(line.contains("unavailable: the kernel's BTF"), "{line}");
    let m = scrape(&t.lab);
    let available = |c: &str| value(&m, "bluegreen_counter_available", &[("counter", c)]);
    assert_eq!(available("xmit_drops"), 0.0);
    assert_eq!(available("tx_drops"), 0.0);
    assert_eq!(available("kernel_redirect_err"), 1.0);
    assert!(
        !m.samples
            .iter()
            .any(|x| x.metric == "bluegreen_transmit_drops_total"),
        "no made-up transmit drop samples"
    );
    let lost: Vec<_> = m
        .samples
        .iter()
        .filter(|x| x.metric == "bluegreen_drops_total")
        .filter_map(|x| x.labels.get("reason"))
        .collect();
    assert!(
        lost.contains(&"kernel_redirect_err") && !lost.contains(&"xmit_drops"),
        "only counting drop reasons have samples: {lost:?}"
    );
    assert!(
        t.agent
            .log_text()
            .contains("counter xmit_drops is unavailable")
    );
}
