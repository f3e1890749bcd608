//! In-process UDP senders and counting sinks placed in lab namespaces.
use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::netns::NetNs;

/// A UDP socket bound to a backend address that records every datagram.
pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl Sink {
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Result<Self> {
        let socket = ns.enter(move || -> std::io::Result<UdpSocket> {
            let s = UdpSocket::bind(addr)?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })??;
        set_rcvbuf(&socket, 8 << 20);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            // Bounded: a test that forgets to stop the sink still ends.
            let limit = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::Relaxed) && Instant::now() < limit {
                if let Ok(n) = socket.recv(&mut buf) {
                    got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
            // Drain what is already queued, then close: a stream still
            // arriving must not keep the socket open.
            let _ = socket.set_nonblocking(true);
            while let Ok(n) = socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            got
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the sink and returns every message it received, in order.
    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn set_rcvbuf(s: &UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a valid fd and an int option.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        );
    }
}

/// A UDP client socket in `ns` connected to `to`.
pub fn sender(ns: &NetNs, to: SocketAddr) -> Result<UdpSocket> {
    Ok(ns.enter(move || -> std::io::Result<UdpSocket> {
        let bind: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind)?;
        s.connect(to)?;
        Ok(s)
    })??)
}

/// Sends `messages` paced at about `rate` per second (in batches of 10).
pub fn send_paced(socket: &UdpSocket, messages: &[String], rate: u32) -> Result<()> {
    let start = Instant::now();
    for (i, m) in messages.iter().enumerate() {
        socket.send(m.as_bytes())?;
        if i % 10 == 9 {
            let due = start + Duration::from_secs_f64((i + 1) as f64 / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(())
}

/// How many times each token occurs among received messages (a token is the
/// message text for Rust senders, or a substring of a syslog line).
pub fn occurrences<'a>(
    received: impl IntoIterator<Item = &'a String>,
    tokens: &[String],
) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = tokens.iter().map(|t| (t.clone(), 0)).collect();
    for r in received {
        // Tokens end with a space so "m-1 " never matches "m-10 ".
        for word in r.split_whitespace() {
            let key = format!("{word} ");
            if let Some(c) = counts.get_mut(&key) {
                *c += 1;
            }
        }
    }
    counts
}

/// A TCP syslog server (RFC 6587 octet-counted framing) in a namespace that
/// records, per accepted connection, every message in arrival order.
pub struct TcpSink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<String>>>>,
}

impl TcpSink {
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Result<Self> {
        let listener = ns.enter(move || -> std::io::Result<std::net::TcpListener> {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut readers: Vec<JoinHandle<Vec<String>>> = Vec::new();
            // Bounded: a test that forgets to stop the sink still ends.
            let limit = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::Relaxed) && Instant::now() < limit {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let flag = flag.clone();
                        readers.push(std::thread::spawn(move || {
                            read_frames(stream, &flag, limit)
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Health probes connect and close without a message: keep only
            // connections that carried syslog.
            readers
                .into_iter()
                .map(|r| r.join().unwrap_or_default())
                .filter(|m: &Vec<String>| !m.is_empty())
                .collect()
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the sink; returns the messages of each connection that carried
    /// any, in accept order.
    pub fn finish(mut self) -> Vec<Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads "LEN SP MSG" frames until EOF, the stop flag or the time limit.
fn read_frames(mut stream: std::net::TcpStream, stop: &AtomicBool, limit: Instant) -> Vec<String> {
    use std::io::Read;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) || Instant::now() >= limit {
                    break;
                }
            }
            Err(_) => break,
        }
        while let Some(space) = buf.iter().position(|&b| b == b' ') {
            let Some(len) = std::str::from_utf8(&buf[..space])
                .ok()
                .and_then(|t| t.parse::<usize>().ok())
            else {
                out.push(format!("<bad frame: {:?}>", String::from_utf8_lossy(&buf)));
                return out;
            };
            if buf.len() < space + 1 + len {
                break;
            }
            out.push(String::from_utf8_lossy(&buf[space + 1..space + 1 + len]).into_owned());
            buf.drain(..space + 1 + len);
        }
    }
    out
}

/// A TCP connection from `ns` to `to`, sending octet-counted syslog frames.
pub struct TcpClient {
    stream: std::net::TcpStream,
}

impl TcpClient {
    pub fn connect(ns: &NetNs, to: SocketAddr) -> Result<Self> {
        ns.enter(move || Self::connect_here(to))?
    }

    /// From the namespace the calling thread is in.
    pub fn connect_here(to: SocketAddr) -> Result<Self> {
        let stream = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Ok(Self { stream })
    }

    /// The client's own address and port: the 4-tuple a spoofer would copy.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("connected")
    }

    /// Sends each message as one frame; any error (a reset) fails.
    pub fn send(&mut self, messages: &[String]) -> Result<()> {
        use std::io::Write;
        for m in messages {
            self.stream
                .write_all(format!("{} {m}", m.len()).as_bytes())?;
        }
        self.stream.flush()?;
        Ok(())
    }

    /// Closes our side and waits for the server's close: a clean FIN
    /// exchange, not a reset.
    pub fn close(self) -> Result<()> {
        use std::io::Read;
        self.stream.shutdown(std::net::Shutdown::Write)?;
        self.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut rest = Vec::new();
        (&self.stream).read_to_end(&mut rest)?;
        Ok(())
    }
}
