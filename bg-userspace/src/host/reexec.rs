//! The agent re-executing itself with its own arguments (a reload). The
//! pid stays, so the service manager and NOTIFY_SOCKET stay. Descriptors
//! are close-on-exec, so the new image takes the pin lock afresh, as a
//! restart would, but the listening sockets are handed over (their fd
//! numbers in the environment, as systemd's socket activation does): a
//! client that connects while the new image starts waits in the backlog
//! and is answered, instead of finding nobody there. The data path,
//! pinned, never notices.
use std::{
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::process::CommandExt as _,
    },
    path::{Path, PathBuf},
};

/// A listener handed to the next image: the environment variable that
/// carries its fd number, and the fd.
pub struct Handover<'a> {
    pub var: &'static str,
    pub fd: &'a OwnedFd,
}

/// The binary to run: the one running, or the one installed in its place
/// since (a package upgrade leaves "/usr/bin/bgctl (deleted)" here).
pub fn current_binary() -> PathBuf {
    match std::fs::read_link("/proc/self/exe") {
        Ok(path) => match path.to_string_lossy().strip_suffix(" (deleted)") {
            Some(installed) => PathBuf::from(installed),
            None => path,
        },
        Err(_) => std::env::args_os()
            .next()
            .map_or_else(|| PathBuf::from("bgctl"), PathBuf::from),
    }
}

/// Whether `path` is a file this process may execute.
pub fn executable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a valid C string.
    path.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// Replaces this process with a fresh agent that inherits `keep`;
/// returns only on failure.
pub fn reexec(keep: &[Handover]) -> std::io::Error {
    let mut command = std::process::Command::new(current_binary());
    command.args(std::env::args_os().skip(1));
    for h in keep {
        let fd = h.fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own; clearing FD_CLOEXEC only.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return std::io::Error::last_os_error();
        }
        command.env(h.var, fd.to_string());
    }
    command.exec()
}

/// The descriptor an earlier image handed over in `var`, if it did and it
/// is a socket. Not yet owned: the number alone could be stale (a variable
/// left in the environment of a process started otherwise), so the caller
/// checks it is the very socket it would bind, then `adopt`s it.
pub fn inherited(var: &str) -> Option<RawFd> {
    let fd: RawFd = std::env::var(var).ok()?.parse().ok()?;
    if fd < 3 {
        return None;
    }
    // SAFETY: fstat into a zeroed struct, on a number that may be closed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    (ok && st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(fd)
}

/// Takes an inherited descriptor the caller has checked, close-on-exec
/// again so hooks and probes never inherit it.
///
/// # Safety
/// `fd` must be open and owned by nothing else in this process.
pub unsafe fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: fcntl on an open descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the caller's promise.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
