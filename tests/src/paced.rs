//! A generator paced frame by frame: an AF_PACKET socket that sends each
//! precomputed frame at its own due time (start + i / rate), spinning the
//! last microseconds. The live-frames generator sends 50 ms batches at its
//! full speed, which a slow path sees as bursts of thousands of frames;
//! this one sends a burst only when it falls behind, and says how long.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// An AF_PACKET socket bound to one interface of a namespace, sending a
/// fixed list of frames in turn.
pub struct Paced {
    fd: OwnedFd,
    frames: Vec<Vec<u8>>,
}

/// What one paced run did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PacedRun {
    pub sent: u64,
    /// From the first frame to the last one's send returning.
    pub seconds: f64,
    /// Longest run of frames sent back to back, each without waiting
    /// because it was already due: 1 when every frame kept its slot.
    pub max_burst: u32,
    /// Share of frames that went out late, without waiting.
    pub late_share: f64,
    /// Sends the kernel refused for lack of buffer (ENOBUFS), retried.
    pub retries: u64,
}

impl Paced {
    /// `frames` go out in turn from `dev` in `ns`, bypassing its qdisc (as
    /// pktgen does): what the sender measures is the path behind the
    /// interface, not a queue in front of it.
    pub fn open(ns: &NetNs, dev: &str, frames: Vec<Vec<u8>>) -> Result<Self> {
        if frames.is_empty() {
            bail!("a paced generator needs at least one frame");
        }
        let dev = dev.to_owned();
        let fd = ns.enter(move || -> Result<OwnedFd> {
            let name = std::ffi::CString::new(dev.clone())?;
            // SAFETY: if_nametoindex reads a NUL-terminated string.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if index == 0 {
                bail!("no interface {dev:?} in this namespace");
            }
            // Protocol 0: the socket sends and never receives.
            // SAFETY: plain socket(2); the fd is owned at once.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if raw < 0 {
                return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            // SAFETY: raw is a fresh fd nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = index as i32;
            // SAFETY: bind with a sockaddr_ll of its own size.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
            }
            let one: i32 = 1;
            // SAFETY: setsockopt with an int option.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&one as *const i32).cast(),
                    4,
                )
            };
            Ok(fd)
        })??;
        Ok(Self { fd, frames })
    }

    fn send_one(&self, frame: &[u8], retries: &mut u64) -> Result<()> {
        // Bounded: a path that never takes a frame ends the run.
        for _ in 0..10_000 {
            // SAFETY: send from a live buffer of its own length.
            let n =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n == frame.len() as isize {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENOBUFS) | Some(libc::EAGAIN) => {
                    *retries += 1;
                    std::hint::spin_loop();
                }
                _ => return Err(err).context("send(AF_PACKET)"),
            }
        }
        bail!("the interface refused a frame 10,000 times in a row")
    }

    /// Sends `total` frames at `rate` per second, each at its due time.
    /// Time to wait longer than 200 µs is slept; the rest is spun, which
    /// keeps one core busy but holds the gaps to about a microsecond.
    pub fn send(&self, total: u32, rate: u32) -> Result<PacedRun> {
        if rate == 0 {
            bail!("rate 0: a paced run needs at least 1 frame per second");
        }
        let period = 1.0 / f64::from(rate);
        // Real-time priority while it sends, so the relay or a kworker on
        // this core cannot hold a frame past its slot; restored after.
        let _fifo = Fifo::enter();
        let start = Instant::now();
        let (mut burst, mut max_burst, mut late, mut retries) = (0u32, 0u32, 0u64, 0u64);
        for i in 0..total {
            let due = start + Duration::from_secs_f64(f64::from(i) * period);
            let now = Instant::now();
            if i > 0 && now >= due {
                // Already due: it follows the previous frame back to back.
                burst += 1;
                late += 1;
            } else {
                if let Some(wait) = due.checked_duration_since(now)
                    && wait > Duration::from_micros(200)
                {
                    std::thread::sleep(wait - Duration::from_micros(100));
                }
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
                burst = 1;
            }
            max_burst = max_burst.max(burst);
            let frame = &self.frames[i as usize % self.frames.len()];
            self.send_one(frame, &mut retries)?;
        }
        Ok(PacedRun {
            sent: u64::from(total),
            seconds: start.elapsed().as_secs_f64(),
            max_burst,
            late_share: late as f64 / f64::from(total.max(1)),
            retries,
        })
    }
}

/// SCHED_FIFO for the calling thread until dropped (the kernel's RT
/// throttling still leaves other tasks 5 % of the core). Without
/// CAP_SYS_NICE it changes nothing.
struct Fifo(Option<(i32, libc::sched_param)>);

impl Fifo {
    fn enter() -> Self {
        // SAFETY: sched_getscheduler/getparam/setscheduler on this thread
        // (pid 0), with a sched_param they fill or read.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            let mut old: libc::sched_param = std::mem::zeroed();
            if policy < 0 || libc::sched_getparam(0, &mut old) != 0 {
                return Self(None);
            }
            let fifo = libc::sched_param { sched_priority: 10 };
            if libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) != 0 {
                return Self(None);
            }
            Self(Some((policy, old)))
        }
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        if let Some((policy, old)) = self.0 {
            // SAFETY: as in enter, restoring what it read.
            unsafe { libc::sched_setscheduler(0, policy, &old) };
        }
    }
}
