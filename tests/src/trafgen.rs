//! netsniff-ng's `trafgen`: a second generator, written by others, that
//! builds its frames with its own header code (and checksums) from a
//! configuration. It cross-checks the live-frames generator's figures,
//! in both address families (xdp-trafficgen, the other candidate, needs a
//! tracepoint Linux 6.18 no longer has).
use std::{net::IpAddr, path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// What trafgen sends: one UDP flow template, its source port counting up
/// through `source_ports`, everything else fixed.
pub struct Flow {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub source_ports: (u16, u16),
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The configuration, in trafgen's header syntax: trafgen fills in
/// lengths and computes the IP and UDP checksums for every frame.
pub fn config(f: &Flow) -> Result<String> {
    let ip = match (f.src, f.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => format!("ipv4(sa={s}, da={d}, ttl=64)"),
        (IpAddr::V6(s), IpAddr::V6(d)) => format!("ipv6(sa={s}, da={d}, hl=64)"),
        _ => bail!(
            "trafgen flow: source {} and destination {} differ in family",
            f.src,
            f.dst
        ),
    };
    let (lo, hi) = f.source_ports;
    if lo > hi {
        bail!("trafgen flow: source ports {lo}..{hi}: the first must not exceed the last");
    }
    // Bytes, not a string literal: nothing in a payload needs escaping.
    let payload: Vec<String> = f.payload.iter().map(|b| format!("0x{b:02x}")).collect();
    Ok(format!(
        "{{ eth(da={}, sa={}), {ip}, udp(sp=dinc({lo}, {hi}), dp={}), {} }}\n",
        mac(&f.dst_mac),
        mac(&f.src_mac),
        f.dst_port,
        payload.join(", ")
    ))
}

/// The count trafgen reports on exit: "N packets outgoing".
pub fn parse_sent(output: &str) -> Option<u64> {
    output.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next() == Some("packets") && words.next() == Some("outgoing")).then_some(n)
    })
}

/// One trafgen run: what it says it sent and the run's wall time.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub sent: u64,
    pub seconds: f64,
}

/// Gives `dev` the pfifo qdisc trafgen's qdisc path (`-q`) needs: without
/// one, a full veth ring fails the send with EAGAIN and trafgen aborts.
pub fn prepare(ns: &NetNs, dev: &str) -> Result<()> {
    ns.run(
        "tc",
        &[
            "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "1000",
        ],
    )
    .map(drop)
    .with_context(|| format!("a pfifo qdisc on {dev} for trafgen"))
}

/// Sends `count` frames of the configuration at `config_path` out of
/// `dev` in `ns`, on one CPU, as fast as it can or `gap_ns` apart (trafgen
/// sleeps between frames then, which caps it near 40,000 frames/s here).
pub fn run(
    ns: &NetNs,
    dev: &str,
    config_path: &Path,
    count: u32,
    gap_ns: Option<u32>,
) -> Result<Run> {
    let mut cmd = ns.command("trafgen");
    cmd.arg("-i").arg(config_path).args([
        "-o",
        dev,
        "-q",
        "-P",
        "1",
        "-C",
        "-n",
        &count.to_string(),
    ]);
    if let Some(gap) = gap_ns {
        cmd.args(["-t", &format!("{gap}ns")]);
    }
    let started = Instant::now();
    let out = cmd
        .output()
        .context("running trafgen (Debian package netsniff-ng; `cargo xtask setup` installs it)")?;
    let seconds = started.elapsed().as_secs_f64();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("trafgen failed ({}): {}", out.status, text.trim());
    }
    let sent = parse_sent(&text).with_context(|| {
        format!(
            "no \"N packets outgoing\" in trafgen's output: {}",
            text.trim()
        )
    })?;
    Ok(Run { sent, seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(dst: &str) -> Flow {
        Flow {
            dst_mac: [0xea, 0x29, 0x1a, 0xa4, 0x93, 0x63],
            src_mac: [2, 0, 0, 0, 0, 1],
            src: "198.18.0.2".parse().unwrap(),
            dst: dst.parse().unwrap(),
            source_ports: (10000, 10063),
            dst_port: 514,
            payload: b"<14>a\"?".to_vec(),
        }
    }

    #[test]
    fn the_config_names_every_header_and_escapes_nothing() {
        let c = config(&flow("198.18.0.1")).unwrap();
        assert_eq!(
            c,
            "{ eth(da=ea:29:1a:a4:93:63, sa=02:00:00:00:00:01), ipv4(sa=198.18.0.2, da=198.18.0.1, ttl=64), \
             udp(sp=dinc(10000, 10063), dp=514), 0x3c, 0x31, 0x34, 0x3e, 0x61, 0x22, 0x3f }\n"
        );
        let mut v6 = flow("2001:db8::1");
        v6.src = "2001:db8::2".parse().unwrap();
        assert!(
            config(&v6)
                .unwrap()
                .contains("ipv6(sa=2001:db8::2, da=2001:db8::1, hl=64)")
        );
        let err = config(&flow("2001:db8::1")).unwrap_err().to_string();
        assert!(err.contains("differ in family"), "{err}");
        let mut ports = flow("198.18.0.1");
        ports.source_ports = (2, 1);
        assert!(config(&ports).is_err());
    }

    #[test]
    fn the_sent_count_comes_from_trafgens_summary() {
        let out = "Cannot set system socket memory in /proc/sys/net/core/rmem_max: Permission denied\n\n      200000 packets outgoing\n    29400000 bytes outgoing\n           0 sec, 664000 usec on CPU0 (200000 packets)\n";
        assert_eq!(parse_sent(out), Some(200_000));
        assert_eq!(parse_sent("29400000 bytes outgoing\n"), None);
        assert_eq!(parse_sent(""), None);
    }
}
