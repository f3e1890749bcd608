//! Unit tests of the XDP packet path through BPF_PROG_TEST_RUN.
//!
//! Each test loads the real object with its own pinned maps, fills them from
//! a real config, and runs frames through `bg_steer` inside a fresh network
//! namespace (so the FIB answer is deterministic). Expected frames are built
//! independently with full checksum computation.
use aya::maps::DevMapHash;
use bg_tests::{
    fixtures::XDP_SERVICES,
    netns::NetNs,
    packet::{Frame, SYN, internet_checksum, ipv4_header_checksum_ok, l4_checksum_ok},
    privileged,
    prog::{Harness, XDP_PASS, XDP_REDIRECT, XDP_TX, in_netns},
    unique_id,
};
use bluegreen::{
    config::Config,
    model::{Colour, Traffic},
};

fn harness() -> Harness {
    Harness::new(XDP_SERVICES, false)
}

fn rewritten(f: &Frame, dst: &str, dport: u16) -> Vec<u8> {
    let mut g = f.clone();
    g.dst = dst.parse().unwrap();
    g.dport = dport;
    g.build()
}

fn assert_checksums_valid(frame: &[u8], l3: usize) {
    if frame[l3] >> 4 == 4 {
        assert!(ipv4_header_checksum_ok(frame, l3), "IPv4 header checksum");
    }
    assert!(l4_checksum_ok(frame, l3), "UDP checksum");
}

#[test]
fn ipv4_udp_is_dnated_to_the_active_colour_byte_exact() {
    in_netns(|| {
        let mut h = harness();
        let f = Frame::udp(
            "198.18.0.2",
            "198.18.0.1",
            40000,
            514,
            b"<13>Nov 24 host app: hello",
        );
        let (action, out) = h.run(&f.build());
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, rewritten(&f, "198.18.1.2", 514), "blue DNAT bytes");
        assert_checksums_valid(&out, 14);

        h.dp.set_active(Colour::Green).unwrap();
        let (action, out) = h.run(&f.build());
        assert_eq!(action, XDP_PASS);
        assert_eq!(
            out,
            rewritten(&f, "198.18.2.2", 5514),
            "green DNAT bytes (port too)"
        );
        assert_checksums_valid(&out, 14);

        let t = h.traffic(0);
        let len = f.build().len() as u64;
        assert_eq!(
            t[0],
            Traffic {
                packets: 1,
                bytes: len,
                ..Traffic::default()
            }
        );
        assert_eq!(
            t[1],
            Traffic {
                packets: 1,
                bytes: len,
                ..Traffic::default()
            }
        );
        // Forwarding is off in this namespace: the FIB says so, and we pass.
        assert_eq!(h.counters()["pass_fwd_disabled"], 2);
    });
}

#[test]
fn ipv6_udp_is_dnated_byte_exact_on_both_colours() {
    in_netns(|| {
        let mut h = harness();
        let f = Frame::udp("2001:db8::2", "2001:db8::1", 40001, 514, b"<14>v6 message");
        let (action, out) = h.run(&f.build());
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, rewritten(&f, "2001:db8:1::2", 514));
        assert_checksums_valid(&out, 14);
        h.dp.set_active(Colour::Green).unwrap();
        let (_, out) = h.run(&f.build());
        assert_eq!(out, rewritten(&f, "2001:db8:2::2", 6514));
        assert_checksums_valid(&out, 14);
        assert_eq!(h.traffic(2)[1].packets, 1);
    });
}

#[test]
fn vlan_tagged_frames_are_dnated_and_keep_their_tag() {
    in_netns(|| {
        let mut h = harness();
        for tpid in [0x8100u16, 0x88a8] {
            let mut f = Frame::udp("198.18.0.2", "198.18.0.1", 40002, 514, b"<13>tagged");
            f.vlan = Some((tpid, 100));
            let (action, out) = h.run(&f.build());
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, rewritten(&f, "198.18.1.2", 514), "tpid {tpid:#x}");
            assert_checksums_valid(&out, 18);

            let mut f6 = Frame::udp("2001:db8::2", "2001:db8::1", 40002, 514, b"<13>tagged6");
            f6.vlan = Some((tpid, 200));
            let (_, out) = h.run(&f6.build());
            assert_eq!(
                out,
                rewritten(&f6, "2001:db8:1::2", 514),
                "v6 tpid {tpid:#x}"
            );
            assert_checksums_valid(&out, 18);
        }
        assert_eq!(
            h.counters()["pass_kernel_route"],
            4,
            "tagged frames go to the kernel's VLAN device"
        );
    });
}

