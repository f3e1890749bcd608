//! The bearer token that guards the HTTP API's mutating endpoints. Made on
//! the agent's first start, kept in a 0600 file in its state directory;
//! `bgctl token` prints it (through the root-only control socket).
use std::{io::Read as _, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::Context as _;

pub const TOKEN_FILE: &str = "token";
/// 32 random bytes, hex-encoded.
const TOKEN_LEN: usize = 64;

/// Reads the token, or makes one when there is none yet. A file that holds
/// no token (empty or garbled: a crash while an older version made it, or
/// a hand edit) is replaced by a new token, with a warning: clients then
/// need the new one from `bgctl token`.
pub fn load_or_create(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join(TOKEN_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let token = String::from_utf8_lossy(&bytes).trim().to_owned();
            if token.len() != TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                log::warn!(
                    "{}: no bluegreen token in it ({TOKEN_LEN} hex digits expected, {} bytes found); making a new one, which HTTP clients need from `bgctl token`",
                    path.display(),
                    bytes.len()
                );
                return create(&path);
            }
            // Never readable by others, whoever touched it since.
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                log::warn!(
                    "{}: mode {:o} lets others read the API token; setting 0600",
                    path.display(),
                    mode & 0o777
                );
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Makes a token and writes it atomically (mode 0600): a crash leaves the
/// old file or the whole new one.
fn create(path: &Path) -> anyhow::Result<String> {
    let mut bytes = [0u8; TOKEN_LEN / 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the API token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::store::durable::write(path, format!("{token}\n").as_bytes(), 0o600, false)
        .with_context(|| format!("writing {}", path.display()))?;
    log::info!("made the HTTP API token in {}", path.display());
    Ok(token)
}

/// Compares in time independent of where the first difference is.
pub fn matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert_eq!(a.len(), TOKEN_LEN);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(dir.path()).unwrap(), a, "kept across starts");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), a);
    }

    #[test]
    fn loose_permissions_are_tightened_and_garbage_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE);
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(dir.path()).unwrap(), "ab".repeat(32));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Empty (a crash while it was made) or garbled: a new token.
        for junk in [&b""[..], b"not a token", b"\xff\xfe"] {
            std::fs::write(&path, junk).unwrap();
            let fresh = load_or_create(dir.path()).unwrap();
            assert_eq!(fresh.len(), TOKEN_LEN);
            assert_ne!(fresh, "ab".repeat(32));
            assert_eq!(load_or_create(dir.path()).unwrap(), fresh, "and it is kept");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn comparison() {
        assert!(matches("abc", "abc"));
        assert!(!matches("abc", "abd"));
        assert!(!matches("abc", "ab"));
        assert!(!matches("abc", ""));
    }
}
