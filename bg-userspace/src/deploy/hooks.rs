//! Deployment hooks: operator commands run at the switch and on rollback,
//! with the deployment in their environment.
use std::time::Duration;

use crate::model::Deployment;

/// Runs a hook command with the deployment in its environment. Ok when it
/// exits 0 within `timeout`; on timeout its whole process group is killed.
pub async fn run_hook(
    name: &str,
    command: &[String],
    d: &Deployment,
    timeout: Duration,
) -> Result<(), String> {
    let env = [
        ("BG_HOOK", name.to_owned()),
        ("BG_COLOUR", d.colour.to_string()),
        ("BG_FROM", d.from.to_string()),
        ("BG_VERSION", d.version.clone().unwrap_or_default()),
        ("BG_DEPLOYMENT_ID", d.id.clone()),
    ];
    crate::host::command::run(
        command,
        &env,
        timeout,
        crate::host::command::Output::Inherit,
    )
    .await
    .map_err(|e| format!("{name} hook {e}"))
}