#[test]
fn ipv4_options_are_honoured() {
    in_netns(|| {
        let mut h = harness();
        for options in [vec![1, 1, 1, 0], vec![1; 40]] {
            let mut f = Frame::udp("198.18.0.2", "198.18.0.1", 40003, 514, b"<13>with options");
            f.ipv4_options = options.clone();
            let (action, out) = h.run(&f.build());
            assert_eq!(action, XDP_PASS);
            assert_eq!(
                out,
                rewritten(&f, "198.18.1.2", 514),
                "{} option bytes",
                options.len()
            );
            assert_checksums_valid(&out, 14);
        }
    });
}

#[test]
fn ipv4_udp_without_checksum_stays_without() {
    in_netns(|| {
        let mut h = harness();
        let mut f = Frame::udp("198.18.0.2", "198.18.0.1", 40004, 514, b"<13>no checksum");
        f.no_udp_checksum = true;
        let (_, out) = h.run(&f.build());
        assert_eq!(out, rewritten(&f, "198.18.1.2", 514));
        assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0], "checksum stays 0");
        assert!(ipv4_header_checksum_ok(&out, 14));
    });
}

/// Found by the differential fuzzer: XDP made up a sum for an IPv6 UDP
/// datagram without one, TC kept its 0. Both keep it now (RFC 6936).
#[test]
fn ipv6_udp_without_checksum_stays_without_on_xdp_and_tc() {
    in_netns(|| {
        let mut h = harness();
        let f = Frame::udp("2001:db8::2", "2001:db8::1", 40004, 514, b"<13>zero sum");
        let mut frame = f.build();
        let check = 14 + 40 + 6;
        frame[check..check + 2].copy_from_slice(&[0, 0]);
        let mut want = rewritten(&f, "2001:db8:1::2", 514);
        want[check..check + 2].copy_from_slice(&[0, 0]);
        let (_, out) = h.run(&frame);
        assert_eq!(out, want, "XDP");
        let (_, out) = h.run_steer_tc(&frame);
        assert_eq!(out, want, "TC");
    });
}

