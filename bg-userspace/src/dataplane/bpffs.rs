//! Where the pins live: a bpffs that outlives the agent.
//!
//! The data path survives the agent only through its pins. A bpffs mounted
//! inside a private mount namespace dies with the last process in it, and
//! every pin with it. `ip netns exec` makes exactly such a namespace (it
//! unshares the mounts and remounts /sys), so an agent started that way
//! would take the data path down with it. Before anything is pinned, the
//! agent therefore joins the mount namespace of the host (the outermost
//! ancestor process it may inspect), or refuses to start.
//!
//! Everything here runs before the agent starts a thread: a multithreaded
//! process cannot change its mount namespace.
use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Where bpffs is mounted by convention.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, Error)]
pub enum BpffsError {
    #[error(
        "--pin-root = {pin_root}: this agent runs in a private mount namespace (as `ip netns exec` makes), where {BPFFS} is not the host's bpffs. Pins made here would vanish when the agent exits, and the data path with them, so it refuses to start. Joining the host's mount namespace (that of pid {host_pid}) failed: {source}. Start it with `bgctl agent --netns NAME ...` or `nsenter --net=/run/netns/NAME bgctl agent ...` (both keep the host's mounts), or give it CAP_SYS_ADMIN and CAP_SYS_CHROOT so it can join the host's mounts itself"
    )]
    PrivateMounts {
        pin_root: PathBuf,
        host_pid: u32,
        source: io::Error,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "--netns = {name:?}: {source}; accepted: a name from `ip netns list` (a file in /run/netns) or a path to a network namespace file{known}"
    )]
    Netns {
        name: String,
        source: io::Error,
        known: String,
    },
}

/// What `join_host_mounts` did.
#[derive(Debug, PartialEq, Eq)]
pub enum MountNamespace {
    /// The agent already sees the host's mounts.
    Host,
    /// The agent ran in a private mount namespace whose pin root is the
    /// host's bpffs anyway (bind-mounted, or shared): nothing to do.
    SharedBpffs,
    /// The agent joined the mount namespace of this process.
    Joined { pid: u32 },
}

/// Makes sure pins under `pin_root` outlive this process: when it runs in a
/// private mount namespace whose bpffs is not the host's, it joins the
/// host's mount namespace. The working directory is kept, so relative
/// paths on the command line still mean what they meant.
pub fn join_host_mounts(pin_root: &Path) -> Result<MountNamespace, BpffsError> {
    let Some(host) = host_process() else {
        return Ok(MountNamespace::Host);
    };
    let ours = mount_ns_id(std::process::id()).map_err(|source| BpffsError::Io {
        path: "/proc/self/ns/mnt".into(),
        source,
    })?;
    if host.mount_ns == ours {
        return Ok(MountNamespace::Host);
    }
    if same_bpffs_as(pin_root, host.pid) {
        return Ok(MountNamespace::SharedBpffs);
    }
    setns_keeping_cwd(&host).map_err(|source| BpffsError::PrivateMounts {
        pin_root: pin_root.to_owned(),
        host_pid: host.pid,
        source,
    })?;
    Ok(MountNamespace::Joined { pid: host.pid })
}

/// `bgctl agent --netns NAME`: enter that network namespace (and nothing
/// else) before any thread exists, so every thread works in it.
pub fn enter_netns(name: &str) -> Result<(), BpffsError> {
    let path = if name.contains('/') {
        PathBuf::from(name)
    } else {
        Path::new("/run/netns").join(name)
    };
    let err = |source| BpffsError::Netns {
        name: name.to_owned(),
        source,
        known: known_netns(),
    };
    let file = File::open(&path).map_err(err)?;
    // SAFETY: setns with a valid fd, before other threads exist.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

fn known_netns() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (here: {})", names.join(", "))
    }
}

