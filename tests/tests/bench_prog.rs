//! The benchmark's own instruments, checked through BPF_PROG_TEST_RUN: the
//! generator (`bg_gen`) must emit frames that a kernel path accepts (valid
//! checksums, verified here by an independent implementation) with varied
//! sources and the colour tag; the counting sink (`bg_sink`) must judge
//! tags exactly. A wrong instrument would make every figure wrong.
use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use bg_tests::{
    lab::PinRoot,
    packet::{Frame, ipv4_header_checksum_ok, l4_checksum_ok},
    privileged,
};
use bluegreen::dataplane::{TableSizes, load_bench_object, load_object};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// One program of the bench object, loaded (its maps are not pinned).
struct Object {
    ebpf: aya::Ebpf,
}

impl Object {
    fn new(program: &str) -> Self {
        let mut ebpf = load_bench_object().expect("load the bench object");
        let p: &mut Xdp = ebpf.program_mut(program).unwrap().try_into().unwrap();
        p.load().expect("verifier accepts the program");
        Self { ebpf }
    }

    fn run(&self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let p: &Xdp = self.ebpf.program(program).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = p.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

fn template(src: &str, dst: &str, size: usize) -> Vec<u8> {
    let mut payload = b"<14>Nov 24 00:00:00 gen bench: ".to_vec();
    payload.resize(size - 1, b'x');
    payload.push(b'?');
    Frame::udp(src, dst, 40000, 514, &payload).build()
}

/// The bench's programs and maps are in their own object, none of them in
/// the one the agent loads; what steers is not in the bench object.
#[test]
fn the_agents_object_holds_no_bench_programs() {
    if !privileged() {
        return;
    }
    const BENCH_PROGRAMS: [&str; 8] = [
        "bg_gen",
        "bg_sink",
        "bg_fwd",
        "bg_noop",
        "bg_noop_tc",
        "bg_lookup_key40",
        "bg_lookup_key12",
        "bg_count_tc",
    ];
    const BENCH_MAPS: [&str; 9] = [
        "GEN_TEMPLATE",
        "GEN_SEQ",
        "GEN_EXPECT",
        "SINK_COUNT",
        "SINK_COLOUR",
        "FWD_TO",
        "LOOKUP_KEY40",
        "LOOKUP_KEY12",
        "TC_SEEN",
    ];
    let pins = PinRoot::new("bluegreen-objects");
    let agent = load_object(&pins.0.join("x"), false, TableSizes::SMALL).expect("agent object");
    let bench = load_bench_object().expect("bench object");
    let names = |e: &aya::Ebpf| -> (Vec<String>, Vec<String>) {
        (
            e.programs().map(|(n, _)| n.to_owned()).collect(),
            e.maps().map(|(n, _)| n.to_owned()).collect(),
        )
    };
    let (agent_progs, agent_maps) = names(&agent);
    let (bench_progs, bench_maps) = names(&bench);
    for p in BENCH_PROGRAMS {
        assert!(
            !agent_progs.iter().any(|n| n == p),
            "{p} in {agent_progs:?}"
        );
        assert!(
            bench_progs.iter().any(|n| n == p),
            "{p} not in {bench_progs:?}"
        );
    }
    for m in BENCH_MAPS {
        assert!(!agent_maps.iter().any(|n| n == m), "{m} in {agent_maps:?}");
        assert!(
            bench_maps.iter().any(|n| n == m),
            "{m} not in {bench_maps:?}"
        );
    }
    assert!(
        agent_progs.iter().any(|n| n == "bg_steer"),
        "{agent_progs:?}"
    );
    assert!(
        !bench_progs.iter().any(|n| n.starts_with("bg_steer")),
        "{bench_progs:?}"
    );
}

/// The key-size bench compares two lookups of the same flow: each must
/// find the flow the bench puts in, and only that flow (a swapped port, an
/// address off by one, UDP, IPv6 all miss or are refused), or its figures
/// would be a miss's or a different path's.
#[test]
fn the_key_size_lookups_find_the_benched_flow_and_nothing_else() {
    if !privileged() {
        return;
    }
    use bg_tests::{
        lookup_bench,
        packet::{ACK, PSH},
    };
    const XDP_ABORTED: u32 = 0;
    let flow = Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 601, ACK | PSH, b"x").build();
    let mut bench = lookup_bench::load(64).expect("bench object with the lookup tables");
    for name in &lookup_bench::PROGRAMS[1..] {
        assert_eq!(
            lookup_bench::verdict(&bench, name, &flow).unwrap(),
            XDP_DROP,
            "{name}: an empty table"
        );
    }
    lookup_bench::insert_flow(&mut bench, &flow).unwrap();
    let others = [
        Frame::tcp("198.18.0.2", "198.18.0.1", 601, 40000, ACK, b"x").build(),
        Frame::tcp("198.18.0.3", "198.18.0.1", 40000, 601, ACK, b"x").build(),
        Frame::tcp("198.18.0.2", "198.18.0.1", 40001, 601, ACK, b"x").build(),
        Frame::tcp("198.18.0.2", "198.18.0.1", 40000, 602, ACK, b"x").build(),
    ];
    for name in &lookup_bench::PROGRAMS[1..] {
        assert_eq!(
            lookup_bench::verdict(&bench, name, &flow).unwrap(),
            XDP_PASS,
            "{name}: the benched flow"
        );
        for (i, other) in others.iter().enumerate() {
            assert_eq!(
                lookup_bench::verdict(&bench, name, other).unwrap(),
                XDP_DROP,
                "{name}: other flow {i}"
            );
        }
        for frame in [
            Frame::udp("198.18.0.2", "198.18.0.1", 40000, 601, b"x").build(),
            Frame::tcp("2001:db8::2", "2001:db8::1", 40000, 601, ACK, b"x").build(),
        ] {
            assert_eq!(
                lookup_bench::verdict(&bench, name, &frame).unwrap(),
                XDP_ABORTED,
                "{name}: not IPv4 TCP"
            );
        }
    }
}

#[test]
fn generator_frames_carry_valid_checksums_varied_sources_and_the_tag() {
    if !privileged() {
        return;
    }
    let mut obj = Object::new("bg_gen");
    for (src, dst, size) in [
        ("198.18.0.2", "198.18.0.1", 100),
        ("198.18.0.2", "198.18.0.1", 501),
        ("2001:db8::2", "2001:db8::1", 100),
        ("2001:db8::2", "2001:db8::1", 501),
    ] {
        let frame = template(src, dst, size);
        let mut t = [0u8; 644];
        t[..4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        t[4..4 + frame.len()].copy_from_slice(&frame);
        let mut templates: Array<_, [u8; 644]> =
            Array::try_from(obj.ebpf.map_mut("GEN_TEMPLATE").unwrap()).unwrap();
        templates.set(0, t, 0).unwrap();
        let v6 = src.contains(':');
        let (addr_low, sport) = if v6 { (37, 54) } else { (29, 34) };
        let mut sources = std::collections::BTreeSet::new();
        for (i, tag) in [0u8, b'G', b'B', b'?']
            .into_iter()
            .cycle()
            .take(200)
            .enumerate()
        {
            let mut expect: Array<_, u8> =
                Array::try_from(obj.ebpf.map_mut("GEN_EXPECT").unwrap()).unwrap();
            expect.set(0, tag, 0).unwrap();
            // Garbage in: the generator restores the template whatever the
            // page held (live frames recycle pages).
            let junk = vec![0xa5u8; frame.len()];
            let (action, out) = obj.run("bg_gen", &junk);
            assert_eq!(action, XDP_TX, "{src} size {size} run {i}");
            assert_eq!(out.len(), frame.len());
            if !v6 {
                assert!(
                    ipv4_header_checksum_ok(&out, 14),
                    "IPv4 header checksum, run {i}"
                );
            }
            assert!(
                l4_checksum_ok(&out, 14),
                "{src} size {size}: UDP checksum, run {i}"
            );
            assert_ne!(out[sport + 6..sport + 8], [0, 0], "a checksum is present");
            let want_tag = if tag == 0 { b'?' } else { tag };
            assert_eq!(*out.last().unwrap(), want_tag, "tag byte, run {i}");
            let port = u16::from_be_bytes([out[sport], out[sport + 1]]);
            assert!((10000..10064).contains(&port), "source port {port}");
            assert!((2..66).contains(&out[addr_low]), "source address low byte");
            // Nothing else moved: headers (the IPv4 header checksum aside),
            // destination, payload up to the tag.
            let mut head = out[..addr_low - 1].to_vec();
            let mut want = frame[..addr_low - 1].to_vec();
            if !v6 {
                head.drain(24..26);
                want.drain(24..26);
            }
            assert_eq!(head, want, "up to the source's low byte");
            assert_eq!(
                out[addr_low + 1..sport],
                frame[addr_low + 1..sport],
                "destination"
            );
            assert_eq!(
                out[sport + 8..out.len() - 1],
                frame[sport + 8..frame.len() - 1]
            );
            sources.insert((out[addr_low], port));
        }
        assert_eq!(
            sources.len(),
            200,
            "each frame comes from a new source pair"
        );
    }
}

#[test]
fn sink_counts_tags_and_passes_everything_else() {
    if !privileged() {
        return;
    }
    let mut obj = Object::new("bg_sink");
    let mut own: Array<_, u8> = Array::try_from(obj.ebpf.map_mut("SINK_COLOUR").unwrap()).unwrap();
    own.set(0, b'B', 0).unwrap();
    let frame = |tag: &[u8], v6: bool| {
        let mut payload = b"<14>Nov 24 00:00:00 gen bench: xxxx".to_vec();
        payload.extend_from_slice(tag);
        let (s, d) = if v6 {
            ("2001:db8::2", "2001:db8:1::2")
        } else {
            ("198.18.0.2", "198.18.1.2")
        };
        let mut f = Frame::udp(s, d, 10000, 514, &payload).build();
        // Ethernet padding must not be taken for the tag.
        f.extend_from_slice(&[0u8; 6]);
        f
    };
    // (tag, counted as tagged, counted as wrong)
    let cases: [(&[u8], bool, bool); 7] = [
        (b"B", true, false),
        (b"G", true, true),
        (b"?", true, false),
        (b"G\n", true, true),
        (b"B\n", true, false),
        (b"x", false, false),
        (b"\n", false, false),
    ];
    let (mut tagged, mut wrong, mut untagged) = (0, 0, 0);
    for v6 in [false, true] {
        for (tag, is_tagged, is_wrong) in cases {
            let (action, _) = obj.run("bg_sink", &frame(tag, v6));
            assert_eq!(action, XDP_DROP, "UDP is counted and dropped");
            tagged += u64::from(is_tagged);
            wrong += u64::from(is_wrong);
            untagged += u64::from(!is_tagged);
        }
    }
    // ARP passes, uncounted.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.resize(60, 0);
    assert_eq!(obj.run("bg_sink", &arp).0, XDP_PASS);
    let counts: PerCpuArray<_, u64> =
        PerCpuArray::try_from(obj.ebpf.map("SINK_COUNT").unwrap()).unwrap();
    let sum = |slot: u32| -> u64 { counts.get(&slot, 0).unwrap().iter().sum() };
    assert_eq!((sum(0), sum(1), sum(2)), (tagged, wrong, untagged));
}
