//! The socket shadow copies come from: bound on the address this host uses
//! towards the shadow target, it receives the ICMP errors the target
//! answers copies with (IP_RECVERR), so they never reach the real sender
//! and count against the new colour instead.
use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::AsRawFd,
};

use super::any_port_for;

pub struct IcmpErrors {
    socket: UdpSocket,
}

/// One ICMP error: the copy's destination and the error it reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    pub to: SocketAddr,
    /// `ECONNREFUSED` for port unreachable, `EHOSTUNREACH`, ...
    pub errno: i32,
}

impl IcmpErrors {
    /// Bound on the source address the kernel picks for `peer`, on a port
    /// of its own.
    pub fn towards(peer: SocketAddr) -> io::Result<Self> {
        let probe = UdpSocket::bind(any_port_for(peer))?;
        probe.connect(peer)?;
        Self::bind(probe.local_addr()?.ip())
    }

    pub fn bind(ip: IpAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind((ip, 0))?;
        socket.set_nonblocking(true)?;
        let (level, name) = if ip.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_RECVERR)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
        };
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { socket })
    }

    /// Where copies come from: put in their source address and port.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Every error queued since the last call (the queue is bounded by the
    /// socket's buffer; the kernel also rate-limits ICMP errors, so each
    /// one stands for many refused copies).
    pub fn drain(&self) -> Vec<IcmpError> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match self.next() {
                Ok(Some(e)) => out.push(e),
                Ok(None) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// One message of the error queue: Ok(None) when it carried no error
    /// we can read; Err(WouldBlock) when the queue is empty.
    fn next(&self) -> io::Result<Option<IcmpError>> {
        // SAFETY: plain C structs, zeroed as recvmsg expects.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let mut data = [0u8; 256];
        let mut control = [0u64; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 64]>();
        // SAFETY: every pointer in msg points at a live buffer of its length.
        let n = unsafe {
            libc::recvmsg(
                self.socket.as_raw_fd(),
                &mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let Some(to) = sockaddr(&name) else {
            return Ok(None);
        };
        // SAFETY: walking the control buffer recvmsg filled, with the
        // kernel's own macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let ours = ((*c).cmsg_level == libc::IPPROTO_IP
                    && (*c).cmsg_type == libc::IP_RECVERR)
                    || ((*c).cmsg_level == libc::IPPROTO_IPV6
                        && (*c).cmsg_type == libc::IPV6_RECVERR);
                if ours {
                    let ee = libc::CMSG_DATA(c).cast::<libc::sock_extended_err>();
                    return Ok(Some(IcmpError {
                        to,
                        errno: (*ee).ee_errno as i32,
                    }));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(None)
    }
}

fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says which struct it is.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(a.sin_addr.s_addr).into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says which struct it is.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                0,
                0,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram to a closed port on loopback comes back as an ICMP port
    /// unreachable, which the socket must report with its destination.
    #[test]
    fn a_refused_datagram_is_reported_with_its_destination() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = closed.local_addr().unwrap();
        drop(closed);
        let errors = IcmpErrors::towards(to).unwrap();
        assert!(errors.local_addr().unwrap().ip().is_loopback());
        errors.socket.send_to(b"<13>x", to).unwrap();
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = errors.drain();
            if !seen.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            seen,
            vec![IcmpError {
                to,
                errno: libc::ECONNREFUSED
            }]
        );
        assert!(errors.drain().is_empty(), "drained once");
    }
}