/// RFC 768: a datagram whose checksum comes out as 0 is sent with 0xffff,
/// since 0 means "none", on XDP and on TC. One UDP frame in 65,536 meets it; this one is
/// made to: its last payload word makes the rewritten datagram sum to 0.
#[test]
fn a_checksum_that_comes_out_0_is_sent_as_all_ones() {
    in_netns(|| {
        let mut h = harness();
        // An even payload, so its last two bytes are one word of the sum.
        let mut f = Frame::udp("198.18.0.2", "198.18.0.1", 40004, 514, b"<13>sums to 0...");
        f.payload.extend_from_slice(&[0, 0]);
        let mut after = rewritten(&f, "198.18.1.2", 514);
        let (l4, end) = (14 + 20, after.len());
        after[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        let len = ((end - l4) as u16).to_be_bytes();
        let pseudo = [&after[26..34], &[0, 17], &len[..]].concat();
        // The word that completes the sum to 0xffff: the checksum of the rest.
        let w = internet_checksum(&[&pseudo, &after[l4..]]);
        let n = f.payload.len();
        f.payload[n - 2..].copy_from_slice(&w.to_be_bytes());
        let frame = f.build();
        assert_ne!(
            &frame[l4 + 6..l4 + 8],
            &[0xff, 0xff],
            "the input's own sum differs"
        );
        let (_, out) = h.run(&frame);
        assert_eq!(&out[l4 + 6..l4 + 8], &[0xff, 0xff], "all ones, not 0");
        assert!(l4_checksum_ok(&out, 14));
        let mut want = rewritten(&f, "198.18.1.2", 514);
        want[l4 + 6..l4 + 8].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(out, want, "XDP");
        let (_, out) = h.run_steer_tc(&frame);
        assert_eq!(out, want, "TC");
    });
}

#[test]
fn a_specific_listen_address_wins_over_any() {
    in_netns(|| {
        let mut h = harness();
        let f = Frame::udp("198.18.0.2", "198.18.0.10", 40005, 514, b"<13>specific");
        let (_, out) = h.run(&f.build());
        assert_eq!(out, rewritten(&f, "198.18.1.10", 1514));
        assert_eq!(h.traffic(1)[0].packets, 1);
        assert_eq!(h.traffic(0)[0].packets, 0);
    });
}

/// Incremental checksum updates agree with full recomputation across many
/// addresses, ports and payloads (carries in every position).
#[test]
fn incremental_checksums_match_full_recomputation_over_many_packets() {
    in_netns(|| {
        let mut h = harness();
        let mut x: u32 = 0x9e37_79b9;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for i in 0..400u32 {
            let r = next();
            let payload: Vec<u8> = (0..(r % 300) as usize)
                .map(|j| (next() >> (j % 24)) as u8)
                .collect();
            let sport = (next() % 65535 + 1) as u16;
            let (mut f, dst, dport) = if i % 2 == 0 {
                let src = format!("198.19.{}.{}", r >> 24, (r >> 16) & 0xff);
                (
                    Frame::udp(&src, "198.18.0.1", sport, 514, &payload),
                    "198.18.1.2",
                    514,
                )
            } else {
                let src = format!("2001:db8:{:x}::{:x}", r >> 16, r & 0xffff);
                (
                    Frame::udp(&src, "2001:db8::1", sport, 514, &payload),
                    "2001:db8:1::2",
                    514,
                )
            };
            f.ttl = (r & 0xff) as u8 | 2;
            let (action, out) = h.run(&f.build());
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, rewritten(&f, dst, dport), "packet {i}");
        }
    });
}

/// Non-matching frames come back byte for byte and are counted.
#[test]
fn non_matching_frames_pass_untouched() {
    in_netns(|| {
        let mut h = harness();
        // TCP to 514: the config steers only UDP there.
        let tcp = Frame::tcp("198.18.0.2", "198.18.0.1", 40006, 514, SYN, b"");
        let mut icmp = Frame::udp("198.18.0.2", "198.18.0.1", 0, 0, b"ping");
        icmp.proto = 1;
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        let frames = vec![
            Frame::udp("198.18.0.2", "198.18.0.1", 40006, 515, b"other port").build(),
            Frame::udp(
                "2001:db8::2",
                "2001:db8::99",
                40006,
                514,
                b"other v6 address",
            )
            .build(),
            tcp.build(),
            icmp.build(),
            arp,
        ];
        for frame in &frames {
            let (action, out) = h.run(frame);
            assert_eq!(action, XDP_PASS);
            assert_eq!(&out, frame, "untouched");
        }
        assert_eq!(h.counters()["pass_no_service"], frames.len() as u64);
        assert_eq!(h.traffic(0), [Traffic::default(); 2]);
    });
}

/// Every truncation of a valid frame, at every header boundary and in
/// between, passes untouched and counts as malformed.
#[test]
fn truncated_frames_pass_untouched_and_count_as_malformed() {
    in_netns(|| {
        let mut h = harness();
        let mut tagged = Frame::udp("198.18.0.2", "198.18.0.1", 40007, 514, b"<13>x");
        tagged.vlan = Some((0x8100, 7));
        let mut runs = 0;
        for f in [
            Frame::udp("198.18.0.2", "198.18.0.1", 40007, 514, b"<13>x"),
            Frame::udp("2001:db8::2", "2001:db8::1", 40007, 514, b"<13>x"),
            tagged,
        ] {
            let full = f.build();
            // XDP test runs need at least an Ethernet header.
            for len in 14..full.len() {
                let frame = &full[..len];
                let (action, out) = h.run(frame);
                assert_eq!(action, XDP_PASS, "len {len}");
                assert_eq!(out, frame, "len {len} untouched");
                runs += 1;
            }
        }
        // A tagged frame cut right after the tag has no EtherType payload at
        // all, which is also malformed; every run above counts once.
        assert_eq!(h.counters()["pass_malformed"], runs);
        assert_eq!(h.traffic(0), [Traffic::default(); 2]);
    });
}

