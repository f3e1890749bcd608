//! A deployment for people: `bgctl deploy --status` and `--wait`.
use crate::model::now_unix_ms;

/// A deployment for people: phase, elapsed time, gate results, reason.
pub fn format_deployment(d: &crate::model::Deployment) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let now = now_unix_ms();
    let _ = writeln!(
        o,
        "deployment {} to {}{}: {:?} ({} in phase, {} in all, started {})",
        d.id,
        d.colour,
        d.version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default(),
        d.phase,
        super::time::duration(now.saturating_sub(d.phase_started_unix_ms) / 1000),
        super::time::duration(now.saturating_sub(d.started_unix_ms) / 1000),
        super::time::local(d.started_unix_ms)
    );
    if let Some(r) = d.shadow.first() {
        let _ = writeln!(o, "  shadow copies: {}", r.mechanism);
    }
    for r in &d.shadow {
        let l = &r.look;
        let _ = writeln!(
            o,
            "  shadow {} -> {} (from {}): {}, {} copied, {} not copied, {} ICMP errors{}{}",
            l.service,
            l.target,
            l.source,
            if r.passed { "passed" } else { "FAILED" },
            l.counts.copied,
            l.counts.lost(),
            l.icmp_errors,
            r.accepted
                .map(|a| format!(", {a} accepted by the target"))
                .unwrap_or_default(),
            if r.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.detail)
            }
        );
    }
    for g in &d.gate {
        let outcome = match (g.delivered, g.refused) {
            (Some(acked), _) => format!(
                "{acked}/{} acknowledged, p99 {}",
                g.sent,
                g.p99_ms.map_or("n/a".into(), |p| format!("{p:.2} ms"))
            ),
            (None, refused) => format!(
                "{} sent, {} refused (UDP: no receipt)",
                g.sent,
                refused.unwrap_or(0)
            ),
        };
        let _ = writeln!(
            o,
            "  gate {} {} {}: {outcome}, {:.0}/s{}",
            g.service,
            g.backend,
            if g.passed { "passed" } else { "FAILED" },
            g.throughput,
            if g.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.detail)
            }
        );
        if !g.evidence.is_empty() {
            let _ = writeln!(o, "    evidence: {}", g.evidence);
        }
    }
    if let Some(p) = &d.progressive {
        let steps: Vec<String> = p.steps.iter().map(|w| w.to_string()).collect();
        let _ = writeln!(
            o,
            "  steps {} then 100%, each watched {}{}",
            steps.join(", "),
            p.pause,
            match p.step {
                Some(i) => format!(
                    "; at step {} of {} ({})",
                    i + 1,
                    p.steps.len(),
                    p.steps[i.min(p.steps.len() - 1)]
                ),
                None => String::new(),
            }
        );
        for l in &p.looks {
            let _ = writeln!(
                o,
                "  step {} held {} s: {} packets to {}, {} to {}{}",
                l.weight,
                l.watched_s,
                l.packets.get(d.colour),
                d.colour,
                l.packets.get(d.from),
                d.from,
                if l.promoted { " (promoted)" } else { "" }
            );
        }
    }
    if let Some(r) = &d.reason {
        let _ = writeln!(o, "  {r}");
    }
    o
}
