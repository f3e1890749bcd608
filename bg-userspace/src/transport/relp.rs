//! A RELP client (the Reliable Event Logging Protocol of rsyslog's imrelp
//! and omrelp): enough to open a session, send syslog messages, read the
//! server's acknowledgements and close cleanly. Probes and the deployment
//! gate speak it to RELP backends, which would log a broken session for
//! every bare TCP connect and count plain syslog as garbage.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`; the server answers
//! each command with `TXNR rsp DATALEN SP STATUS ...` for the same TXNR.
use std::io::{self, Read, Write};

/// What a session offers when it opens.
const OFFER: &str = concat!(
    "relp_version=0\nrelp_software=bluegreen,",
    env!("CARGO_PKG_VERSION"),
    "\ncommands=syslog"
);
/// Longest frame accepted from a server.
const FRAME_MAX: usize = 128 * 1024;

/// One RELP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u64,
    pub command: String,
    pub data: Vec<u8>,
}

impl Frame {
    /// The status of a `rsp` frame (200 for OK), from its data's first word.
    pub fn status(&self) -> Option<u16> {
        (self.command == "rsp")
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten()
            .and_then(|d| d.split([' ', '\n']).next())
            .and_then(|s| s.parse().ok())
    }
}

/// The bytes of a frame.
pub fn encode(txnr: u64, command: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("{txnr} {command} {}", data.len()).into_bytes();
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
    out
}

fn malformed(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("RELP: {}", why.into()))
}

/// Parses one frame from the front of `buf`: the frame and its length, or
/// None when more bytes are needed.
pub fn decode(buf: &[u8]) -> io::Result<Option<(Frame, usize)>> {
    // The header is three space-separated fields; find their ends.
    let mut fields = [0usize; 3];
    let mut at = 0;
    for (i, end) in fields.iter_mut().enumerate() {
        let rest = &buf[at.min(buf.len())..];
        // DATALEN, the last field, ends at the space before data, or at LF.
        match rest
            .iter()
            .position(|&b| b == b' ' || (i == 2 && b == b'\n'))
        {
            Some(p) => {
                *end = at + p;
                at += p + 1;
            }
            None if rest.len() > 40 => return Err(malformed("header too long")),
            None => return Ok(None),
        }
    }
    let field = |from: usize, to: usize| std::str::from_utf8(&buf[from..to]).unwrap_or("");
    let txnr = field(0, fields[0])
        .parse::<u64>()
        .map_err(|_| malformed(format!("bad TXNR {:?}", field(0, fields[0]))))?;
    let command = field(fields[0] + 1, fields[1]);
    if command.is_empty() || command.len() > 32 || !command.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return Err(malformed(format!("bad command {command:?}")));
    }
    let len = field(fields[1] + 1, fields[2])
        .parse::<usize>()
        .map_err(|_| malformed("bad DATALEN"))?;
    if len > FRAME_MAX {
        return Err(malformed(format!("DATALEN {len} is more than {FRAME_MAX}")));
    }
    // With data, the header's last field ended at a space; without, at LF.
    let (data_start, total) = if len == 0 {
        if buf[fields[2]] != b'\n' {
            return Err(malformed("DATALEN 0 not followed by LF"));
        }
        (fields[2], fields[2] + 1)
    } else {
        (fields[2] + 1, fields[2] + 1 + len + 1)
    };
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != b'\n' {
        return Err(malformed("frame not ended by LF"));
    }
    Ok(Some((
        Frame {
            txnr,
            command: command.to_owned(),
            data: buf[data_start..data_start + len].to_vec(),
        },
        total,
    )))
}

/// A RELP session over any byte stream (TCP, or TLS for RELP over TLS).
pub struct Session<S> {
    stream: S,
    next_txnr: u64,
    buf: Vec<u8>,
}

impl<S: Read + Write> Session<S> {
    /// Opens a session: sends the offer and requires `rsp 200`.
    pub fn open(stream: S) -> io::Result<Self> {
        let mut s = Self {
            stream,
            next_txnr: 1,
            buf: Vec::new(),
        };
        let txnr = s.send("open", OFFER.as_bytes())?;
        let answer = s.read_frame()?;
        match (answer.txnr == txnr, answer.status()) {
            (true, Some(200)) => Ok(s),
            _ => Err(io::Error::other(format!(
                "RELP open refused: {} {} {}",
                answer.txnr,
                answer.command,
                String::from_utf8_lossy(&answer.data)
            ))),
        }
    }

