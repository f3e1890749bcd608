//! Drives the real programs through BPF_PROG_TEST_RUN with maps filled from
//! a real config, pinned under a private root removed on drop.
use std::collections::BTreeMap;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use bluegreen::{
    config::Config,
    dataplane::{Dataplane, TableSizes, load_bench_object, load_object},
    model::Traffic,
};

use crate::{lab::PinRoot, netns::NetNs, privileged, unique_id};

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
/// What bluegreen's TC programs return for every packet: tcx's TCX_NEXT
/// (-1; TC_ACT_UNSPEC on cls_bpf), so the programs after them run too.
pub const TCX_NEXT: u32 = u32::MAX;

pub struct Harness {
    pub dp: Dataplane,
    pub ids: Vec<u32>,
    // Last: the maps close before their pins go.
    _pins: PinRoot,
}

impl Harness {
    pub fn new(config: &str, debug_logs: bool) -> Self {
        let pins = PinRoot::new("bluegreen-unit");
        let pin_dir = pins.0.join("test");
        let mut ebpf = load_object(&pin_dir, debug_logs, TableSizes::SMALL).expect("load object");
        // `bg_clock` is the data path's clock, for `Dataplane::now_jiffies`.
        for name in ["bg_steer", "bg_clock", "bg_shadow_copy"] {
            let prog: &mut Xdp = ebpf.program_mut(name).expect(name).try_into().expect("xdp");
            prog.load()
                .unwrap_or_else(|e| panic!("verifier refuses {name}: {e:?}"));
        }
        for name in ["bg_unnat", "bg_steer_tc", "bg_shadow_tc"] {
            let prog: &mut SchedClassifier =
                ebpf.program_mut(name).expect(name).try_into().expect("tc");
            prog.load()
                .unwrap_or_else(|e| panic!("verifier refuses {name}: {e:?}"));
        }
        let mut dp = Dataplane::from_ebpf(ebpf, "test", 1, pin_dir);
        let config = Config::parse(std::path::Path::new("unit.toml"), config).expect("config");
        let ids = dp.apply_config(&config).expect("apply config");
        Self {
            dp,
            ids,
            _pins: pins,
        }
    }

    /// Runs `bg_steer` on a frame; returns the action and the frame after.
    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.steer();
        run_prog(|opts| prog.test_run(opts), frame)
    }

    fn steer(&mut self) -> &Xdp {
        self.dp
            .ebpf_mut()
            .program("bg_steer")
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// Runs `bg_steer` on a frame as if it arrived on `ingress` (an
    /// ifindex), so the FIB answers for that interface.
    pub fn run_on(&mut self, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
        let (r, out) = run_with_ingress(self.steer(), frame, ingress).expect("test run");
        (r.return_value, out)
    }

    /// Loads (once) and runs another XDP program of the agent's object on
    /// a frame, such as a `bg_steer_cut_*` stage of `bg-bench --prog`.
    pub fn run_xdp(&mut self, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let ebpf = self.dp.ebpf_mut();
        let prog: &mut Xdp = ebpf.program_mut(name).expect(name).try_into().expect("xdp");
        if prog.fd().is_err() {
            prog.load()
                .unwrap_or_else(|e| panic!("verifier refuses {name}: {e:?}"));
        }
        let prog: &Xdp = ebpf.program(name).unwrap().try_into().unwrap();
        run_prog(|opts| prog.test_run(opts), frame)
    }

    /// Runs `bg_steer_tc` (TC ingress) on a frame.
    pub fn run_steer_tc(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run_steer_tc(frame).expect("BPF_PROG_TEST_RUN")
    }

    /// The same, or why the kernel would not run it.
    pub fn try_run_steer_tc(
        &mut self,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        let prog: &SchedClassifier = self
            .dp
            .ebpf_mut()
            .program("bg_steer_tc")
            .unwrap()
            .try_into()
            .unwrap();
        try_run_prog(|opts| prog.test_run(opts), frame)
    }

    /// Runs `bg_steer_tc` on a frame as if it arrived on `ifindex`.
    pub fn run_steer_tc_on(&mut self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let prog: &SchedClassifier = self
            .dp
            .ebpf_mut()
            .program("bg_steer_tc")
            .unwrap()
            .try_into()
            .unwrap();
        // struct __sk_buff: `ifindex` at byte 40; the kernel accepts only a
        // few fields set, this one among them.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let (r, out) =
            test_run(|opts| prog.test_run(opts), frame, Some(&ctx)).expect("test run with ifindex");
        (r.return_value, out)
    }

    /// Runs `bg_unnat` (TC egress) on a frame.
    pub fn run_tc(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &SchedClassifier = self
            .dp
            .ebpf_mut()
            .program("bg_unnat")
            .unwrap()
            .try_into()
            .unwrap();
        run_prog(|opts| prog.test_run(opts), frame)
    }

    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        self.dp.counters().unwrap().named().collect()
    }

    /// Per-colour counters of the n-th configured service.
    pub fn traffic(&self, service: usize) -> [Traffic; 2] {
        self.dp.traffic(self.ids[service]).unwrap()
    }
}

/// Runs an XDP program once on `frame` as if it arrived on `ingress` (an
/// ifindex): the kernel's result (verdict, duration) and the frame after.
pub fn run_with_ingress(
    prog: &Xdp,
    frame: &[u8],
    ingress: u32,
) -> Result<(aya::programs::TestRunResult, Vec<u8>), aya::programs::ProgramError> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress.to_ne_bytes());
    test_run(|opts| prog.test_run(opts), frame, Some(&ctx))
}

