//! One agent per pinned data path: an exclusive lock per pin directory,
//! held for the agent's lifetime. Two agents would fight over the same
//! maps and link, and a teardown must not pull the pins from under a live
//! agent. The kernel drops the lock when the holder dies, even by kill -9.
use std::{
    fmt,
    io::{self, Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// Where the locks live: tiny files, on tmpfs.
const LOCK_DIR: &str = "/run/bluegreen/locks";

pub struct PinLock {
    _file: std::fs::File,
}

/// Who holds a lock: the pid it wrote, when it could be read.
#[derive(Debug)]
pub struct Holder(pub Option<u32>);

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid unknown"),
        }
    }
}

fn lock_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new(LOCK_DIR).join(format!("{name}.lock"))
}

impl PinLock {
    /// Takes the lock of `pin_dir` without waiting; `Err(holder)` when an
    /// agent holds it.
    pub fn try_acquire(pin_dir: &Path) -> io::Result<Result<Self, Holder>> {
        std::fs::create_dir_all(LOCK_DIR)?;
        let path = lock_path(pin_dir);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // SAFETY: flock on a valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Ok(Err(Holder(holder.trim().parse().ok())));
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Ok(Self { _file: file }))
    }
}

impl PinLock {
    /// `try_acquire`, retried every 50 ms for up to `limit` (an agent asked
    /// to stop takes a moment to exit).
    pub fn wait(pin_dir: &Path, limit: std::time::Duration) -> io::Result<Result<Self, Holder>> {
        let end = std::time::Instant::now() + limit;
        loop {
            match Self::try_acquire(pin_dir)? {
                Ok(lock) => return Ok(Ok(lock)),
                Err(holder) if std::time::Instant::now() >= end => return Ok(Err(holder)),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_taker_is_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("eth-test");
        let held = PinLock::try_acquire(&pins).unwrap().expect("free");
        // flock is per open file: a second open in this process conflicts too.
        let again = PinLock::try_acquire(&pins).unwrap();
        match again {
            Err(Holder(Some(pid))) => assert_eq!(pid, std::process::id()),
            other => panic!("{:?}", other.map(|_| ())),
        }
        drop(held);
        assert!(PinLock::try_acquire(&pins).unwrap().is_ok(), "free again");
    }
}
