//! The control socket: a Unix socket, mode 0600, one JSON request per line
//! and one JSON answer per line (`protocol.rs`).
use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{Api, dispatch::error, protocol::Request};
use crate::{core::ErrorKind, model::Actor};

/// Longest request line accepted on the control socket.
const MAX_REQUEST: usize = 64 * 1024;

/// Accepts connections until the task is dropped; each is served on its
/// own task, and counted from here (`Api::settle`), before that task runs,
/// so a stop that ends this loop cannot miss one it took.
pub async fn serve(listener: UnixListener, api: Arc<Api>) {
    let mut last_accept_error: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let open = Open::enter(api.clone());
                tokio::spawn(serve_connection(open, stream));
            }
            Err(e) => {
                // Out of descriptors, say: logging every retry would flood
                // the log. Once a second, and back off.
                if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    log::warn!("control socket accept: {e}; backing off");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Refuses to start when another agent answers on the socket; removes a
/// stale socket file left by a killed one.
pub async fn check_socket_free(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "--socket = {}: another agent is serving this socket; stop it, or give this one its own --socket",
            path.display()
        );
    }
    std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))
}

/// The variable a reload hands the control socket's listener over in.
pub const HANDOVER: &str = "BGCTL_CONTROL_FD";

/// The listener a reloading agent handed over, when it is the one for
/// `path`: connections that arrived during the restart wait in its
/// backlog and are answered.
pub fn inherit(path: &Path) -> anyhow::Result<Option<UnixListener>> {
    use std::os::fd::FromRawFd as _;
    let Some(fd) = crate::host::reexec::inherited(HANDOVER) else {
        return Ok(None);
    };
    // Looked at without owning it: a stale number may be another's fd.
    // SAFETY: an open socket (checked); ManuallyDrop never closes it.
    let probe =
        std::mem::ManuallyDrop::new(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) });
    let ours = probe
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .is_some_and(|p| p == path);
    if !ours {
        return Ok(None);
    }
    // SAFETY: checked to be the listener an earlier image bound at `path`.
    let std = std::os::unix::net::UnixListener::from(unsafe { crate::host::reexec::adopt(fd) });
    std.set_nonblocking(true)?;
    Ok(Some(UnixListener::from_std(std)?))
}

pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

async fn serve_connection(open: Open, stream: UnixStream) {
    let api = &open.0;
    // The kernel's word for who connected (SO_PEERCRED), for the history.
    let by = stream.peer_cred().ok().map(|c| Actor::Socket {
        uid: c.uid(),
        pid: c.pid(),
    });
    let (read, mut write) = stream.into_split();
    // Bounds what one connection may send in all, so a client that never
    // sends a newline cannot grow the line buffer without limit.
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64 * 16)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let response = if line.len() > MAX_REQUEST {
            error(
                ErrorKind::Refused,
                format!("request longer than {MAX_REQUEST} bytes"),
            )
        } else {
            match serde_json::from_str::<Request>(&line) {
                // Requests make syscalls (and status walks the flow table):
                // keep them off the async workers' hot loop.
                Ok(req) => tokio::task::block_in_place(|| api.handle(by, req)),
                Err(e) => error(ErrorKind::Refused, format!("bad request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Counts a connection from when it is accepted until it closes
/// (`Api::settle`): a client that connected has sent, or is sending, a
/// request it expects an answer to.
struct Open(Arc<Api>);

impl Open {
    fn enter(api: Arc<Api>) -> Self {
        api.connections.fetch_add(1, Ordering::AcqRel);
        Self(api)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