fn run_prog(
    f: impl FnOnce(
        TestRunOptions<'_>,
    ) -> Result<aya::programs::TestRunResult, aya::programs::ProgramError>,
    frame: &[u8],
) -> (u32, Vec<u8>) {
    try_run_prog(f, frame).expect("BPF_PROG_TEST_RUN")
}

fn try_run_prog(
    f: impl FnOnce(
        TestRunOptions<'_>,
    ) -> Result<aya::programs::TestRunResult, aya::programs::ProgramError>,
    frame: &[u8],
) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
    test_run(f, frame, None).map(|(r, out)| (r.return_value, out))
}

/// One BPF_PROG_TEST_RUN of `frame`, with `ctx` as the program's context
/// if given: the kernel's result and the frame after (room for 256 bytes
/// more than came in: encapsulation grows it).
fn test_run(
    f: impl FnOnce(
        TestRunOptions<'_>,
    ) -> Result<aya::programs::TestRunResult, aya::programs::ProgramError>,
    frame: &[u8],
    ctx: Option<&[u8]>,
) -> Result<(aya::programs::TestRunResult, Vec<u8>), aya::programs::ProgramError> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = ctx;
    let r = f(opts)?;
    out.truncate(r.data_size_out as usize);
    Ok((r, out))
}

/// Runs `body` inside a fresh network namespace holding only loopback with
/// forwarding off: the FIB then hands every steered packet to the kernel,
/// so results do not depend on the host's routes.
pub fn in_netns(body: impl FnOnce() + Send + 'static) {
    if !privileged() {
        return;
    }
    let ns = NetNs::new(&format!("bgu{}", unique_id())).expect("netns");
    ns.enter(body).expect("enter netns");
}

/// The no-op XDP program (from the bench object, which pins nothing)
/// attached to an interface in a namespace, detached on drop. A veth peer
/// then runs NAPI and takes the XDP frames sent to it (XDP_TX from its
/// peer included, which GRO alone does not wake).
pub struct PassXdp {
    _ebpf: aya::Ebpf,
}

impl PassXdp {
    pub fn attach(ns: &NetNs, iface: &str) -> anyhow::Result<Self> {
        let iface = iface.to_owned();
        let ebpf = ns.enter(move || -> anyhow::Result<aya::Ebpf> {
            let mut ebpf = load_bench_object()?;
            let prog: &mut Xdp = ebpf
                .program_mut("bg_noop")
                .ok_or_else(|| anyhow::anyhow!("bg_noop missing"))?
                .try_into()?;
            prog.load()?;
            prog.attach(&iface, aya::programs::XdpMode::Driver)?;
            Ok(ebpf)
        })??;
        Ok(Self { _ebpf: ebpf })
    }
}

/// A TC program of the bench object attached to an interface of a
/// namespace (tcx), detached when dropped.
pub struct BenchTc {
    pub ebpf: aya::Ebpf,
}

impl BenchTc {
    pub fn attach(
        ns: &NetNs,
        iface: &str,
        prog: &str,
        direction: aya::programs::TcAttachType,
    ) -> anyhow::Result<Self> {
        let (iface, prog) = (iface.to_owned(), prog.to_owned());
        let ebpf = ns.enter(move || -> anyhow::Result<aya::Ebpf> {
            let mut ebpf = load_bench_object()?;
            let p: &mut SchedClassifier = ebpf
                .program_mut(&prog)
                .ok_or_else(|| anyhow::anyhow!("{prog} missing"))?
                .try_into()?;
            p.load()?;
            p.attach(&iface, direction)?;
            Ok(ebpf)
        })??;
        Ok(Self { ebpf })
    }
}

/// tx0's MAC in `wire_dsr_lab`'s namespace.
pub const TX0_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
/// The on-link backends' MAC there, and the gateway's.
pub const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xbb];
pub const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xcc];
/// tx0's MTU there (IPv6 needs at least 1280 on a link).
pub const DSR_MTU: usize = 1280;

/// Wires `ns` for direct server return through BPF_PROG_TEST_RUN: one veth
/// (`tx0`, MTU `DSR_MTU`) that reaches 198.18.1.0/24 and 2001:db8:1::/64
/// directly and 198.18.5.0/24 and 2001:db8:5::/64 through a gateway,
/// every neighbour resolved, forwarding on.
pub fn wire_dsr_lab(ns: &NetNs) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        ns.run(args[0], &args[1..])?;
        Ok(())
    };
    run(&[
        "ip", "link", "add", "tx0", "type", "veth", "peer", "name", "tx1",
    ])?;
    run(&["ip", "link", "set", "tx0", "address", "02:00:00:00:00:aa"])?;
    run(&["ip", "link", "set", "tx0", "mtu", &DSR_MTU.to_string()])?;
    run(&["ip", "link", "set", "tx0", "up"])?;
    run(&["ip", "link", "set", "tx1", "up"])?;
    run(&["ip", "addr", "add", "198.18.1.1/24", "dev", "tx0"])?;
    run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "tx0",
        "nodad",
    ])?;
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    for (ip, mac) in [
        ("198.18.1.2", "02:00:00:00:00:bb"),
        ("198.18.1.3", "02:00:00:00:00:bb"),
        ("198.18.1.4", "02:00:00:00:00:bb"),
        ("198.18.1.254", "02:00:00:00:00:cc"),
        ("2001:db8:1::3", "02:00:00:00:00:bb"),
        ("2001:db8:1::fe", "02:00:00:00:00:cc"),
    ] {
        run(&["ip", "neigh", "replace", ip, "lladdr", mac, "dev", "tx0"])?;
    }
    run(&["ip", "route", "add", "198.18.5.0/24", "via", "198.18.1.254"])?;
    run(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:5::/64",
        "via",
        "2001:db8:1::fe",
    ])?;
    Ok(())
}