#[test]
fn bad_headers_pass_untouched() {
    in_netns(|| {
        let mut h = harness();
        let good = Frame::udp("198.18.0.2", "198.18.0.1", 40008, 514, b"<13>bad headers").build();
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        for ihl in [0u8, 4] {
            let mut f = good.clone();
            f[14] = 0x40 | ihl;
            cases.push(("IHL below 5", f));
        }
        let mut f = good.clone();
        f[14] = 0x4f; // 60-byte header in a frame whose IP packet is shorter
        cases.push(("IHL past the end", f));
        let mut f = good.clone();
        f[14] = 0x65; // version 6 in an IPv4 EtherType
        cases.push(("wrong IP version", f));
        let mut f = good.clone();
        f[16..18].copy_from_slice(&2000u16.to_be_bytes());
        cases.push(("IPv4 total length past the frame", f));
        let mut f = good.clone();
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&4u16.to_be_bytes());
        cases.push(("UDP length below 8", f));
        let mut f = good.clone();
        f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&900u16.to_be_bytes());
        cases.push(("UDP length past the frame", f));
        for (what, frame) in &cases {
            let (action, out) = h.run(frame);
            assert_eq!(action, XDP_PASS, "{what}");
            assert_eq!(&out, frame, "{what}: untouched");
        }
        assert_eq!(h.counters()["pass_malformed"], cases.len() as u64);
    });
}

#[test]
fn ipv4_fragments_pass_untouched() {
    in_netns(|| {
        let mut h = harness();
        for frag in [0x2000u16, 0x0001, 0x20b9] {
            let mut f = Frame::udp("198.18.0.2", "198.18.0.1", 40009, 514, b"<13>fragment");
            f.frag = frag;
            let frame = f.build();
            let (action, out) = h.run(&frame);
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, frame, "frag field {frag:#x}");
        }
        assert_eq!(h.counters()["pass_fragment"], 3);
    });
}

#[test]
fn ipv6_extension_headers_pass_untouched() {
    in_netns(|| {
        let mut h = harness();
        for next in [0u8, 43, 44, 60] {
            let mut frame =
                Frame::udp("2001:db8::2", "2001:db8::1", 40010, 514, b"<13>ext").build();
            frame[14 + 6] = next; // Next Header: an extension header
            let (action, out) = h.run(&frame);
            assert_eq!(action, XDP_PASS);
            assert_eq!(out, frame, "next header {next}");
        }
        assert_eq!(h.counters()["pass_ipv6_ext"], 4);
    });
}

