//! A stand-in for systemd's notification socket (`NOTIFY_SOCKET`).
use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
pub struct Notify {
    socket: UnixDatagram,
    pub seen: Vec<String>,
}

impl Notify {
    pub fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits up to 20 s for a message holding `line`; every message read
    /// on the way is kept in `seen`.
    pub fn wait_for(&mut self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(m.clone());
                if m.lines().any(|l| l == line) {
                    return m;
                }
            }
        }
        panic!("no {line:?} from the agent; it sent {:?}", self.seen);
    }
}
