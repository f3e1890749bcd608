//! `bgctl deploy --dry-run`: the checks `start` makes, and the phases the
//! deployment would run as the config and the flags set them. Nothing is
//! written and nothing recorded.
use super::Deployer;
use crate::{
    core::OpResult,
    model::{Colour, Preview, Progressive},
};

impl Deployer {
    pub fn preview(
        &self,
        colour: Colour,
        version: Option<&str>,
        backends: &[(String, std::net::SocketAddr)],
        force: bool,
        progressive: Option<&Progressive>,
    ) -> OpResult<Preview> {
        let cur = self.current.lock().expect("poisoned").clone();
        self.check_start(cur.as_ref(), colour, version, backends, force)?;
        let from = colour.other();
        let problems = self.problems(colour);
        Ok(Preview {
            action: format!(
                "deploy {}onto {colour} ({from} serves until the switch)",
                version.map(|v| format!("{v} ")).unwrap_or_default()
            ),
            changes: true,
            // The wait-healthy phase waits for these to clear: they do not
            // refuse a deployment, so --force does not override them.
            forced: false,
            plan: self.plan(colour, backends, progressive, &problems),
            problems,
        })
    }

    fn plan(
        &self,
        colour: Colour,
        backends: &[(String, std::net::SocketAddr)],
        progressive: Option<&Progressive>,
        problems: &[String],
    ) -> Vec<String> {
        let config = self.core().config();
        let d = &config.deploy;
        let from = colour.other();
        let mut plan = Vec::new();
        plan.push(if backends.is_empty() {
            format!("prepare: {colour}'s backends stay as configured")
        } else {
            let list: Vec<String> = backends.iter().map(|(s, a)| format!("{s}={a}")).collect();
            format!("prepare: put in place on {colour}: {}", list.join(", "))
        });
        plan.push(format!(
            "wait-healthy: until every {colour} backend is up by its probes, at most {} s{}",
            d.healthy_timeout_s,
            if problems.is_empty() {
                " (they are up now)".to_owned()
            } else {
                format!(" (now: {})", problems.join("; "))
            }
        ));
        if d.shadow_s > 0 {
            plan.push(format!(
                "shadow: copy {:.2} % of UDP senders' datagrams to {colour} for {} s while {from} serves them all; fails on {colour}'s ICMP errors or ill health{}",
                f64::from(d.shadow_bp) / 100.0,
                d.shadow_s,
                if d.shadow_count.is_some() {
                    format!(", or shadow_count below {} of the copies", d.min_delivered_ratio)
                } else {
                    String::new()
                }
            ));
        }
        plan.push(format!(
            "validate: {} messages at {}/s to each {colour} backend; passes at {} delivered, p99 under {} ms{}",
            d.validate_messages,
            d.validate_rate,
            d.min_delivered_ratio,
            d.max_p99_ms,
            if d.min_throughput > 0.0 {
                format!(", at least {} messages/s", d.min_throughput)
            } else {
                String::new()
            }
        ));
        if let Some(hook) = &d.pre_switch {
            plan.push(format!(
                "pre_switch hook: {} (non-zero stops the deployment)",
                hook.join(" ")
            ));
        }
        if let Some(p) = progressive {
            let steps: Vec<String> = p.steps.iter().map(|w| w.to_string()).collect();
            plan.push(format!(
                "shift: {colour} gets {} of senders in turn, each step watched for {}{}",
                steps.join(", then "),
                p.pause,
                if matches!(p.pause, crate::model::Pause::Indefinite) {
                    " (until `bgctl promote`)"
                } else {
                    ""
                }
            ));
        }
        plan.push(format!("switch: every sender to {colour}, one map write"));
        if let Some(hook) = &d.post_switch {
            plan.push(format!("post_switch hook: {}", hook.join(" ")));
        }
        plan.push(format!(
            "bake: watch {colour} for {} s; on a failure, roll back to {from} by itself",
            d.bake_s
        ));
        if d.keep_warm_s > 0 {
            plan.push(format!(
                "complete: keep {from} warm for {} s (an abort still rolls back), then done",
                d.keep_warm_s
            ));
        }
        plan
    }
}
