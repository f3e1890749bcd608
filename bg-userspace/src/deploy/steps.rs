//! A progressive deployment's steps (`--steps`, `--pause`): before the
//! switch, green takes a growing share of senders, and each step is watched
//! on real traffic. Any failure takes every sender back to the old colour
//! (weight 0) and runs the rollback hook, as a failed bake does.
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::{
    bake::{BakeLook, roll_back, verdict},
    controller::{Deployer, End},
};
use crate::{
    core::{OpError, OpResult},
    model::{Deployment, Pause, PerColour, Phase, Progressive, RollbackReason, StepLook, Weight},
};

/// Runs the steps of `d` from the first; returns once the last one held.
pub(super) async fn run(
    deployer: &Deployer,
    d: &Deployment,
    health: &mut watch::Receiver<u64>,
) -> Result<(), End> {
    let Some(plan) = d.progressive.clone() else {
        return Ok(());
    };
    for (i, &weight) in plan.steps.iter().enumerate() {
        // The colour about to take more senders must be healthy now.
        let problems = deployer.problems(d.colour);
        if !problems.is_empty() {
            let reason = format!(
                "{} not healthy before the {weight} step: {}",
                d.colour,
                problems.join("; ")
            );
            return Err(back(deployer, d, i > 0, RollbackReason::Health, reason).await);
        }
        if let Err(e) = deployer.split(d, weight) {
            let reason = format!("the {weight} step was refused: {e}");
            return Err(back(deployer, d, i > 0, RollbackReason::Health, reason).await);
        }
        deployer.note_step(i, None);
        deployer.set_phase(
            Phase::Shift,
            Some(format!(
                "step {} of {}: {} takes {weight} of senders; watching {}",
                i + 1,
                plan.steps.len(),
                d.colour,
                match plan.pause {
                    Pause::Seconds(s) => format!("for {s} s"),
                    Pause::Indefinite => "until `bgctl promote`".to_owned(),
                }
            )),
        );
        let look = watch_step(deployer, d, weight, plan.pause, health).await?;
        log::info!(
            "deployment {}: the {weight} step held ({} packets to {}, {} to {} in {} s{})",
            d.id,
            look.packets.get(d.colour),
            d.colour,
            look.packets.get(d.from),
            d.from,
            look.watched_s,
            if look.promoted { ", promoted" } else { "" }
        );
        deployer.note_step(i, Some(look));
    }
    Ok(())
}

/// Watches one step until its pause is over or it is promoted; a verdict
/// (an abort, a backend found down, failed redirects or kernel drops)
/// takes every sender back.
async fn watch_step(
    deployer: &Deployer,
    d: &Deployment,
    weight: Weight,
    pause: Pause,
    health: &mut watch::Receiver<u64>,
) -> Result<StepLook, End> {
    let started = Instant::now();
    let redirects_before = deployer.failed_redirects();
    let packets_before = deployer.packets();
    let deadline = match pause {
        Pause::Seconds(s) => Some(started + Duration::from_secs(s)),
        Pause::Indefinite => None,
    };
    loop {
        if deployer.lost() {
            return Err(End(Phase::Failed, "another agent took over".into()));
        }
        let look = BakeLook::now(deployer, d.colour, redirects_before);
        if let Some((why, reason)) = verdict(d.colour, &look) {
            let reason = match why {
                RollbackReason::Abort => format!("aborted by the operator at the {weight} step"),
                _ => format!("at the {weight} step: {reason}"),
            };
            return Err(back(deployer, d, true, why, reason).await);
        }
        let promoted = deployer.take_promotion();
        let over = deadline.is_some_and(|t| Instant::now() >= t);
        if promoted || over {
            let now = deployer.packets();
            return Ok(StepLook {
                weight,
                packets: PerColour {
                    blue: now.blue.saturating_sub(packets_before.blue),
                    green: now.green.saturating_sub(packets_before.green),
                },
                watched_s: started.elapsed().as_secs(),
                promoted: promoted && !over,
            });
        }
        let left = deadline.map_or(Duration::from_millis(100), |t| {
            t.saturating_duration_since(Instant::now())
        });
        deployer
            .wait_event(health, left.min(Duration::from_millis(100)))
            .await;
    }
}

