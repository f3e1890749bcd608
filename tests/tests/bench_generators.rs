//! The bench's generators, checked from the receiving side with tcpdump,
//! an independent observer: the paced sender keeps its slots (no bursts
//! at a rate it can carry), and trafgen's frames carry correct checksums
//! and the configured flows in both address families.
use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};
use bg_tests::{
    lab::veth, netns::NetNs, paced::Paced, packet::Frame, privileged, trafgen, unique_id, wait_for,
};

/// Two namespaces joined by a veth pair: frames sent out of `gen0` arrive on `sink0`.
fn pair() -> Result<(NetNs, NetNs)> {
    let id = unique_id();
    let a = NetNs::new(&format!("bggen-a{id}"))?;
    let b = NetNs::new(&format!("bggen-b{id}"))?;
    veth(&a, "gen0", &b, "sink0")?;
    Ok((a, b))
}

/// tcpdump on `sink0`, writing up to `count` UDP frames with nanosecond
/// timestamps to `file`; returns once it listens. Bounded by `timeout`.
fn capture(ns: &NetNs, file: &Path, count: u32) -> Result<std::process::Child> {
    let err = file.with_extension("err");
    let child = ns
        .command("timeout")
        .args(["20", "tcpdump", "-i", "sink0", "-n", "-B", "65536"])
        .args([
            "--time-stamp-precision=nano",
            "-c",
            &count.to_string(),
            "-w",
        ])
        .arg(file)
        .arg("udp")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .context("tcpdump (Debian package tcpdump; `cargo xtask setup` installs it)")?;
    wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&err)
            .ok()
            .filter(|t| t.contains("listening on"))
    })
    .context("tcpdump did not start listening")?;
    Ok(child)
}

/// tcpdump's reading of a capture, one line per frame.
fn read(file: &Path, verbose: bool) -> Result<Vec<String>> {
    let mut c = std::process::Command::new("tcpdump");
    c.args(["-r"])
        .arg(file)
        .args(["-n", "-tt", "--time-stamp-precision=nano"]);
    if verbose {
        c.arg("-vv");
    }
    let out = c.output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[test]
fn the_paced_sender_keeps_every_frame_in_its_slot() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let (a, b) = pair()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("paced.pcap");
    const N: u32 = 4000;
    let mut tcpdump = capture(&b, &file, N)?;
    let frames: Vec<Vec<u8>> = (0..16u16)
        .map(|i| Frame::udp("198.18.0.2", "198.18.0.1", 10000 + i, 514, b"<14>paced").build())
        .collect();
    // 20,000 frames/s: one every 50 us, well within what it can send.
    let run = Paced::open(&a, "gen0", frames)?.send(N, 20_000)?;
    let _ = tcpdump.wait();
    assert_eq!(run.sent, u64::from(N));
    let times: Vec<f64> = read(&file, false)?
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(times.len(), N as usize, "every frame arrived");
    let mut gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) * 1e6).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    // Back to back, frames arrive a few microseconds apart: a burst.
    let bunched = gaps.iter().filter(|g| **g < 10.0).count() as f64 / gaps.len() as f64;
    let said = format!(
        "gaps: median {median:.1} us (slot 50 us), {:.1} % under 10 us; sender: {run:?}",
        100.0 * bunched
    );
    // What the sender says of itself agrees with what arrived: every
    // bunched frame is one it knew it sent late (a busy host, such as a
    // build beside the tests, makes it late; it must not hide that).
    assert!(bunched <= run.late_share + 0.05, "{said}");
    // On time, it keeps the slots.
    if run.late_share < 0.05 {
        assert!((40.0..=60.0).contains(&median) && bunched < 0.05, "{said}");
    } else {
        println!("the host kept the sender late; checked its account only: {said}");
    }
    Ok(())
}

#[test]
fn trafgen_sends_its_configured_flows_with_correct_checksums() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let (a, b) = pair()?;
    trafgen::prepare(&a, "gen0")?;
    let dir = tempfile::tempdir()?;
    for (src, dst) in [("198.18.0.2", "198.18.0.1"), ("2001:db8::2", "2001:db8::1")] {
        let file = dir.path().join("trafgen.pcap");
        let config = dir.path().join("flow.cfg");
        let flow = trafgen::Flow {
            dst_mac: b.mac("sink0")?,
            src_mac: a.mac("gen0")?,
            src: src.parse()?,
            dst: dst.parse()?,
            source_ports: (10000, 10063),
            dst_port: 514,
            payload: b"<14>Nov 24 00:00:00 gen bench: trafgen?".to_vec(),
        };
        std::fs::write(&config, trafgen::config(&flow)?)?;
        let mut tcpdump = capture(&b, &file, 200)?;
        let run = trafgen::run(&a, "gen0", &config, 200, None)?;
        let _ = tcpdump.wait();
        assert_eq!(run.sent, 200, "{src}");
        let lines = read(&file, true)?.join("\n");
        let ok = lines.matches("[udp sum ok]").count();
        assert_eq!(ok, 200, "{src}: every checksum right:\n{lines}");
        // dinc: each of the 64 ports, first and last included.
        for port in [10000, 10001, 10063] {
            assert!(
                lines.contains(&format!("{src}.{port} > {dst}.514")),
                "{src}: port {port}:\n{lines}"
            );
        }
        assert!(
            !lines.contains(&format!("{src}.10064 ")),
            "{src}: no port past the range"
        );
    }
    Ok(())
}
