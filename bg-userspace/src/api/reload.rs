//! `bgctl reload` and SIGHUP. The config file is re-read and checked the
//! way a start checks it; refused, the running agent goes on unchanged.
//! Accepted, the agent re-executes itself with it (`host::reexec`): a
//! restart in place, which the pinned data path never notices. Either way
//! the history records it.
use std::{path::PathBuf, sync::Arc};

use tokio::sync::Notify;

use crate::{
    config::{Config, diff},
    core::{Core, OpError},
    deploy::Deployer,
    host::reexec,
    model::{Event, ReloadReport},
};

pub struct Reloader {
    path: PathBuf,
    wanted: Notify,
}

impl Reloader {
    pub fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            path,
            wanted: Notify::new(),
        })
    }

    /// Checks the file and, if it changes anything, asks the agent to
    /// re-execute itself (`requested`). `by` names who asked, for the
    /// history.
    pub fn reload(
        &self,
        core: &Core,
        deploy: &Deployer,
        by: &str,
    ) -> Result<ReloadReport, OpError> {
        let checked = self.check(core, deploy);
        let (applied, detail) = match &checked {
            Ok(r) if r.applying => (true, r.changes.join("; ")),
            Ok(_) => (false, "nothing changed".to_owned()),
            Err(e) => (false, e.message.clone()),
        };
        if applied {
            log::info!("config reload ({by}): {detail}; re-executing the agent");
        } else {
            log::warn!("config reload ({by}) not applied: {detail}");
        }
        // A reload that changes nothing is not worth a history line.
        if applied || checked.is_err() {
            core.history().append(&Event::Reload {
                applied,
                by: by.to_owned(),
                detail,
            });
        }
        if applied {
            self.wanted.notify_one();
        }
        checked
    }

    fn check(&self, core: &Core, deploy: &Deployer) -> Result<ReloadReport, OpError> {
        let kept = "; the running config stays";
        if let Some(d) = deploy.snapshot().filter(|d| !d.phase.is_terminal()) {
            return Err(OpError::refused(format!(
                "deployment {} to {} is in phase {}: a reload restarts the agent, which would abort it; reload after it ends, or `bgctl abort` it first{kept}",
                d.id,
                d.colour,
                d.phase.as_str()
            )));
        }
        let new = Config::load(&self.path).map_err(|e| OpError::refused(format!("{e}{kept}")))?;
        // What a start refuses after the config, where the file can cause it.
        for extra in &new.tcp.reverse_nat_interfaces {
            crate::dataplane::if_index(extra).map_err(|e| {
                OpError::refused(format!(
                    "{}: tcp.reverse_nat_interfaces: {e}{kept}",
                    self.path.display()
                ))
            })?;
        }
        let binary = reexec::current_binary();
        if !reexec::executable(&binary) {
            return Err(OpError::refused(format!(
                "{} is not executable any more, so the agent cannot restart itself{kept}",
                binary.display()
            )));
        }
        let changes = diff::changes(core.config(), &new);
        Ok(ReloadReport {
            config: self.path.display().to_string(),
            applying: !changes.is_empty(),
            changes,
        })
    }

    /// Returns once a reload was accepted.
    pub async fn requested(&self) {
        self.wanted.notified().await
    }
}
