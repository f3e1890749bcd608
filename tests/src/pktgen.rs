//! The kernel's pktgen, driven the way its `samples/pktgen` scripts drive
//! it (Documentation/networking/pktgen.rst): a device added to a
//! `kpktgend_N` thread, its parameters written to `/proc/net/pktgen/DEV`
//! one per write, each answered by a `Result: OK:` line read back, then
//! `start` on `pgctrl`, which returns when the count is sent. The bench
//! uses it when the kernel has it (`CONFIG_NET_PKTGEN`); this machine's
//! kernel does not, so the live-frames generator is the fallback, and the
//! driver is tested against the documented formats through `Proc`.
use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, Result, bail};

/// The pktgen control files, real (`/proc/net/pktgen`) or a test's.
pub trait Proc {
    fn write(&mut self, file: &str, command: &str) -> Result<()>;
    fn read(&mut self, file: &str) -> Result<String>;
}

/// `/proc/net/pktgen`.
pub struct KernelProc(PathBuf);

impl KernelProc {
    pub const DIR: &'static str = "/proc/net/pktgen";

    /// The kernel's pktgen, if it has one: the directory, or after a
    /// successful `modprobe pktgen`.
    pub fn open() -> Option<Self> {
        let dir = PathBuf::from(Self::DIR);
        if !dir.is_dir() {
            let _ = std::process::Command::new("modprobe")
                .arg("pktgen")
                .stderr(std::process::Stdio::null())
                .status();
        }
        dir.join("pgctrl").exists().then_some(Self(dir))
    }
}

impl Proc for KernelProc {
    fn write(&mut self, file: &str, command: &str) -> Result<()> {
        // One write per command: pktgen parses each write on its own.
        std::fs::write(self.0.join(file), format!("{command}\n"))
            .with_context(|| format!("pktgen {file}: {command}"))
    }

    fn read(&mut self, file: &str) -> Result<String> {
        std::fs::read_to_string(self.0.join(file)).with_context(|| format!("reading pktgen {file}"))
    }
}

/// One run: `count` UDP frames of `pkt_size` bytes out of `device`.
#[derive(Clone, Debug)]
pub struct Flow {
    pub device: String,
    /// The kpktgend thread (CPU) that sends.
    pub thread: u32,
    pub count: u64,
    /// Frame size without the FCS, as pktgen counts it.
    pub pkt_size: u32,
    pub dst: Ipv4Addr,
    pub dst_mac: [u8; 6],
    pub udp_dst: u16,
    /// Nanoseconds between frames (0: as fast as it can), for a paced run.
    pub delay_ns: u64,
}

/// The writes of a run, in order: (file, command). Each but `pgctrl`'s
/// must be answered `Result: OK:`.
pub fn commands(f: &Flow) -> Vec<(String, String)> {
    let thread = format!("kpktgend_{}", f.thread);
    let dev = f.device.clone();
    let m = f.dst_mac;
    let mac = format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    );
    let mut out = vec![
        ("pgctrl".to_owned(), "reset".to_owned()),
        (thread.clone(), "rem_device_all".to_owned()),
        (thread, format!("add_device {dev}")),
    ];
    for c in [
        format!("count {}", f.count),
        // A fresh skb per frame, one per transmit call: what a veth
        // (no xmit_more batching) takes.
        "clone_skb 0".to_owned(),
        "burst 1".to_owned(),
        format!("pkt_size {}", f.pkt_size),
        format!("delay {}", f.delay_ns),
        format!("dst {}", f.dst),
        format!("dst_mac {mac}"),
        format!("udp_dst_min {}", f.udp_dst),
        format!("udp_dst_max {}", f.udp_dst),
        // Many senders, as the bench's other generators give.
        "flag UDPSRC_RND".to_owned(),
        "udp_src_min 1024".to_owned(),
        "udp_src_max 65535".to_owned(),
    ] {
        out.push((dev.clone(), c));
    }
    out.push(("pgctrl".to_owned(), "start".to_owned()));
    out
}

/// What the device file's `Result:` says after a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sent {
    pub usec: u64,
    pub packets: u64,
    pub pps: u64,
    pub errors: u64,
}

/// Parses the run's result, documented as
/// `Result: OK: 13101142(c12220741+d880401) usec, 10000000 (60byte,0frags)`
/// and on the next line `  763292pps 366Mb/sec (366380160bps) errors: 39664`.
pub fn parse_result(device_file: &str) -> Result<Sent> {
    let at = device_file
        .find("Result: ")
        .context("no Result: line in the device file")?;
    let text = &device_file[at + "Result: ".len()..];
    let Some(ok) = text.strip_prefix("OK: ") else {
        bail!("pktgen: {}", text.lines().next().unwrap_or_default().trim());
    };
    let number = |s: &str| -> Result<u64> {
        s.trim()
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .with_context(|| format!("{s:?} in {ok:?}"))
    };
    let usec = number(ok.split('(').next().unwrap_or_default())?;
    let packets = number(
        ok.split("usec,")
            .nth(1)
            .and_then(|r| r.split('(').next())
            .context("no packet count")?,
    )?;
    let pps = number(
        ok.split_whitespace()
            .find(|w| w.ends_with("pps") && !w.ends_with("bps"))
            .context("no pps")?,
    )?;
    let errors = number(ok.split("errors:").nth(1).context("no errors:")?)?;
    Ok(Sent {
        usec,
        packets,
        pps,
        errors,
    })
}

