//! The shipped alert rules and Grafana dashboard are valid as their tools
//! read them: promtool checks the rules and runs their unit tests (each
//! alert fires on the series that should raise it and not on healthy
//! ones); the dashboard is well-formed JSON whose panels Grafana can lay
//! out. That every metric they name exists is checked against a live
//! agent in http_api.rs and fleet.rs.
use std::process::Command;

use bg_tests::observability::{DASHBOARD, RULE_TESTS, RULES, packaging, queried_metrics};

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(packaging())
        .output()
        .expect("promtool (Debian's prometheus package; `cargo xtask setup` installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_check_and_pass_their_unit_tests() {
    let check = promtool(&["check", "rules", RULES]);
    assert!(check.contains("SUCCESS: 9 rules found"), "{check}");
    let tests = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    // The five conditions each have a rule.
    let rules = std::fs::read_to_string(packaging().join(RULES)).unwrap();
    for alert in [
        "BluegreenActiveColourDown",
        "BluegreenConfigDrift",
        "BluegreenLostDrops",
        "BluegreenRollback",
        "BluegreenFleetNodeStale",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        let tested = std::fs::read_to_string(packaging().join(RULE_TESTS)).unwrap();
        assert!(
            tested.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
}

#[test]
fn dashboard_panels_lay_out_and_query() {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(packaging().join(DASHBOARD)).unwrap())
            .unwrap();
    assert_eq!(d["uid"], "bluegreen");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("an id")),
            "{title}: id reused"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{title}: {g}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            // Every query follows the instance picker.
            assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
        }
    }
    let names = queried_metrics();
    for expected in [
        "bluegreen_drops_total",
        "bluegreen_build_info",
        "process_resident_memory_bytes",
        "bluegreen_probe_duration_seconds",
        "up",
    ] {
        assert!(names.contains(expected), "{expected} not in {names:?}");
    }
}