/// Every sender back on the old colour, the rollback hook run; before
/// the first step moved anyone, the deployment just fails.
async fn back(
    deployer: &Deployer,
    d: &Deployment,
    moved: bool,
    why: RollbackReason,
    reason: String,
) -> End {
    if !moved {
        return End(Phase::Failed, format!("{reason}; nothing moved"));
    }
    roll_back(deployer, d, why, reason).await
}

/// `bgctl promote` and the record of each step.
impl Deployer {
    /// `bgctl promote`: ends the pause of a progressive deployment's step
    /// in force; the next step (or the switch) follows.
    pub fn promote(&self) -> OpResult<Deployment> {
        let d = match self.snapshot() {
            Some(d) if !d.phase.is_terminal() => d,
            _ => return Err(OpError::not_found("no deployment is running")),
        };
        let step = d.progressive.as_ref().and_then(|p| p.step);
        let (Phase::Shift, Some(step)) = (d.phase, step) else {
            return Err(OpError::refused(format!(
                "deployment {} is in phase {:?}, not paused at a step: promote moves a progressive deployment (`deploy --steps`) on to its next step",
                d.id, d.phase
            )));
        };
        if let Some(fleet) = self.fleet()
            && !self.running()
        {
            // Another agent runs it: it promotes on seeing the request.
            fleet.request_promote(&d.id, step)?;
            return Ok(d);
        }
        self.promote_step(step);
        Ok(d)
    }

    /// Promotes step `step` if it is the one in force (a request for a
    /// step already passed does nothing).
    pub fn promote_step(&self, step: usize) {
        let current = self
            .snapshot()
            .and_then(|d| d.progressive.and_then(|p| p.step));
        if current == Some(step) {
            self.promote.store(true, Ordering::SeqCst);
            self.wake.notify_waiters();
        }
    }

    /// Whether the step in force was promoted (once).
    pub(super) fn take_promotion(&self) -> bool {
        self.promote.swap(false, Ordering::SeqCst)
    }

    /// Records that step `step` is in force (`look`: None) or held (with
    /// what it saw), and saves the record.
    pub(super) fn note_step(&self, step: usize, look: Option<StepLook>) {
        if self.lost() {
            return;
        }
        let d = {
            let mut cur = self.current.lock().expect("poisoned");
            let Some(p) = cur.as_mut().and_then(|d| d.progressive.as_mut()) else {
                return;
            };
            match look {
                None => {
                    p.step = Some(step);
                    self.promote.store(false, Ordering::SeqCst);
                }
                Some(look) => p.looks.push(look),
            }
            cur.clone()
        };
        if let Some(d) = d {
            self.save(&d);
        }
    }
}

/// The plan of a deployment from its request: `steps` (green's weights,
/// rising, a final 100 % dropped) and `pause` (default: `bake_s`). No
/// steps: all senders at once.
pub fn plan(
    steps: Vec<Weight>,
    pause: Option<Pause>,
    bake_s: u64,
) -> Result<Option<Progressive>, String> {
    let mut steps = steps;
    if steps.last() == Some(&Weight::FULL) {
        steps.pop();
    }
    if steps.is_empty() {
        return match pause {
            Some(p) => Err(format!(
                "pause {p} without steps: a pause is the time each step of a progressive deployment is watched; give the steps too, e.g. --steps 1,10,50,100"
            )),
            None => Ok(None),
        };
    }
    for pair in steps.windows(2) {
        if pair[1] <= pair[0] {
            return Err(format!(
                "steps {} then {}: each step must give green more than the one before",
                pair[0], pair[1]
            ));
        }
    }
    if steps[0] == Weight::NONE || steps.iter().any(|w| *w >= Weight::FULL) {
        return Err(
            "steps are green's share above 0% and below 100% (the switch to 100% follows the last)"
                .to_owned(),
        );
    }
    Ok(Some(Progressive {
        steps,
        pause: pause.unwrap_or(Pause::Seconds(bake_s.max(1))),
        step: None,
        looks: Vec::new(),
    }))
}

