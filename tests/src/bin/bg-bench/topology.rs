//! The parts every throughput scenario shares: the bench object's
//! programs, the live-frames generator in the `gen` namespace,
//! counting sinks on blue and green, and the syslog frames sent.
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use bg_tests::{
    lab::{Family, service_addr},
    netns::NetNs,
    packet::Frame,
};
use bluegreen::dataplane::load_bench_object;

/// A traffic variant: address family and syslog message size.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Traffic {
    pub family: Family,
    pub size: usize,
}

impl Traffic {
    pub const ALL: [Traffic; 4] = [
        Traffic::new(Family::V4, 100),
        Traffic::new(Family::V4, 500),
        Traffic::new(Family::V6, 100),
        Traffic::new(Family::V6, 500),
    ];
    pub const BASE: Traffic = Traffic::new(Family::V4, 100);

    pub const fn new(family: Family, size: usize) -> Self {
        Self { family, size }
    }

    pub fn label(&self) -> String {
        let v = match self.family {
            Family::V4 => 4,
            Family::V6 => 6,
        };
        format!("IPv{v} {} B", self.size)
    }
}

/// The generator behind a row, named on every one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Gen {
    /// `bg_gen` through BPF_PROG_TEST_RUN live frames: batches at full speed.
    LiveFrames,
    /// An AF_PACKET socket, each frame at its own due time.
    Paced,
    /// netsniff-ng's trafgen, on one CPU.
    Trafgen,
}

impl Gen {
    pub fn label(self) -> &'static str {
        match self {
            Gen::LiveFrames => "live frames",
            Gen::Paced => "paced AF_PACKET",
            Gen::Trafgen => "trafgen",
        }
    }
}

/// The bench object, loaded for one of its programs. It pins nothing: its
/// maps and links go when it is dropped.
pub struct Loaded {
    pub ebpf: Ebpf,
}

impl Loaded {
    pub fn new() -> Result<Self> {
        Ok(Self {
            ebpf: load_bench_object()?,
        })
    }
}

pub fn mac(ns: &NetNs, dev: &str) -> Result<[u8; 6]> {
    ns.mac(dev)
}

pub fn ifindex(ns: &NetNs, dev: &str) -> Result<u32> {
    let out = ns.run("ip", &["-o", "link", "show", "dev", dev])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .context("ip link")?
        .trim()
        .parse()?)
}

/// Loads the bench object inside `ns` and attaches `program` to `dev` there
/// (the kernel resolves interfaces in the caller's namespace). The link
/// stays until the namespace, and with it the interface, goes.
pub fn attach_in(
    ns: &NetNs,
    program: &'static str,
    dev: String,
    setup: impl FnOnce(&mut Ebpf) -> Result<()> + Send + 'static,
) -> Result<Loaded> {
    ns.enter(move || -> Result<Loaded> {
        let mut loaded = Loaded::new()?;
        setup(&mut loaded.ebpf)?;
        let prog: &mut Xdp = loaded
            .ebpf
            .program_mut(program)
            .context(program)?
            .try_into()?;
        prog.load()?;
        let id = prog.attach(&dev, XdpMode::Driver)?;
        std::mem::forget(prog.take_link(id)?);
        Ok(loaded)
    })?
}

/// What a counting sink has seen so far.
#[derive(Clone, Copy, Default, Debug)]
pub struct SinkCount {
    /// Tagged UDP frames: the generator's.
    pub frames: u64,
    /// Of those, frames tagged for the other colour.
    pub wrong: u64,
    /// UDP frames without a tag: probes, or a relay that rewrote the end.
    pub untagged: u64,
}

impl std::ops::Sub for SinkCount {
    type Output = SinkCount;
    fn sub(self, o: SinkCount) -> SinkCount {
        SinkCount {
            frames: self.frames - o.frames,
            wrong: self.wrong - o.wrong,
            untagged: self.untagged - o.untagged,
        }
    }
}

/// A counting sink (`bg_sink`) on a backend namespace's veth.
pub struct Sink(Loaded);

impl Sink {
    pub fn attach(ns: &NetNs, colour_letter: u8) -> Result<Self> {
        Ok(Self(attach_in(ns, "bg_sink", "b0".into(), move |ebpf| {
            let mut own: Array<_, u8> =
                Array::try_from(ebpf.map_mut("SINK_COLOUR").context("SINK_COLOUR")?)?;
            own.set(0, colour_letter, 0)?;
            Ok(())
        })?))
    }

    pub fn count(&self) -> Result<SinkCount> {
        let map = self.0.ebpf.map("SINK_COUNT").context("SINK_COUNT")?;
        let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(SinkCount {
            frames: counts.get(&0, 0)?.iter().sum(),
            wrong: counts.get(&1, 0)?.iter().sum(),
            untagged: counts.get(&2, 0)?.iter().sum(),
        })
    }
}

/// The live-frames generator (`bg_gen`), sending out of `c0` in the `gen`
/// namespace (the lab's client). It counts exactly what it sent: each
/// test run transmits `repeat` frames or fails.
pub struct Generator {
    loaded: Arc<Mutex<Loaded>>,
    expect: Mutex<Array<MapData, u8>>,
    ifindex: u32,
}

