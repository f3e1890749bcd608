//! A bounded sender of spoofed TCP segments (raw IPv4, IP_HDRINCL): what an
//! attacker on the client's side of the network can send without seeing
//! any answer. For the flood and spoofed-SYN tests and the bench.
use std::{net::Ipv4Addr, time::Duration, time::Instant};

use anyhow::{Result, bail};

use crate::{netns::NetNs, packet::Frame};

/// Sends each IPv4 frame's IP packet (the frame without its Ethernet
/// header) from a raw socket in `ns`, stopping at `limit`. Returns how many
/// were sent.
pub fn send_ipv4(ns: &NetNs, frames: Vec<Vec<u8>>, limit: Duration) -> Result<usize> {
    ns.enter(move || -> Result<usize> {
        // SAFETY: plain socket(2); the fd is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            bail!("raw socket: {}", std::io::Error::last_os_error());
        }
        let end = Instant::now() + limit;
        let mut sent = 0;
        for frame in &frames {
            if Instant::now() >= end {
                break;
            }
            let ip = &frame[14..];
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.octets()),
                },
                sin_zero: [0; 8],
            };
            loop {
                // SAFETY: a valid buffer and address for the call's duration.
                let rc = unsafe {
                    libc::sendto(
                        fd,
                        ip.as_ptr().cast(),
                        ip.len(),
                        0,
                        (&addr as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if rc >= 0 {
                    break;
                }
                let e = std::io::Error::last_os_error();
                // A full queue is back-pressure, not failure: wait and retry.
                if e.raw_os_error() != Some(libc::ENOBUFS) || Instant::now() >= end {
                    // SAFETY: our fd.
                    unsafe { libc::close(fd) };
                    bail!("sendto: {e}");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            sent += 1;
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
        Ok(sent)
    })?
}

/// `n` TCP segments with `flags` to `service:port` from as many spoofed
/// clients in 198.19.0.0/16, each with its own address and port.
pub fn flood(service: &str, port: u16, flags: u8, n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let src = format!("198.19.{}.{}", i / 250 % 250, i % 250 + 1);
            let mut f = Frame::tcp(&src, service, 1024 + (i % 60000) as u16, port, flags, b"");
            f.ack = i;
            f.build()
        })
        .collect()
}
