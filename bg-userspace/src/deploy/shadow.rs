//! The shadow phase (`[deploy] shadow_s`): before the synthetic gate, live
//! UDP from a share of senders is copied to the new colour for a while,
//! as the old colour goes on serving every datagram. It fails, and nothing
//! moves, when the new colour turns unhealthy, answers copies with ICMP
//! errors, or (with `shadow_count`) accepted fewer than
//! `min_delivered_ratio` of them.
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::controller::{Deployer, End};
use crate::{
    config::DeploySettings,
    host::command,
    model::{Deployment, Phase, Protocol, ShadowLook, ShadowResult, ShadowStatus},
};

/// Longest a `shadow_count` command may run.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a count short of the copies is read again: a collector counts
/// (or flushes its statistics) a little after it received.
const COUNT_SETTLE: Duration = Duration::from_secs(5);

/// Runs the shadow phase of `d`, when it has one.
pub(super) async fn run(
    deployer: &Deployer,
    d: &Deployment,
    health: &mut watch::Receiver<u64>,
) -> Result<(), End> {
    let core = deployer.core();
    let settings = core.config().deploy.clone();
    let udp: Vec<_> = core
        .config()
        .services
        .iter()
        .filter(|s| s.protocol == Protocol::Udp)
        .map(|s| (s.name.clone(), core.shadow_target(s, d.colour)))
        .collect();
    if settings.shadow_s == 0 || udp.is_empty() {
        return Ok(());
    }
    let fail = |why: String| End(Phase::Failed, format!("shadow: {why}; nothing moved"));
    let before = counts(&settings, d, &udp).await.map_err(fail)?;
    core.start_shadow(d.colour, settings.shadow_bp, settings.shadow_max_pps)
        .map_err(|e| fail(e.to_string()))?;
    // In the record once the copies run: "shadow" means they do.
    deployer.set_phase(
        Phase::Shadow,
        Some(format!(
            "copying live UDP of {:.2} % of senders to {} for {} s",
            f64::from(settings.shadow_bp) / 100.0,
            d.colour,
            settings.shadow_s
        )),
    );
    let watched = watch(deployer, d, settings.shadow_s, health).await;
    // Every way out ends the copies, before anything else.
    let last = core.stop_shadow();
    watched?;
    let last = last
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("the shadow ended early".into()))?;
    let mut results = judge(&last, &settings);
    if settings.shadow_count.is_some() {
        let deadline = Instant::now() + COUNT_SETTLE;
        loop {
            let after = counts(&settings, d, &udp).await.map_err(fail)?;
            results = judge(&last, &settings);
            accept(&mut results, &before, &after, settings.min_delivered_ratio);
            if results.iter().all(|r| r.passed) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    note(deployer, results.clone());
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} {}: {}", r.look.service, r.look.target, r.detail))
        .collect();
    if !failed.is_empty() {
        return Err(fail(failed.join("; ")));
    }
    Ok(())
}

