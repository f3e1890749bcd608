//! After the switch: the bake, where a probe result or a failed redirect
//! becomes a rollback (`verdict`), then the time the old colour is kept
//! warm. A rollback flips back at once, then runs the rollback hook.
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{
    HOOK_TIMEOUT,
    controller::{Deployer, End},
    hooks,
};
use crate::model::{Colour, Deployment, Phase, RollbackReason};

/// What the bake sees at one look.
pub struct BakeLook {
    pub aborted: bool,
    /// Backends of the new colour found down.
    pub failures: Vec<String>,
    /// Failed redirects since the bake began.
    pub new_failed_redirects: u64,
}

impl BakeLook {
    /// What `colour` looks like now, with redirects failed since
    /// `redirects_before`.
    pub(super) fn now(deployer: &Deployer, colour: Colour, redirects_before: u64) -> Self {
        Self {
            aborted: deployer.aborted(),
            failures: deployer.failures(colour),
            new_failed_redirects: deployer.failed_redirects().saturating_sub(redirects_before),
        }
    }
}

/// The rollback decision: whether, and why, to go back. Only backends found
/// down count: after an agent restart the probes start from unknown, which
/// is no reason to roll back.
pub fn verdict(colour: Colour, look: &BakeLook) -> Option<(RollbackReason, String)> {
    if look.aborted {
        Some((
            RollbackReason::Abort,
            "aborted by the operator after the switch".to_owned(),
        ))
    } else if !look.failures.is_empty() {
        Some((
            RollbackReason::Health,
            format!("{colour} failed during bake: {}", look.failures.join("; ")),
        ))
    } else if look.new_failed_redirects > 0 {
        Some((
            RollbackReason::RedirectErrors,
            format!("redirect failures on {colour} during bake"),
        ))
    } else {
        None
    }
}

/// Watches the new colour for `bake_s`; rolls back on the first verdict.
pub(super) async fn bake(
    deployer: &Deployer,
    d: &Deployment,
    health: &mut watch::Receiver<u64>,
) -> Result<(), End> {
    let redirects_before = deployer.failed_redirects();
    let deadline = Instant::now() + Duration::from_secs(deployer.core().config().deploy.bake_s);
    loop {
        if deployer.lost() {
            return Err(End(Phase::Failed, "another agent took over".into()));
        }
        let look = BakeLook::now(deployer, d.colour, redirects_before);
        if let Some((why, reason)) = verdict(d.colour, &look) {
            return Err(roll_back(deployer, d, why, reason).await);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        // Health changes wake this at once; the 100 ms bound is for the
        // redirect counters, which nothing announces.
        deployer
            .wait_event(health, left.min(Duration::from_millis(100)))
            .await;
    }
}

/// Keeps the old colour warm for `keep_warm_s`; an abort then still rolls
/// back.
pub(super) async fn keep_warm(
    deployer: &Deployer,
    d: &Deployment,
    health: &mut watch::Receiver<u64>,
) -> Result<(), End> {
    let keep_warm_s = deployer.core().config().deploy.keep_warm_s;
    deployer.set_phase(
        Phase::Complete,
        Some(format!("keeping {} warm for {keep_warm_s} s", d.from)),
    );
    let deadline = Instant::now() + Duration::from_secs(keep_warm_s);
    while Instant::now() < deadline {
        if deployer.lost() {
            return Err(End(Phase::Failed, "another agent took over".into()));
        }
        if deployer.aborted() {
            return Err(roll_back(
                deployer,
                d,
                RollbackReason::Abort,
                "aborted by the operator while the old colour was warm".into(),
            )
            .await);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        deployer
            .wait_event(health, left.min(Duration::from_millis(200)))
            .await;
    }
    Ok(())
}

/// Flips back to the deployment's `from` at once (every sender, ending a
/// split), then runs the rollback hook.
pub(super) async fn roll_back(
    deployer: &Deployer,
    d: &Deployment,
    why: RollbackReason,
    reason: String,
) -> End {
    let core = deployer.core();
    if let Err(e) = deployer.switch(d.from, Some(why), true) {
        return End(
            Phase::RolledBack,
            format!("{reason}; the flip back failed: {e:#}"),
        );
    }
    if let Some(hook) = &core.config().deploy.rollback
        && let Err(e) = hooks::run_hook("rollback", hook, d, HOOK_TIMEOUT).await
    {
        log::warn!("deployment {}: {e}", d.id);
    }
    End(Phase::RolledBack, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(aborted: bool, failures: &[&str], redirects: u64) -> BakeLook {
        BakeLook {
            aborted,
            failures: failures.iter().map(|f| (*f).to_owned()).collect(),
            new_failed_redirects: redirects,
        }
    }

    #[test]
    fn a_quiet_bake_keeps_the_new_colour() {
        assert_eq!(verdict(Colour::Green, &look(false, &[], 0)), None);
    }

    #[test]
    fn each_failure_rolls_back_with_its_reason() {
        let reason = |l: BakeLook| verdict(Colour::Green, &l).map(|(r, _)| r);
        assert_eq!(
            reason(look(false, &["svc 198.18.2.2:514: refused"], 0)),
            Some(RollbackReason::Health)
        );
        assert_eq!(
            reason(look(false, &[], 1)),
            Some(RollbackReason::RedirectErrors)
        );
        assert_eq!(reason(look(true, &[], 0)), Some(RollbackReason::Abort));
        // The operator's abort is what the history should say, whatever else
        // went wrong at the same time.
        assert_eq!(
            reason(look(true, &["down"], 5)),
            Some(RollbackReason::Abort)
        );
    }

    #[test]
    fn the_reason_names_the_colour_and_the_failed_backends() {
        let (_, text) = verdict(Colour::Blue, &look(false, &["a down", "b down"], 0)).unwrap();
        assert_eq!(text, "blue failed during bake: a down; b down");
    }
}
