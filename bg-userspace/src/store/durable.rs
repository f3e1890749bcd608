//! Files that must survive a crash mid-write: written to a temporary file,
//! flushed to disk, renamed over the old one, and the directory flushed, so
//! a reader finds the old content or the new one, never a torn mix.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// The previous copy `write` keeps of `path` when asked to.
pub fn previous(path: &Path) -> PathBuf {
    with_suffix(path, ".prev")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Replaces `path` with `bytes` atomically and durably, creating it with
/// `mode` (e.g. 0o600). With `keep_previous`, the content it replaces is
/// kept as `<path>.prev`, itself replaced atomically.
pub fn write(path: &Path, bytes: &[u8], mode: u32, keep_previous: bool) -> io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let _ = std::fs::remove_file(&tmp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    if keep_previous && path.exists() {
        // A hard link, renamed into place: the previous copy is never torn
        // either, and `path` exists throughout.
        let prev_tmp = with_suffix(path, ".prev.tmp");
        let _ = std::fs::remove_file(&prev_tmp);
        std::fs::hard_link(path, &prev_tmp)?;
        std::fs::rename(&prev_tmp, previous(path))?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// Flushes the directory holding `path`, so a rename in it is on disk.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn writes_replace_whole_files_and_keep_the_previous_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"one", 0o600, true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert!(!previous(&path).exists(), "nothing to keep yet");
        write(&path, b"two", 0o600, true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read(previous(&path)).unwrap(), b"one");
        write(&path, b"three", 0o600, false).unwrap();
        assert_eq!(
            std::fs::read(previous(&path)).unwrap(),
            b"one",
            "kept only when asked"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A temporary file left by a crash is no obstacle.
        std::fs::write(with_suffix(&path, ".tmp"), b"torn").unwrap();
        write(&path, b"four", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"four");
    }
}
