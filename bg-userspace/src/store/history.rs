//! The event history: one JSON object per line in `history.jsonl` in the
//! agent's state directory. Flips, rollbacks and probe state changes are
//! appended as they happen; the file survives restarts.
use std::{
    io::Write,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::model::{Actor, Entry, Event, Tail, now_unix_ms};

pub const HISTORY_FILE: &str = "history.jsonl";

/// A history file is rotated to `history.jsonl.1` once it is this large,
/// so the two stay under twice this on disk.
pub const ROTATE_BYTES: u64 = 8 << 20;
/// How much of a file a read from its end takes at a time.
const CHUNK: u64 = 64 << 10;

thread_local! {
    /// Who the request being handled on this thread came from. Control
    /// requests are handled synchronously on one thread (`block_in_place`),
    /// so every entry they append is theirs; a scope, not a parameter,
    /// because a flip records itself several layers below the API.
    static ACTOR: std::cell::Cell<Option<Actor>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with entries appended on this thread attributed to `actor`.
pub fn acting_as<T>(actor: Option<Actor>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Actor>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTOR.set(self.0);
        }
    }
    let _restore = Restore(ACTOR.replace(actor));
    f()
}

pub struct History {
    path: PathBuf,
    file: Mutex<Appender>,
    /// Every appended entry, for live views (the dashboard's event stream).
    live: tokio::sync::broadcast::Sender<Entry>,
}

struct Appender {
    file: Option<std::fs::File>,
    /// Bytes in the current file.
    size: u64,
}

impl History {
    /// Opens (or creates) the history. A last line torn by a crash is
    /// sealed with a newline, so the next entry starts a line of its own;
    /// a file already past the rotation size is rotated.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let path = state_dir.join(HISTORY_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let mut size = file.metadata()?.len();
        if size > 0 {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, size - 1)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
            }
        }
        let history = Self {
            path,
            file: Mutex::new(Appender {
                file: Some(file),
                size,
            }),
            live: tokio::sync::broadcast::channel(256).0,
        };
        if size >= ROTATE_BYTES {
            history.rotate(&mut history.file.lock().expect("poisoned"));
        }
        Ok(history)
    }

    fn rotated(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Moves the current file to `.1` (replacing the older one) and starts
    /// an empty one.
    fn rotate(&self, appender: &mut Appender) {
        let reopened = std::fs::rename(&self.path, self.rotated()).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        });
        match reopened {
            Ok(f) => {
                appender.file = Some(f);
                appender.size = 0;
            }
            Err(e) => log::warn!("{}: cannot rotate the history: {e}", self.path.display()),
        }
    }

    /// Entries appended from now on. A receiver that falls more than 256
    /// behind skips ahead (and is told how many it missed).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Entry> {
        self.live.subscribe()
    }

    /// Appends an event. A failed write is logged, never fatal: the history
    /// records what happened, it does not decide it.
    pub fn append(&self, event: &Event) {
        let entry = Entry {
            at_unix_ms: now_unix_ms(),
            event: event.clone(),
            actor: ACTOR.get(),
        };
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(entry);
        line.push(b'\n');
        let mut appender = self.file.lock().expect("poisoned");
        if let Some(f) = appender.file.as_mut() {
            match f.write_all(&line) {
                Ok(()) => appender.size += line.len() as u64,
                Err(e) => {
                    log::warn!("{}: cannot append to the history: {e}", self.path.display())
                }
            }
        }
        if appender.size >= ROTATE_BYTES {
            self.rotate(&mut appender);
        }
    }

    /// The last `limit` entries, oldest first, read from the end of the
    /// file (and of the rotated one, when the current holds too few), so
    /// the cost follows `limit`, not the history's length. Lines that do
    /// not parse are skipped and counted.
    pub fn tail(&self, limit: usize) -> Tail {
        let mut newest_first = Vec::new();
        let mut skipped = 0;
        for path in [self.path.clone(), self.rotated()] {
            if newest_first.len() >= limit {
                break;
            }
            if let Err(e) = read_back(&path, limit, &mut newest_first, &mut skipped)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!("{}: {e}", path.display());
            }
        }
        if skipped > 0 {
            log::warn!(
                "{}: {skipped} line(s) that do not parse skipped",
                self.path.display()
            );
        }
        newest_first.reverse();
        Tail {
            entries: newest_first,
            skipped,
        }
    }
}