/// With forwarding on and a neighbour for the backend behind the ingress
/// interface, the program sends the frame back out (XDP_TX) with the FIB's
/// MACs and a decremented TTL, checksums still valid. An unresolved
/// neighbour is not cached, and a changed backend never reuses the cached
/// next hop of the old one.
#[test]
fn backend_behind_the_ingress_interface_uses_xdp_tx() {
    if !privileged() {
        return;
    }
    let ns = NetNs::new(&format!("bgu{}", unique_id())).expect("netns");
    let run = |args: &[&str]| ns.run(args[0], &args[1..]).expect("setup");
    run(&[
        "ip", "link", "add", "tx0", "type", "veth", "peer", "name", "tx1",
    ]);
    run(&["ip", "link", "set", "tx0", "address", "02:00:00:00:00:aa"]);
    run(&["ip", "link", "set", "tx0", "up"]);
    run(&["ip", "link", "set", "tx1", "up"]);
    run(&["ip", "addr", "add", "198.18.1.1/24", "dev", "tx0"]);
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let ns_path = ns.path();
    let neigh = move |ip: &str, mac: &str| {
        let ok = std::process::Command::new("nsenter")
            .args([
                &format!("--net={ns_path}"),
                "ip",
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                "tx0",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip neigh replace {ip}");
    };
    ns.enter(move || {
        let mut h = harness();
        let tx0 = bluegreen::dataplane::if_index("tx0").unwrap();
        let f = Frame::udp("198.18.0.2", "198.18.0.1", 40011, 514, b"<13>tx path");
        let frame = f.build();
        let run_on_tx0 = |h: &mut Harness| h.run_on(&frame, tx0);
        let expect = |dst: &str, mac_last: u8| {
            let mut e = f.clone();
            e.dst = dst.parse().unwrap();
            e.ttl = 63;
            let mut e = e.build();
            e[0..6].copy_from_slice(&[2, 0, 0, 0, 0, mac_last]);
            e[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xaa]);
            e
        };

        // No neighbour yet: the kernel resolves it; nothing is cached.
        let (action, out) = run_on_tx0(&mut h);
        assert_eq!(action, XDP_PASS, "counters: {:?}", h.counters());
        assert_eq!(out, rewritten(&f, "198.18.1.2", 514), "only the DNAT");
        assert_eq!(h.counters()["pass_no_neigh"], 1);

        neigh("198.18.1.2", "02:00:00:00:00:bb");
        let (action, out) = run_on_tx0(&mut h);
        assert_eq!(action, XDP_TX, "counters: {:?}", h.counters());
        assert_eq!(out, expect("198.18.1.2", 0xbb));
        assert!(ipv4_header_checksum_ok(&out, 14));
        assert!(l4_checksum_ok(&out, 14));

        // Move blue to another address: the next packet must not use the
        // next hop cached for the old one.
        neigh("198.18.1.3", "02:00:00:00:00:cc");
        let moved = XDP_SERVICES.replace("blue = \"198.18.1.2:514\"", "blue = \"198.18.1.3:514\"");
        let config = Config::parse(std::path::Path::new("unit.toml"), &moved).unwrap();
        h.dp.apply_config(&config).unwrap();
        let (action, out) = run_on_tx0(&mut h);
        assert_eq!(action, XDP_TX);
        assert_eq!(out, expect("198.18.1.3", 0xcc));
        assert_eq!(h.counters()["tx"], 2);
    })
    .expect("enter netns");
}

/// A next hop cached for an interface that then leaves the redirect devmap:
/// the frame goes to the kernel as the DNAT left it (MACs and TTL as they
/// came), counted as `redirect_failed`, and is never dropped.
#[test]
fn a_redirect_target_that_left_the_devmap_is_passed_not_dropped() {
    if !privileged() {
        return;
    }
    let ns = NetNs::new(&format!("bgu{}", unique_id())).expect("netns");
    let run = |args: &[&str]| ns.run(args[0], &args[1..]).expect("setup");
    for (a, b) in [("in0", "in1"), ("out0", "out1")] {
        run(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
        run(&["ip", "link", "set", a, "up"]);
        run(&["ip", "link", "set", b, "up"]);
    }
    run(&["ip", "addr", "add", "198.18.0.1/24", "dev", "in0"]);
    run(&["ip", "addr", "add", "198.18.1.1/24", "dev", "out0"]);
    run(&[
        "ip",
        "neigh",
        "replace",
        "198.18.1.2",
        "lladdr",
        "02:00:00:00:00:bb",
        "dev",
        "out0",
    ]);
    run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    ns.enter(move || {
        let mut h = harness();
        h.dp.refresh_redirect_ifaces().unwrap();
        let in0 = bluegreen::dataplane::if_index("in0").unwrap();
        let out0 = bluegreen::dataplane::if_index("out0").unwrap();
        let f = Frame::udp(
            "198.18.0.2",
            "198.18.0.1",
            40012,
            514,
            b"<13>left the devmap",
        );
        let frame = f.build();
        // The cached hop is used only within NEXT_HOP_TTL_JIFFIES of its
        // lookup: try until one removal lands inside that window.
        let mut exercised = false;
        for _ in 0..20 {
            devmap(&mut h).insert(out0, out0, None, 0).unwrap();
            let before = h.dp.now_jiffies().unwrap();
            let (action, _) = h.run_on(&frame, in0);
            assert_eq!(action, XDP_REDIRECT, "counters: {:?}", h.counters());
            devmap(&mut h).remove(out0).unwrap();
            let failed = h.counters()["redirect_failed"];
            let (action, out) = h.run_on(&frame, in0);
            let after = h.dp.now_jiffies().unwrap();
            assert_eq!(action, XDP_PASS, "never dropped: {:?}", h.counters());
            assert_eq!(out, rewritten(&f, "198.18.1.2", 514), "only the DNAT");
            assert!(ipv4_header_checksum_ok(&out, 14));
            assert!(l4_checksum_ok(&out, 14));
            assert_eq!(h.counters()["redirect_failed"], failed + 1);
            if after.wrapping_sub(before) + 1 < bg_common::NEXT_HOP_TTL_JIFFIES {
                exercised = true;
                break;
            }
        }
        assert!(exercised, "never ran inside the next-hop cache's lifetime");
    })
    .expect("enter netns");
}

fn devmap(h: &mut Harness) -> DevMapHash<&mut aya::maps::MapData> {
    DevMapHash::try_from(h.dp.ebpf_mut().map_mut("REDIRECT_IFACES").unwrap()).unwrap()
}

/// Collects log records from aya-log.
#[derive(Default)]
struct Captured(std::sync::Mutex<Vec<String>>);

impl log::Log for &'static Captured {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

/// The data path's debug logs reach user space through aya-log when the
/// agent enables them, and say what is wrong.
#[test]
fn debug_logs_report_a_backend_of_the_wrong_family() {
    in_netns(|| {
        let mut h = Harness::new(XDP_SERVICES, true);
        let captured: &'static Captured = Box::leak(Box::default());
        let mut logger =
            aya_log::EbpfLogger::init_with_logger(h.dp.ebpf_mut(), captured).expect("AYA_LOGS map");
        // Hand-write what bgctl never would: an IPv6 backend for an IPv4 service.
        {
            let map = h.dp.ebpf_mut().map_mut("BACKENDS").unwrap();
            let mut backends: aya::maps::Array<_, bg_common::Backend> =
                aya::maps::Array::try_from(map).unwrap();
            let wrong = bluegreen::dataplane::backend("[2001:db8:1::2]:514".parse().unwrap(), 0);
            backends.set(h.ids[0] * 2, wrong, 0).unwrap();
        }
        let frame = Frame::udp("198.18.0.2", "198.18.0.1", 40012, 514, b"<13>x").build();
        let (action, out) = h.run(&frame);
        assert_eq!((action, &out), (XDP_PASS, &frame), "passed untouched");
        assert_eq!(h.counters()["pass_family_mismatch"], 1);
        logger.flush();
        let lines = captured.0.lock().unwrap().clone();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("DEBUG") && l.contains("backend family differs")),
            "{lines:?}"
        );
    });
}