/// Watches the running shadow for `secs`, noting it live; the new colour
/// turning unhealthy, an ICMP error, an abort or a takeover end it early.
async fn watch(
    deployer: &Deployer,
    d: &Deployment,
    secs: u64,
    health: &mut watch::Receiver<u64>,
) -> Result<(), End> {
    let core = deployer.core();
    let fail = |why: String| End(Phase::Failed, format!("shadow: {why}; nothing moved"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut noted = Instant::now() - Duration::from_secs(1);
    loop {
        deployer.check_abort_before_switch()?;
        let problems = deployer.problems(d.colour);
        if !problems.is_empty() {
            return Err(fail(format!(
                "{} not healthy under shadow traffic: {}",
                d.colour,
                problems.join("; ")
            )));
        }
        let look = core
            .shadow_status()
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("the shadow ended early".into()))?;
        let refused: Vec<String> = look
            .services
            .iter()
            .filter(|s| s.icmp_errors > 0)
            .map(refused)
            .collect();
        if !refused.is_empty() {
            note(deployer, judge(&look, &core.config().deploy));
            return Err(fail(refused.join("; ")));
        }
        if noted.elapsed() >= Duration::from_secs(1) {
            note(deployer, judge(&look, &core.config().deploy));
            noted = Instant::now();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        deployer
            .wait_event(health, left.min(Duration::from_millis(100)))
            .await;
    }
}

fn refused(s: &ShadowLook) -> String {
    format!(
        "{} {}: answered {} cop{} with ICMP errors (the kernel rate-limits them: each stands for many refused datagrams)",
        s.service,
        s.target,
        s.icmp_errors,
        if s.icmp_errors == 1 { "y" } else { "ies" }
    )
}

/// The verdict on what the data path and the ICMP errors saw.
fn judge(look: &ShadowStatus, _settings: &DeploySettings) -> Vec<ShadowResult> {
    look.services
        .iter()
        .map(|s| {
            let c = &s.counts;
            let mut notes = Vec::new();
            let mut passed = true;
            if s.icmp_errors > 0 {
                passed = false;
                notes.push(refused(s).split_once(": ").map(|(_, r)| r.to_owned()).unwrap_or_default());
            }
            if c.copied == 0 && c.lost() > 0 {
                passed = false;
                notes.push(format!(
                    "no copy could be sent ({} without a route or neighbour, {} refused by the kernel, {} without metadata, {} past shadow_max_pps)",
                    c.no_route, c.copy_failed, c.no_metadata, c.over_budget
                ));
            } else if c.copied == 0 {
                notes.push(
                    "no live datagram from a sampled sender arrived: the shadow proved nothing here"
                        .to_owned(),
                );
            } else if c.lost() > 0 {
                notes.push(format!(
                    "{} of {} sampled datagrams got no copy ({} without a route or neighbour, {} refused by the kernel, {} without metadata, {} past shadow_max_pps); their originals went on",
                    c.lost(),
                    c.copied + c.lost(),
                    c.no_route,
                    c.copy_failed,
                    c.no_metadata,
                    c.over_budget
                ));
            }
            ShadowResult {
                look: s.clone(),
                accepted: None,
                passed,
                detail: notes.join("; "),
                mechanism: look.mechanism.clone(),
            }
        })
        .collect()
}

/// Holds the growth of each target's own count to `min_ratio` of the
/// copies sent to it.
fn accept(results: &mut [ShadowResult], before: &[u64], after: &[u64], min_ratio: f64) {
    for (r, (b, a)) in results.iter_mut().zip(before.iter().zip(after)) {
        let accepted = a.saturating_sub(*b);
        r.accepted = Some(accepted);
        let copied = r.look.counts.copied;
        if copied == 0 {
            continue;
        }
        let ratio = accepted as f64 / copied as f64;
        if ratio < min_ratio {
            r.passed = false;
            let note = format!(
                "accepted {accepted} of {copied} copies ({:.1} %), below min_delivered_ratio {}",
                ratio.min(1.0) * 100.0,
                min_ratio
            );
            r.detail = if r.detail.is_empty() {
                note
            } else {
                format!("{}; {note}", r.detail)
            };
        }
    }
}

/// Each UDP service's count from `shadow_count` (empty without one).
async fn counts(
    settings: &DeploySettings,
    d: &Deployment,
    services: &[(String, std::net::SocketAddr)],
) -> Result<Vec<u64>, String> {
    let Some(cmd) = &settings.shadow_count else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(services.len());
    for (name, target) in services {
        let env = [
            ("BG_SERVICE", name.clone()),
            ("BG_TARGET", target.to_string()),
            ("BG_COLOUR", d.colour.to_string()),
            ("BG_DEPLOYMENT_ID", d.id.clone()),
        ];
        let text = command::capture(cmd, &env, COUNT_TIMEOUT)
            .await
            .map_err(|e| format!("shadow_count for {name}: {e}"))?;
        out.push(parse_count(&text).ok_or_else(|| {
            format!(
                "shadow_count for {name} printed {:?}; expected a count of accepted messages (a whole number, the last word printed)",
                text.chars().take(80).collect::<String>()
            )
        })?);
    }
    Ok(out)
}

/// The last word printed, as a whole number.
fn parse_count(text: &str) -> Option<u64> {
    text.split_whitespace().last()?.parse().ok()
}

/// Puts the shadow's verdicts in the record, for the dashboard and status.
fn note(deployer: &Deployer, results: Vec<ShadowResult>) {
    let d = {
        let mut cur = deployer.current.lock().expect("poisoned");
        let Some(d) = cur.as_mut() else { return };
        d.shadow = results;
        d.clone()
    };
    deployer.save(&d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Colour, ShadowCounts};

    fn look(copied: u64, no_route: u64, icmp_errors: u64) -> ShadowStatus {
        ShadowStatus {
            colour: Colour::Green,
            share_bp: 10_000,
            mechanism: "xdp-broadcast".into(),
            started_unix_ms: 0,
            services: vec![ShadowLook {
                service: "syslog".into(),
                target: "198.18.2.2:5514".parse().unwrap(),
                source: "198.18.2.1:40000".parse().unwrap(),
                counts: ShadowCounts {
                    copied,
                    no_route,
                    ..Default::default()
                },
                icmp_errors,
            }],
        }
    }

    #[test]
    fn icmp_errors_and_unsent_copies_fail_and_silence_is_said() {
        let s = DeploySettings::default();
        let r = &judge(&look(100, 0, 0), &s)[0];
        assert!(r.passed && r.detail.is_empty(), "{r:?}");
        let r = &judge(&look(100, 0, 2), &s)[0];
        assert!(
            !r.passed && r.detail.contains("2 copies with ICMP errors"),
            "{r:?}"
        );
        let r = &judge(&look(0, 7, 0), &s)[0];
        assert!(!r.passed && r.detail.contains("7 without a route"), "{r:?}");
        let r = &judge(&look(0, 0, 0), &s)[0];
        assert!(r.passed && r.detail.contains("proved nothing"), "{r:?}");
        let r = &judge(&look(90, 10, 0), &s)[0];
        assert!(r.passed && r.detail.contains("10 of 100"), "{r:?}");
    }

    #[test]
    fn the_targets_count_is_held_to_the_ratio() {
        let s = DeploySettings::default();
        let mut r = judge(&look(100, 0, 0), &s);
        accept(&mut r, &[1000], &[1100], 1.0);
        assert!(r[0].passed, "{:?}", r[0]);
        assert_eq!(r[0].accepted, Some(100));
        let mut r = judge(&look(100, 0, 0), &s);
        accept(&mut r, &[1000], &[1050], 0.9);
        assert!(
            !r[0].passed && r[0].detail.contains("accepted 50 of 100"),
            "{:?}",
            r[0]
        );
        // A count that went backwards (the collector restarted) is 0.
        let mut r = judge(&look(100, 0, 0), &s);
        accept(&mut r, &[1000], &[10], 0.5);
        assert_eq!(r[0].accepted, Some(0));
        assert!(!r[0].passed);
    }

    #[test]
    fn counts_are_the_last_word() {
        assert_eq!(parse_count("submitted=12 \n 345\n"), Some(345));
        assert_eq!(parse_count(""), None);
        assert_eq!(parse_count("12 lines"), None);
    }
}