    /// Sends a command; returns its transaction number.
    pub fn send(&mut self, command: &str, data: &[u8]) -> io::Result<u64> {
        let txnr = self.next_txnr;
        self.next_txnr += 1;
        self.stream.write_all(&encode(txnr, command, data))?;
        self.stream.flush()?;
        Ok(txnr)
    }

    /// The next frame from the server.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if let Some((frame, used)) = decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "RELP: the server closed the session",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Closes the session and waits for the server's answer to the close
    /// (a `serverclose` on the way is fine).
    pub fn close(mut self) -> io::Result<()> {
        let txnr = self.send("close", b"")?;
        loop {
            let f = self.read_frame()?;
            if f.txnr == txnr && f.command == "rsp" {
                return Ok(());
            }
        }
    }
}

/// A RELP health probe: connect (over TLS when `tls` is given), open a
/// session and close it, each step within `timeout`.
pub fn probe(
    addr: std::net::SocketAddr,
    tls: Option<&crate::transport::tls::TlsClient>,
    timeout: std::time::Duration,
) -> io::Result<()> {
    match tls {
        Some(tls) => Session::open(tls.connect(addr, timeout)?)?.close(),
        None => {
            let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            Session::open(stream)?.close()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_encode_as_the_spec_writes_them() {
        assert_eq!(encode(1, "close", b""), b"1 close 0\n");
        assert_eq!(encode(2, "syslog", b"<13>hi"), b"2 syslog 6 <13>hi\n");
    }

    #[test]
    fn frames_decode_whole_partial_and_back_to_back() {
        let two = b"1 rsp 6 200 OK\n0 serverclose 0\n";
        let (f, used) = decode(two).unwrap().unwrap();
        assert_eq!(
            (f.txnr, f.command.as_str(), f.status()),
            (1, "rsp", Some(200))
        );
        assert_eq!(f.data, b"200 OK");
        let (g, rest) = decode(&two[used..]).unwrap().unwrap();
        assert_eq!(
            (g.txnr, g.command.as_str(), g.data.len()),
            (0, "serverclose", 0)
        );
        assert_eq!(used + rest, two.len());
        // Every prefix of a frame asks for more; none is an error.
        for cut in 0..two.len().min(15) {
            assert!(decode(&two[..cut]).unwrap().is_none(), "cut {cut}");
        }
        // Data may hold newlines: DATALEN decides.
        let (h, _) = decode(b"3 rsp 9 200 OK\nab\n").unwrap().unwrap();
        assert_eq!(h.data, b"200 OK\nab");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &b"x rsp 0\n"[..],
            b"1 r5p 0\n",
            b"1 rsp nope \n",
            b"1 rsp 0 \n",
            b"1 rsp 2 okX",
            b"1 rsp 999999999 ",
            b"123456789012345678901234567890123456789012345",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// A session against a scripted server: open, two messages, close.
    #[test]
    fn a_session_opens_sends_and_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            let mut answered = 0;
            while answered < 4 {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                while let Some((f, used)) = decode(&got).unwrap() {
                    got.drain(..used);
                    let reply = match f.command.as_str() {
                        "open" => encode(f.txnr, "rsp", b"200 OK\nrelp_version=0"),
                        "syslog" => encode(f.txnr, "rsp", b"200 OK"),
                        "close" => {
                            [encode(0, "serverclose", b""), encode(f.txnr, "rsp", b"")].concat()
                        }
                        _ => encode(f.txnr, "rsp", b"500 unknown"),
                    };
                    s.write_all(&reply).unwrap();
                    answered += 1;
                }
            }
        });
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let mut session = Session::open(stream).unwrap();
        for msg in ["<13>one", "<13>two"] {
            let txnr = session.send("syslog", msg.as_bytes()).unwrap();
            let ack = session.read_frame().unwrap();
            assert_eq!((ack.txnr, ack.status()), (txnr, Some(200)));
        }
        session.close().unwrap();
        server.join().unwrap();
    }
}