/// Sanity check of the independent checksum used above on a DNATed frame:
/// flipping one payload bit must break it, so the assertions can fail.
#[test]
fn checksum_verification_detects_corruption() {
    let f = Frame::udp("198.18.0.2", "198.18.1.2", 1, 514, b"abc").build();
    assert!(l4_checksum_ok(&f, 14));
    let mut bad = f.clone();
    bad[f.len() - 1] ^= 1;
    assert!(!l4_checksum_ok(&bad, 14));
    assert_ne!(internet_checksum(&[&f[14..34]]), 1);
}

/// A reload must never hand a leaving service's id to a new one while the
/// leaving one is still in the map (its frames would go to the new
/// service's backends), and must manage the largest set even when the old
/// and new sets together do not fit: the leaving services then go first.
#[test]
fn a_reload_keeps_ids_apart_and_fits_a_full_set_of_services() {
    if !privileged() {
        return;
    }
    in_netns(|| {
        let mut h = harness();
        let specific_id = h.ids[1];
        // v4-specific leaves, a new service arrives: it gets a fresh id.
        let swapped = XDP_SERVICES.replace(
            "name = \"v4-specific\"\nprotocol = \"udp\"\nlisten = \"198.18.0.10:514\"",
            "name = \"v4-new\"\nprotocol = \"udp\"\nlisten = \"198.18.0.11:514\"",
        );
        let config = Config::parse(std::path::Path::new("unit.toml"), &swapped).unwrap();
        let ids = h.dp.apply_config(&config).unwrap();
        assert_eq!(
            (ids[0], ids[2]),
            (h.ids[0], h.ids[2]),
            "kept services keep their ids"
        );
        assert_ne!(
            ids[1], specific_id,
            "the new service took the leaving one's id"
        );

        // v4-any kept, and 255 new services: 3 + 255 exceed the 256 slots.
        let mut full = String::from(
            "[[service]]\nname = \"v4-any\"\nprotocol = \"udp\"\nlisten = \"0.0.0.0:514\"\nblue = \"198.18.1.2:514\"\ngreen = \"198.18.2.2:5514\"\n",
        );
        for port in 2001..2256 {
            full.push_str(&format!(
                "\n[[service]]\nname = \"u{port}\"\nprotocol = \"udp\"\nlisten = \"0.0.0.0:{port}\"\nblue = \"198.18.1.2:{port}\"\ngreen = \"198.18.2.2:{port}\"\n"
            ));
        }
        let config = Config::parse(std::path::Path::new("unit.toml"), &full).unwrap();
        let ids =
            h.dp.apply_config(&config)
                .expect("a full set of services applies");
        assert_eq!(ids.len(), bg_common::MAX_SERVICES as usize);
        assert_eq!(ids[0], h.ids[0], "the kept service keeps its id");
        for (port, expect) in [(514u16, 514u16), (2001, 2001), (2255, 2255)] {
            let f = Frame::udp("198.18.0.2", "198.18.0.1", 40000, port, b"<14>full");
            let (action, out) = h.run(&f.build());
            assert_ne!(action, XDP_TX, "no neighbour here: passed to the kernel");
            assert_eq!(out, rewritten(&f, "198.18.1.2", expect), "port {port}");
        }
        // The leaving v6 service is gone.
        let v6 = Frame::udp("2001:db8::2", "2001:db8::1", 40000, 514, b"<14>gone").build();
        assert_eq!(
            h.run(&v6).1,
            v6,
            "a removed service's frames pass untouched"
        );
    });
}