impl Generator {
    pub fn new(ns: &NetNs, dev: &str) -> Result<Self> {
        let mut loaded = Loaded::new()?;
        let expect = Array::try_from(loaded.ebpf.take_map("GEN_EXPECT").context("GEN_EXPECT")?)?;
        let p: &mut Xdp = loaded
            .ebpf
            .program_mut("bg_gen")
            .context("bg_gen")?
            .try_into()?;
        p.load()?;
        Ok(Self {
            loaded: Arc::new(Mutex::new(loaded)),
            expect: Mutex::new(expect),
            ifindex: ifindex(ns, dev)?,
        })
    }

    /// The colour frames generated from now on must reach: b'B', b'G', or
    /// b'?' for either (during a flip).
    pub fn expect(&self, letter: u8) -> Result<()> {
        let mut map = self
            .expect
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        map.set(0, letter, 0)?;
        Ok(())
    }

    /// Sends from `ns` (the one given to `new`) `total` copies of `frame`
    /// (varied per frame by the program),
    /// at `rate` frames per second when given, else as fast as it goes.
    /// Returns (sent, seconds).
    pub fn send(
        &self,
        ns: &NetNs,
        frame: &[u8],
        total: u32,
        rate: Option<u32>,
    ) -> Result<(u64, f64)> {
        let loaded = self.loaded.clone();
        let frame = frame.to_vec();
        let index = self.ifindex;
        // The kernel resolves ingress_ifindex in the caller's namespace.
        ns.enter(move || -> Result<(u64, f64)> {
            let mut loaded = loaded.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            // The template the program restores on every run: u32 length, bytes.
            let mut template = [0u8; 4 + 640];
            template[..4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            template[4..4 + frame.len()].copy_from_slice(&frame);
            let mut templates: Array<_, [u8; 644]> = Array::try_from(
                loaded
                    .ebpf
                    .map_mut("GEN_TEMPLATE")
                    .context("GEN_TEMPLATE")?,
            )?;
            templates.set(0, template, 0)?;
            let p: &Xdp = loaded
                .ebpf
                .program("bg_gen")
                .context("bg_gen")?
                .try_into()?;
            // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            ctx[12..16].copy_from_slice(&index.to_ne_bytes());
            let started = Instant::now();
            let batch = batch(total, rate);
            let mut sent = 0u32;
            while sent < total {
                let n = batch.min(total - sent);
                if let Some(r) = rate {
                    let due = started + Duration::from_secs_f64(f64::from(sent) / f64::from(r));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&frame);
                opts.ctx_in = Some(&ctx);
                opts.repeat = n;
                opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
                p.test_run(opts)?;
                sent += n;
            }
            // A paced run lasts at least its schedule: the last batch is
            // due (total - batch) / rate in, and spreads over a batch's time.
            let elapsed = started.elapsed().as_secs_f64();
            let scheduled = rate.map_or(0.0, |r| f64::from(total) / f64::from(r));
            Ok((u64::from(total), elapsed.max(scheduled)))
        })?
    }
}

/// Frames per live-frames run: each run costs milliseconds to set up, so
/// batches of 50 ms of traffic keep the average rate without that cost
/// dominating. A batch goes out at full speed: it is the generator's burst.
pub fn batch(total: u32, rate: Option<u32>) -> u32 {
    rate.map_or(total, |r| (r / 20).max(1)).min(total)
}

/// A UDP syslog frame to the service address, `traffic.size` bytes of
/// RFC 3164 message (so a relay forwards it), ending in the tag byte b'?'.
/// The generator varies source address and port and fixes the checksums.
pub fn syslog_frame(traffic: Traffic, to_mac: [u8; 6], from_mac: [u8; 6]) -> Vec<u8> {
    flow_frame(
        traffic,
        client_addr(traffic.family),
        40000,
        to_mac,
        from_mac,
    )
}

/// The lab client's own address in a family.
pub fn client_addr(family: Family) -> &'static str {
    match family {
        Family::V4 => "198.18.0.2",
        Family::V6 => "2001:db8::2",
    }
}

/// The payload every generator sends: `traffic.size` bytes of RFC 3164
/// message ending in the tag byte b'?' (either colour).
pub fn syslog_payload(traffic: Traffic) -> Vec<u8> {
    let mut payload = b"<14>Nov 24 00:00:00 gen bench: ".to_vec();
    payload.resize(traffic.size - 1, b'x');
    payload.push(b'?');
    payload
}

fn flow_frame(
    traffic: Traffic,
    source: &str,
    port: u16,
    to_mac: [u8; 6],
    from_mac: [u8; 6],
) -> Vec<u8> {
    let target = service_addr(traffic.family);
    let frame = Frame::udp(
        source,
        &target.ip().to_string(),
        port,
        target.port(),
        &syslog_payload(traffic),
    );
    let mut f = frame.build();
    f[0..6].copy_from_slice(&to_mac);
    f[6..12].copy_from_slice(&from_mac);
    f
}

/// The 4096 flows the live-frames generator cycles through (64 source
/// addresses times 64 ports, as `bg_gen` varies them), built in full with
/// their checksums, for the paced generator to send in turn.
pub fn syslog_flows(traffic: Traffic, to_mac: [u8; 6], from_mac: [u8; 6]) -> Vec<Vec<u8>> {
    (0..4096u16)
        .map(|flow| {
            let host = 2 + flow % 64;
            let source = match traffic.family {
                Family::V4 => format!("198.18.0.{host}"),
                Family::V6 => format!("2001:db8::{host:x}"),
            };
            flow_frame(traffic, &source, 10000 + flow / 64, to_mac, from_mac)
        })
        .collect()
}
