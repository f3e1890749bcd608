//! Runs an operator's command (a deployment hook or an exec probe) in its own
//! process group with a time limit. On timeout, or when the caller gives up,
//! the whole group is killed: a shell script's children never outlive it.
use std::{process::ExitStatus, time::Duration};

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program:?} exited with {status}")]
    Failed { program: String, status: ExitStatus },
    #[error("{program:?} timed out after {} ms", timeout.as_millis())]
    TimedOut { program: String, timeout: Duration },
}

impl CommandError {
    /// The spawn failed for a reason of this host (not the command's).
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            CommandError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Whether the command's output is kept (inherited) or discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Inherit,
    Discard,
}

/// Runs `argv` with `env` added; Ok when it exits 0 within `timeout`.
/// `argv` is never empty (the config validation refuses an empty command).
pub async fn run(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    output: Output,
) -> Result<(), CommandError> {
    exec(argv, env, timeout, Some(output)).await.map(drop)
}

/// As `run`, and returns what the command printed on stdout (its stderr
/// goes to the agent's).
pub async fn capture(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<String, CommandError> {
    let out = exec(argv, env, timeout, None).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `output` None: stdout is captured and returned.
async fn exec(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    output: Option<Output>,
) -> Result<Vec<u8>, CommandError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(argv.iter().skip(1))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        // Its own group, so the group can be killed with all it started.
        .process_group(0)
        .kill_on_drop(true);
    match output {
        Some(Output::Discard) => {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
        }
        Some(Output::Inherit) => {}
        None => {
            cmd.stdout(std::process::Stdio::piped());
        }
    }
    let child = cmd.spawn().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    let group = GroupGuard(child.id());
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(result) => {
            // Reaped: its pid, and so its group id, may be reused now.
            group.disarm();
            let done = result.map_err(|source| CommandError::Spawn {
                program: program.clone(),
                source,
            })?;
            let status = done.status;
            if status.success() {
                Ok(done.stdout)
            } else {
                Err(CommandError::Failed { program, status })
            }
        }
        Err(_) => {
            drop(group);
            Err(CommandError::TimedOut { program, timeout })
        }
    }
}

/// Kills the process group when dropped before the leader was reaped (the
/// unreaped leader keeps the group id from being reused).
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a negative pid signals that group; no memory
            // is involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(script: &str) -> Vec<String> {
        ["sh", "-c", script].map(String::from).to_vec()
    }

    /// Gone, or a zombie waiting for a reaper: either way no longer running.
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().chars().next())
            })
            .flatten()
            .is_some_and(|state| state != 'Z' && state != 'X')
    }

    #[tokio::test]
    async fn a_timeout_kills_what_the_command_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let err = run(
            &argv(&script),
            &[],
            Duration::from_millis(300),
            Output::Discard,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !running(pid)
        });
        assert!(gone, "the script's child {pid} outlived the timeout");
    }

    #[tokio::test]
    async fn capture_returns_stdout_and_fails_on_exit_codes() {
        let out = capture(&argv("echo 42; echo x >&2"), &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out, "42\n");
        let err = capture(&argv("echo 1; exit 2"), &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exit status: 2"), "{err}");
    }

    #[tokio::test]
    async fn exit_codes_and_environment() {
        run(
            &argv("test \"$X\" = yes"),
            &[("X", "yes".into())],
            Duration::from_secs(5),
            Output::Discard,
        )
        .await
        .unwrap();
        let err = run(
            &argv("exit 3"),
            &[],
            Duration::from_secs(5),
            Output::Discard,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        let err = run(
            &["/nonexistent/bg-command".to_owned()],
            &[],
            Duration::from_secs(5),
            Output::Discard,
        )
        .await
        .unwrap_err();
        assert!(err.io().is_some(), "{err}");
    }
}