/// Mounts bpffs on /sys/fs/bpf when `pin_dir` lies below it and nothing is
/// mounted there yet. Only called where a mount persists: in the host's
/// mount namespace (see `join_host_mounts`), or one that shares its bpffs.
pub fn ensure_mounted(pin_dir: &Path) -> Result<(), BpffsError> {
    let bpffs = Path::new(BPFFS);
    if !pin_dir.starts_with(bpffs) || is_bpffs(bpffs) {
        return Ok(());
    }
    let src = CString::new("bpf").expect("static");
    let dst = CString::new(BPFFS).expect("static");
    // SAFETY: plain mount(2) with valid strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(BpffsError::Io {
            path: bpffs.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs into a zeroed struct.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == BPF_FS_MAGIC
    }
}

/// A process whose mount namespace is taken to be the host's.
struct HostProcess {
    pid: u32,
    mount_ns: u64,
    /// Held open: the namespace to join.
    ns_file: OwnedFd,
}

/// The host's mount namespace is PID 1's. Where PID 1 may not be inspected
/// (some sandboxes forbid it), kthreadd stands in for it: kernel threads
/// live in the initial mount namespace. Failing both, the outermost
/// ancestor that may be inspected: whoever ran `ip netns exec` ran it from
/// the host's mounts.
fn host_process() -> Option<HostProcess> {
    let mut candidates = vec![1u32];
    if parent_of(2) == Some(0) {
        candidates.push(2); // kthreadd: visible only in the initial PID namespace
    }
    let mut ancestors = Vec::new();
    let mut pid = std::process::id();
    while let Some(parent) = parent_of(pid).filter(|&p| p > 2) {
        ancestors.push(parent);
        pid = parent;
    }
    candidates.extend(ancestors.iter().rev());
    candidates.into_iter().find_map(|pid| {
        let path = format!("/proc/{pid}/ns/mnt");
        let file = File::open(&path).ok()?;
        let mount_ns = file.metadata().ok()?.ino();
        Some(HostProcess {
            pid,
            mount_ns,
            ns_file: file.into(),
        })
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn mount_ns_id(pid: u32) -> io::Result<u64> {
    let path = if pid == std::process::id() {
        "/proc/self/ns/mnt".to_owned()
    } else {
        format!("/proc/{pid}/ns/mnt")
    };
    std::fs::metadata(path).map(|m| m.ino())
}

/// Whether `pin_root` (or its nearest existing ancestor) is on a bpffs that
/// the host process sees at the same path: the same filesystem instance.
fn same_bpffs_as(pin_root: &Path, host_pid: u32) -> bool {
    let Some(existing) = pin_root.ancestors().find(|p| p.exists()) else {
        return false;
    };
    if !is_bpffs(existing) {
        return false;
    }
    let Ok(relative) = existing.strip_prefix("/") else {
        return false;
    };
    let theirs = Path::new(&format!("/proc/{host_pid}/root")).join(relative);
    match (std::fs::metadata(existing), std::fs::metadata(theirs)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn setns_keeping_cwd(host: &HostProcess) -> io::Result<()> {
    let cwd = File::open(".")?;
    // SAFETY: setns with a valid namespace fd; the caller is single-threaded.
    if unsafe { libc::setns(host.ns_file.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // setns moved us to the new namespace's root; go back where we were.
    // SAFETY: fchdir to a directory fd opened above.
    if unsafe { libc::fchdir(cwd.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        // Our own parent, compared with what std says.
        let expected = std::os::unix::process::parent_id();
        assert_eq!(parent_of(std::process::id()), Some(expected));
    }

    #[test]
    fn a_missing_netns_names_the_value_and_what_is_accepted() {
        let e = enter_netns("bluegreen-no-such-netns")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--netns = \"bluegreen-no-such-netns\"") && e.contains("ip netns list"),
            "{e}"
        );
    }

    #[test]
    fn tmp_is_no_bpffs() {
        assert!(!is_bpffs(Path::new("/tmp")));
        assert!(!same_bpffs_as(Path::new("/tmp/x/y"), 1));
    }
}
