//! The Prometheus rules and the Grafana dashboard shipped in
//! `packaging/`: the metric names their queries use, so a test can check
//! each against a live `/metrics`.
use std::{collections::BTreeSet, path::PathBuf};

/// `packaging/` of this checkout.
pub fn packaging() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("packaging")
}

pub const RULES: &str = "prometheus/bluegreen.rules.yml";
pub const RULE_TESTS: &str = "prometheus/bluegreen.rules.test.yml";
pub const DASHBOARD: &str = "grafana/bluegreen.json";

/// Names Prometheus makes up itself, not the agent.
const SYNTHETIC: &[&str] = &["up"];

/// Every metric name the queries of the rules and the dashboard use:
/// `bluegreen_*` and `process_*` tokens, with a histogram's `_bucket`
/// series named by its family, plus Prometheus's own `up`.
pub fn queried_metrics() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(packaging().join(RULES)).expect("read rules");
    // Comments may name metrics in prose; only the rules count.
    let rules: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let mut texts = vec![rules.join("\n")];
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(packaging().join(DASHBOARD)).expect("read dashboard"),
    )
    .expect("the dashboard is JSON");
    collect_queries(&dashboard, &mut texts);
    let mut names = BTreeSet::new();
    for text in texts {
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if token.starts_with("bluegreen_") || token.starts_with("process_") {
                let family = token.strip_suffix("_bucket").unwrap_or(token);
                names.insert(family.to_owned());
            } else if SYNTHETIC.contains(&token) && text.contains(&format!("{token}{{")) {
                names.insert(token.to_owned());
            }
        }
    }
    names
}

/// The `expr` and `query` strings anywhere in a dashboard.
fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The metric names of a scrape's samples, as queries name them: a
/// counter by its `_total` name, a histogram by its family name. A family
/// with no sample (only its HELP) does not count.
pub fn scraped_families(scrape: &prometheus_parse::Scrape) -> BTreeSet<String> {
    scrape.samples.iter().map(|s| s.metric.clone()).collect()
}

/// The queried names a scrape lacks, leaving out Prometheus's own and
/// those `skip` says this agent cannot have (fleet metrics off a fleet).
pub fn missing_from(scrape: &prometheus_parse::Scrape, skip: impl Fn(&str) -> bool) -> Vec<String> {
    let have = scraped_families(scrape);
    queried_metrics()
        .into_iter()
        .filter(|n| !SYNTHETIC.contains(&n.as_str()) && !skip(n))
        .filter(|n| !have.contains(n))
        .collect()
}