/// `bg-bench --prog` times `bg_steer` stage by stage through its cut
/// programs; each must stop exactly where it says, or the table lies.
/// Before the DNAT a cut leaves the frame as it came; from the DNAT on it
/// is rewritten; the colour's counters move from the count stage on, and
/// the delivery counters only with the whole program.
#[test]
fn stage_cuts_stop_where_they_say() {
    in_netns(|| {
        let mut h = harness();
        let f = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, b"<13>cut");
        let frame = f.build();
        let dnated = rewritten(&f, "198.18.1.2", 514);
        let delivered = |h: &Harness| -> u64 {
            h.counters()
                .iter()
                .filter(|(n, _)| !n.starts_with("pass_no_service"))
                .map(|(_, v)| v)
                .sum()
        };
        let mut packets = 0;
        let mut counted = delivered(&h);
        for (name, _) in bg_common::stage_cut::STAGES {
            let (action, out) = h.run_xdp(name, &frame);
            assert_eq!(action, XDP_PASS, "{name}");
            let rewrites = !matches!(name, "bg_steer_cut_parse" | "bg_steer_cut_decide");
            if rewrites {
                assert_eq!(out, dnated, "{name}: DNAT bytes");
                assert_checksums_valid(&out, 14);
            } else {
                assert_eq!(out, frame, "{name}: the frame as it came");
            }
            let counts = rewrites && name != "bg_steer_cut_dnat";
            packets += u64::from(counts);
            assert_eq!(h.traffic(0)[0].packets, packets, "{name}: colour counters");
            let now = delivered(&h);
            assert_eq!(
                now - counted,
                u64::from(name == "bg_steer"),
                "{name}: delivery counters"
            );
            counted = now;
        }
    });
}