/// Reads `path` backwards in chunks, pushing entries newest first onto
/// `out` until it holds `limit`. Returns the bytes read.
fn read_back(
    path: &Path,
    limit: usize,
    out: &mut Vec<Entry>,
    skipped: &mut u64,
) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let mut pos = file.metadata()?.len();
    let mut carry: Vec<u8> = Vec::new();
    let mut read = 0;
    let mut take = |line: &[u8], out: &mut Vec<Entry>| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) => out.push(e),
            Err(_) => *skipped += 1,
        }
    };
    while pos > 0 && out.len() < limit {
        let n = CHUNK.min(pos);
        pos -= n;
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, pos)?;
        read += n;
        buf.extend_from_slice(&carry);
        // The first piece may continue in the chunk before: carry it.
        let mut pieces = buf.split(|&b| b == b'\n');
        let first = pieces.next().unwrap_or_default().to_vec();
        let rest: Vec<&[u8]> = pieces.collect();
        for line in rest.iter().rev() {
            if out.len() >= limit {
                break;
            }
            take(line, out);
        }
        carry = first;
    }
    if pos == 0 && out.len() < limit {
        take(&carry, out);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Colour;

    fn flip(n: u64) -> Event {
        Event::Flip {
            from: Colour::Blue,
            to: Colour::Green,
            write_ns: n,
            forced: false,
            problems: vec![],
        }
    }

    fn write_ns(e: &Entry) -> u64 {
        match e.event {
            Event::Flip { write_ns, .. } => write_ns,
            _ => panic!("not a flip: {e:?}"),
        }
    }

    fn raw_append(dir: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(HISTORY_FILE))
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn a_torn_line_costs_itself_only() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        h.append(&flip(1));
        drop(h);
        // A crash in the middle of a line.
        raw_append(dir.path(), b"{\"at_unix_ms\":1,\"event\":\"fl");
        let h = History::open(dir.path()).unwrap();
        h.append(&flip(2));
        let t = h.tail(10);
        assert_eq!(t.entries.iter().map(write_ns).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(t.skipped, 1);
    }

    #[test]
    fn a_bad_byte_hides_nothing_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        h.append(&flip(1));
        raw_append(dir.path(), b"{\"at_unix_ms\":1,\xff\"event\"}\n");
        h.append(&flip(2));
        h.append(&flip(3));
        let t = h.tail(10);
        assert_eq!(
            t.entries.iter().map(write_ns).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(t.skipped, 1);
        assert_eq!(
            h.tail(2).entries.iter().map(write_ns).collect::<Vec<_>>(),
            [2, 3]
        );
    }

    #[test]
    fn entries_name_who_asked_only_inside_the_scope() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let by = Actor::Socket {
            uid: 1000,
            pid: Some(42),
        };
        h.append(&flip(1));
        acting_as(Some(by), || {
            h.append(&flip(2));
            // A nested scope (none: the agent's own act) ends and restores.
            acting_as(None, || h.append(&flip(3)));
            h.append(&flip(4));
        });
        h.append(&flip(5));
        let actors: Vec<_> = h.tail(10).entries.iter().map(|e| e.actor).collect();
        assert_eq!(actors, [None, Some(by), None, Some(by), None]);
        let line = std::fs::read_to_string(dir.path().join(HISTORY_FILE)).unwrap();
        let second: serde_json::Value = serde_json::from_str(line.lines().nth(1).unwrap()).unwrap();
        assert_eq!(
            second["actor"],
            serde_json::json!({"via": "socket", "uid": 1000, "pid": 42})
        );
        assert!(
            !line.lines().next().unwrap().contains("actor"),
            "no actor, no field: older readers see the same lines"
        );
    }

    #[test]
    fn the_tail_is_read_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HISTORY_FILE);
        // About 6 MiB of entries, written directly.
        let line = serde_json::to_vec(&Entry {
            at_unix_ms: 1,
            event: flip(7),
            actor: None,
        })
        .unwrap();
        let mut big = Vec::new();
        while big.len() < 6 << 20 {
            big.extend_from_slice(&line);
            big.push(b'\n');
        }
        std::fs::write(&path, &big).unwrap();
        let mut out = Vec::new();
        let mut skipped = 0;
        let read = read_back(&path, 1, &mut out, &mut skipped).unwrap();
        assert_eq!((out.len(), skipped), (1, 0));
        assert_eq!(read, CHUNK, "one chunk from the end, not the whole file");
        // Lines that cross chunk boundaries come out whole.
        let mut out = Vec::new();
        read_back(&path, 5000, &mut out, &mut skipped).unwrap();
        assert_eq!((out.len(), skipped), (5000, 0));
    }

    #[test]
    fn the_history_rotates_and_reads_across_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let per_entry = serde_json::to_vec(&Entry {
            at_unix_ms: now_unix_ms(),
            event: flip(0),
            actor: None,
        })
        .unwrap()
        .len() as u64
            + 1;
        let n = ROTATE_BYTES / per_entry + 10;
        for i in 0..n {
            h.append(&flip(i));
        }
        let rotated = dir.path().join(format!("{HISTORY_FILE}.1"));
        assert!(rotated.exists(), "rotated once past {ROTATE_BYTES} bytes");
        let current = std::fs::metadata(dir.path().join(HISTORY_FILE))
            .unwrap()
            .len();
        assert!(current < ROTATE_BYTES);
        let t = h.tail(100);
        let got: Vec<u64> = t.entries.iter().map(write_ns).collect();
        assert_eq!(
            got,
            (n - 100..n).collect::<Vec<_>>(),
            "newest, across both files"
        );
    }
}
