//! The probe through the service address, for direct server return: the
//! classic DSR mistake is a backend without the service address, which
//! answers its own address (so its usual probe passes) and silently drops
//! every client packet. This sends the backend a TCP SYN for the service
//! address and port exactly as the data path would (by its MAC for
//! `dsr-l2`, inside the tunnel for `dsr-ipip`), from this host's own
//! address, and waits for the answer from the service address: a SYN-ACK,
//! or (on a UDP service, or a port nobody listens on) a RST. Either proves
//! the backend holds the address; silence means it does not. Our kernel
//! resets the half-open connection the SYN-ACK starts.
use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::model::Mode;

/// Where and how to send the SYN.
#[derive(Clone, Debug)]
pub struct ServiceProbe {
    /// The service's address and port (what the backend must hold).
    pub service: SocketAddr,
    /// The backend's own address.
    pub backend: IpAddr,
    pub mode: Mode,
    /// `dsr-ipip`: the outer header's source.
    pub tunnel_source: Option<IpAddr>,
    /// The data path's next hop towards the backend: egress ifindex, its
    /// MAC and the interface's own.
    pub egress: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub timeout: Duration,
}

/// TCP flags of the answer we wait for.
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

impl ServiceProbe {
    /// Sends the SYN and waits for the service address's answer.
    pub fn run(&self) -> Result<(), String> {
        // The address the backend reaches us on: the kernel's source for a
        // datagram to it (nothing is sent).
        let local = {
            let any: SocketAddr = if self.backend.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let s = UdpSocket::bind(any).map_err(|e| format!("a local socket: {e}"))?;
            s.connect((self.backend, 9))
                .map_err(|e| format!("no route to backend {}: {e}", self.backend))?;
            s.local_addr().map_err(|e| e.to_string())?.ip()
        };
        // An ephemeral port of our own, for this probe only.
        let port = 49152
            + (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
                % 16384) as u16;
        let listener = raw_tcp(self.service.is_ipv4())
            .map_err(|e| format!("a raw socket for the answer: {e}"))?;
        let frame = syn_frame(self, local, port);
        send_frame(self.egress, self.dmac, &frame).map_err(|e| format!("sending the SYN: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            set_timeout(&listener, left.max(Duration::from_millis(1)))
                .map_err(|e| e.to_string())?;
            let (n, from) = match recv_from(&listener, &mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading the answer: {e}")),
            };
            if from != self.service.ip() {
                continue;
            }
            // IPv4 raw sockets hand over the IP header; IPv6 ones do not.
            let tcp = if self.service.is_ipv4() {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                &buf[ihl.min(n)..n]
            } else {
                &buf[..n]
            };
            if tcp.len() < 14 {
                continue;
            }
            let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
            let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            let flags = tcp[13];
            if sport != self.service.port() || dport != port {
                continue;
            }
            if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK || flags & TCP_RST != 0 {
                return Ok(());
            }
        }
        Err(format!(
            "no answer from the service address {} through {} in {} ms: does the backend hold {} (on its loopback, see `bgctl backend-setup`)?",
            self.service,
            self.mode,
            self.timeout.as_millis(),
            self.service.ip()
        ))
    }
}

/// The Ethernet frame of a SYN from `local:port` to the service, as the
/// data path sends it in `probe.mode` (with an outer header for dsr-ipip).
pub fn syn_frame(probe: &ServiceProbe, local: IpAddr, port: u16) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&port.to_be_bytes());
    tcp.extend_from_slice(&probe.service.port().to_be_bytes());
    tcp.extend_from_slice(&u32::from(port).wrapping_mul(2_654_435_761).to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]); // ack
    tcp.extend_from_slice(&[5 << 4, TCP_SYN]);
    tcp.extend_from_slice(&1024u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    let sum = checksum(&[&pseudo(local, probe.service.ip(), tcp.len()), &tcp]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let inner = ip_packet(local, probe.service.ip(), 6, &tcp);
    let packet = match (probe.mode, probe.tunnel_source) {
        (Mode::DsrIpip, Some(source)) => {
            let proto = if source.is_ipv4() { 4 } else { 41 };
            ip_packet(source, probe.backend, proto, &inner)
        }
        _ => inner,
    };
    let mut frame = Vec::with_capacity(14 + packet.len());
    frame.extend_from_slice(&probe.dmac);
    frame.extend_from_slice(&probe.smac);
    let ethertype: u16 = if packet[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(&packet);
    frame
}

/// An IP header from `src` to `dst` carrying `proto`, then `payload`.
fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + payload.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            let sum = checksum(&[&p]);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        (s, d) => {
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            p.extend_from_slice(&[proto, 64]);
            p.extend_from_slice(&v6(s));
            p.extend_from_slice(&v6(d));
        }
    }
    p.extend_from_slice(payload);
    p
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// The TCP pseudo-header of a segment of `len` bytes.
fn pseudo(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = Vec::from(s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, 6]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
            p
        }
        (s, d) => {
            let mut p = Vec::from(v6(s));
            p.extend_from_slice(&v6(d));
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 6]);
            p
        }
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`,
/// each of even length but the last.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).copied().map_or(0, u32::from);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw socket that receives a copy of every TCP segment this host gets.
fn raw_tcp(v4: bool) -> io::Result<OwnedFd> {
    let family = if v4 { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_timeout(fd: &OwnedFd, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a timeval of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram from the raw socket, and its source address.
fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    // SAFETY: a zeroed sockaddr_storage is valid for recvfrom to fill.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: buf and from are valid for their lengths.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut from as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let ip = match i32::from(from.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in.
            let a =
                unsafe { *(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            IpAddr::from(a.sin_addr.s_addr.to_ne_bytes())
        }
        _ => {
            // SAFETY: the kernel filled a sockaddr_in6.
            let a =
                unsafe { *(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            IpAddr::from(a.sin6_addr.s6_addr)
        }
    };
    Ok((n as usize, ip))
}

/// Sends `frame` (Ethernet header included) out of interface `ifindex`.
fn send_frame(ifindex: u32, dmac: [u8; 6], frame: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_ll, then filled.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&dmac);
    // SAFETY: frame and the address are valid for their lengths.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(mode: Mode, service: &str, backend: &str, source: Option<&str>) -> ServiceProbe {
        ServiceProbe {
            service: service.parse().unwrap(),
            backend: backend.parse().unwrap(),
            mode,
            tunnel_source: source.map(|s| s.parse().unwrap()),
            egress: 1,
            dmac: [2, 0, 0, 0, 0, 0xbb],
            smac: [2, 0, 0, 0, 0, 0xaa],
            timeout: Duration::from_millis(100),
        }
    }

    /// Checksums verified by summing the header (and the pseudo-header
    /// with the segment) to all ones, not by recomputing them.
    #[test]
    fn the_syn_goes_to_the_service_address_by_mac_or_in_a_tunnel() {
        let local: IpAddr = "198.18.1.1".parse().unwrap();
        let f = syn_frame(
            &probe(Mode::DsrL2, "198.18.10.10:601", "198.18.1.2", None),
            local,
            50000,
        );
        assert_eq!(f[0..6], [2, 0, 0, 0, 0, 0xbb]);
        assert_eq!(f[12..14], [0x08, 0x00]);
        assert_eq!(
            f[14 + 16..14 + 20],
            [198, 18, 10, 10],
            "to the service address"
        );
        assert_eq!(checksum(&[&f[14..34]]), 0, "IPv4 header checksum");
        let tcp = &f[34..];
        assert_eq!(tcp[13], TCP_SYN);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 601);
        let p = pseudo(local, "198.18.10.10".parse().unwrap(), tcp.len());
        assert_eq!(checksum(&[&p, tcp]), 0, "TCP checksum");

        let f = syn_frame(
            &probe(
                Mode::DsrIpip,
                "198.18.10.10:514",
                "198.18.5.3",
                Some("198.18.0.1"),
            ),
            local,
            50001,
        );
        assert_eq!(f[14 + 9], 4, "IP in IP");
        assert_eq!(f[14 + 12..14 + 20], [198, 18, 0, 1, 198, 18, 5, 3]);
        assert_eq!(checksum(&[&f[14..34]]), 0, "outer checksum");
        assert_eq!(
            f[34 + 16..34 + 20],
            [198, 18, 10, 10],
            "inner: to the service"
        );

        let local6: IpAddr = "2001:db8:1::1".parse().unwrap();
        let f = syn_frame(
            &probe(
                Mode::DsrIpip,
                "[2001:db8::11]:601",
                "2001:db8:5::3",
                Some("2001:db8:1::1"),
            ),
            local6,
            50002,
        );
        assert_eq!(f[12..14], [0x86, 0xdd]);
        assert_eq!(f[14 + 6], 41, "IPv6 in IPv6");
        let inner = &f[54..];
        let tcp = &inner[40..];
        let p = pseudo(local6, "2001:db8::11".parse().unwrap(), tcp.len());
        assert_eq!(checksum(&[&p, tcp]), 0, "TCP checksum over IPv6");
    }
}
