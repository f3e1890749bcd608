//! The agent's own resources: its open-file limit, and telling a failure of
//! this host's resources from a backend's. A probe that fails because the
//! agent ran out of file descriptors says nothing about the backend, and
//! must never bring it down (or roll a deployment back).
use std::io;

/// The soft limit on open files.
pub fn open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Raises the soft open-file limit to the hard one: probes, connections
/// and maps all take descriptors, and 1024 is a common default soft limit.
/// Returns (before, after).
pub fn raise_open_file_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return (before, before);
            }
        }
        (before, lim.rlim_cur)
    }
}

/// Whether an error is this host running out of something (descriptors,
/// memory, buffers), not the remote end refusing or failing.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_exhaustion_is_told_from_a_refusal() {
        assert!(is_local_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_local_exhaustion(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_local_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
        assert!(!is_local_exhaustion(&io::Error::other("timed out")));
    }

    #[test]
    fn the_soft_limit_can_be_raised_to_the_hard_one() {
        let (before, after) = raise_open_file_limit();
        assert!(after >= before);
        assert_eq!(open_file_limit(), after);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit into a valid struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(after, lim.rlim_max, "up to the hard limit");
    }
}