/// `--steps`: percentages ("1,10,50,100"), each rising; a final 100 % is
/// the switch and may be left out.
pub fn parse_steps(items: &[String]) -> Result<Vec<Weight>, String> {
    let mut steps = Vec::new();
    for item in items {
        let t = item.trim();
        let pct = if t.ends_with('%') {
            t.to_owned()
        } else {
            format!("{t}%")
        };
        let w: Weight = pct.parse().map_err(|e| format!("--steps {item:?}: {e}"))?;
        if w == Weight::NONE {
            return Err(format!(
                "--steps {item:?}: a step of 0% moves nothing; steps are green's share in percent, above 0 and up to 100, e.g. 1,10,50,100"
            ));
        }
        if let Some(last) = steps.last()
            && w <= *last
        {
            return Err(format!(
                "--steps {item:?} comes after {last}: each step must give green more than the one before, e.g. 1,10,50,100"
            ));
        }
        steps.push(w);
    }
    if steps.last() == Some(&Weight::FULL) {
        steps.pop();
    }
    if steps.is_empty() && !items.is_empty() {
        return Err(
            "--steps 100 is the switch alone: give the shares before it, e.g. 1,10,50,100"
                .to_owned(),
        );
    }
    Ok(steps)
}

/// `--pause`: "60s", "5m", "90" (seconds) or "indefinite".
pub fn parse_pause(s: &str) -> Result<Pause, String> {
    let t = s.trim();
    if t == "indefinite" {
        return Ok(Pause::Indefinite);
    }
    let (num, unit) = match t.strip_suffix('s') {
        Some(n) => (n, 1),
        None => match t.strip_suffix('m') {
            Some(n) => (n, 60),
            None => match t.strip_suffix('h') {
                Some(n) => (n, 3600),
                None => (t, 1),
            },
        },
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 && n <= 7 * 86_400 / unit => Ok(Pause::Seconds(n * unit)),
        _ => Err(format!(
            "--pause {s:?}: accepted: a duration from 1s to 7 days (\"60s\", \"5m\", \"2h\", or seconds), or \"indefinite\" to wait for `bgctl promote`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn steps_are_rising_percentages_without_the_final_switch() {
        let steps = parse_steps(&strings(&["1", "10", "50", "100"])).unwrap();
        let bp: Vec<u16> = steps.iter().map(|w| w.bp()).collect();
        assert_eq!(bp, [100, 1000, 5000]);
        let steps = parse_steps(&strings(&["0.5%", "25"])).unwrap();
        assert_eq!(steps.iter().map(|w| w.bp()).collect::<Vec<_>>(), [50, 2500]);
        for bad in [
            &["10", "5"][..],
            &["0"],
            &["100"],
            &["150"],
            &["x"],
            &["10", "10"],
        ] {
            let e = parse_steps(&strings(bad)).unwrap_err();
            assert!(e.starts_with("--steps"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn pauses_are_durations_or_indefinite() {
        assert_eq!(parse_pause("60s").unwrap(), Pause::Seconds(60));
        assert_eq!(parse_pause("5m").unwrap(), Pause::Seconds(300));
        assert_eq!(parse_pause("90").unwrap(), Pause::Seconds(90));
        assert_eq!(parse_pause("indefinite").unwrap(), Pause::Indefinite);
        for bad in ["0s", "-1", "soon", "8d", "1000h"] {
            assert!(
                parse_pause(bad).unwrap_err().contains("indefinite"),
                "{bad}"
            );
        }
    }
}