/// Runs `flow`: every write answered OK (as `samples/pktgen/functions.sh`
/// requires), then the start, then the device's result.
pub fn run(proc: &mut impl Proc, flow: &Flow) -> Result<Sent> {
    for (file, command) in commands(flow) {
        proc.write(&file, &command)?;
        if file == "pgctrl" {
            continue;
        }
        let answer = proc.read(&file)?;
        let result = answer
            .lines()
            .find(|l| l.trim_start().starts_with("Result:"))
            .unwrap_or_default();
        if !result.contains("Result: OK:") {
            bail!("pktgen {file}: {command:?} refused: {}", result.trim());
        }
    }
    parse_result(&proc.read(&flow.device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pktgen that answers as the kernel documents: `Result: OK: ...`
    /// for known parameters, `No such parameter` otherwise, and the run's
    /// result once started.
    #[derive(Default)]
    struct FakeProc {
        writes: Vec<(String, String)>,
        last: std::collections::HashMap<String, String>,
        refuse: Option<&'static str>,
    }

    impl Proc for FakeProc {
        fn write(&mut self, file: &str, command: &str) -> Result<()> {
            self.writes.push((file.to_owned(), command.to_owned()));
            let name = command.split_whitespace().next().unwrap_or_default();
            let answer = if Some(name) == self.refuse {
                format!("Result: No such parameter \"{name}\"")
            } else if command == "start" {
                self.last.insert(
                    "veth0".into(),
                    "Params: count 1000\nCurrent:\n     pkts-sofar: 1000\nResult: OK: 1310(c1220+d90) usec, 1000 (60byte,0frags)\n  763292pps 366Mb/sec (366380160bps) errors: 3\n".into(),
                );
                return Ok(());
            } else {
                format!("Result: OK: {command}")
            };
            self.last
                .insert(file.to_owned(), format!("Params: ...\n{answer}\n"));
            Ok(())
        }

        fn read(&mut self, file: &str) -> Result<String> {
            Ok(self
                .last
                .get(file)
                .cloned()
                .unwrap_or_else(|| "Result: Idle\n".into()))
        }
    }

    fn flow() -> Flow {
        Flow {
            device: "veth0".into(),
            thread: 1,
            count: 1000,
            pkt_size: 60,
            dst: Ipv4Addr::new(198, 18, 0, 1),
            dst_mac: [0x02, 0, 0, 0, 0, 0x0a],
            udp_dst: 514,
            delay_ns: 0,
        }
    }

    #[test]
    fn the_sequence_is_the_sample_scripts() {
        let c = commands(&flow());
        let has = |file: &str, cmd: &str| c.iter().any(|(f, x)| f == file && x == cmd);
        assert_eq!(c[0], ("pgctrl".into(), "reset".into()));
        assert_eq!(c[1], ("kpktgend_1".into(), "rem_device_all".into()));
        assert_eq!(c[2], ("kpktgend_1".into(), "add_device veth0".into()));
        for cmd in [
            "count 1000",
            "clone_skb 0",
            "burst 1",
            "pkt_size 60",
            "dst 198.18.0.1",
            "dst_mac 02:00:00:00:00:0a",
            "udp_dst_min 514",
            "udp_dst_max 514",
            "flag UDPSRC_RND",
        ] {
            assert!(has("veth0", cmd), "{cmd} missing from {c:?}");
        }
        assert_eq!(c.last().unwrap(), &("pgctrl".into(), "start".into()));
    }

    #[test]
    fn a_run_checks_every_answer_and_reads_the_result() {
        let mut p = FakeProc::default();
        let sent = run(&mut p, &flow()).unwrap();
        assert_eq!(
            sent,
            Sent {
                usec: 1310,
                packets: 1000,
                pps: 763_292,
                errors: 3
            }
        );
        assert_eq!(p.writes.len(), commands(&flow()).len());
        // One refused parameter stops the run before it starts.
        let mut p = FakeProc {
            refuse: Some("burst"),
            ..FakeProc::default()
        };
        let e = run(&mut p, &flow()).unwrap_err().to_string();
        assert!(
            e.contains("\"burst 1\" refused") && e.contains("No such parameter"),
            "{e}"
        );
        assert!(!p.writes.iter().any(|(_, c)| c == "start"), "never started");
    }

    #[test]
    fn results_parse_as_documented_and_failures_say_why() {
        let doc = "Result: OK: 13101142(c12220741+d880401) usec, 10000000 (60byte,0frags)\n  763292pps 366Mb/sec (366380160bps) errors: 39664\n";
        assert_eq!(
            parse_result(doc).unwrap(),
            Sent {
                usec: 13_101_142,
                packets: 10_000_000,
                pps: 763_292,
                errors: 39_664
            }
        );
        assert!(
            parse_result("Result: Idle\n")
                .unwrap_err()
                .to_string()
                .contains("Idle")
        );
        assert!(parse_result("Params: count 1\n").is_err());
    }
}
