//! The agent re-executing itself with its own arguments (a reload). The
//! pid stays, so the service manager and NOTIFY_SOCKET stay; the process's
//! descriptors are close-on-exec, so the new image takes the pin lock, the
//! control socket and the HTTP port afresh, as a restart would. The data
//! path, pinned, never notices.
use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
};

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

/// Replaces this process with a fresh agent; returns only on failure.
pub fn reexec() -> std::io::Error {
    std::process::Command::new(current_binary())
        .args(std::env::args_os().skip(1))
        .exec()
}
