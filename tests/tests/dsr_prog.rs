//! Unit tests of direct server return through BPF_PROG_TEST_RUN: `dsr-l2`
//! changes only the MACs (and the TTL, as a router does), `dsr-ipip`
//! puts an outer header in front that etherparse (not our parser) checks,
//! frames that cannot be served pass untouched and are counted, and TCP
//! flows on a DSR colour are admitted without the SYN-ACK they never see.
//!
//! Each test runs in a namespace of its own with one veth (`tx0`, MTU
//! 1280): backends on its segment, and others behind a gateway on it.
use bg_common::{
    FlowKey, RevValue,
    shadow::{META_LEN, META_MAGIC},
};
use bg_tests::{
    fixtures::DSR_SERVICES,
    fuzz::checksums,
    netns::NetNs,
    packet::{ACK, Frame, PSH, SYN},
    privileged,
    prog::{
        BACKEND_MAC, DSR_MTU as MTU, GATEWAY_MAC, Harness, TCX_NEXT, TX0_MAC, XDP_PASS, XDP_TX,
        wire_dsr_lab,
    },
    unique_id,
};
use bluegreen::{
    dataplane::{if_index, shadow::ShadowRoute},
    model::Colour,
};
use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};

/// Runs `body` with a harness loaded from `DSR_SERVICES` inside a
/// namespace wired by `wire_dsr_lab`. `body` gets tx0's ifindex.
fn in_lab(body: impl FnOnce(&mut Harness, u32) + Send + 'static) {
    if !privileged() {
        return;
    }
    let ns = NetNs::new(&format!("bgd{}", unique_id())).expect("netns");
    wire_dsr_lab(&ns).expect("the DSR lab's links");
    ns.enter(move || {
        let mut h = Harness::new(DSR_SERVICES, false);
        let tx0 = if_index("tx0").expect("tx0");
        body(&mut h, tx0);
    })
    .expect("enter netns");
}

/// Every service of `CONFIG` flipped to `colour`.
fn flip(h: &mut Harness, colour: Colour) {
    h.dp.set_active(colour).unwrap();
}

/// Checks a `dsr-ipip` frame: Ethernet to the gateway or backend `dmac`
/// from tx0, an outer header from `src` to `dst` that etherparse parses
/// and whose checksum holds, and the client's packet after it byte for
/// byte as it came.
fn assert_encapsulated(out: &[u8], sent: &[u8], dmac: [u8; 6], src: &str, dst: &str, tos: u8) {
    assert_eq!(out[0..6], dmac, "destination MAC");
    assert_eq!(out[6..12], TX0_MAC, "source MAC");
    let inner = &sent[14..];
    match src.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(src) => {
            assert_eq!(out[12..14], [0x08, 0x00], "ethertype IPv4");
            let outer = Ipv4HeaderSlice::from_slice(&out[14..]).expect("outer IPv4 header");
            let h = outer.to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "outer checksum"
            );
            assert_eq!(outer.ihl(), 5);
            assert_eq!(outer.protocol().0, 4, "IP in IP");
            assert_eq!(outer.ttl(), 64);
            assert_eq!(outer.source_addr(), src);
            assert_eq!(outer.destination_addr().to_string(), dst);
            assert_eq!(usize::from(outer.total_len()), out.len() - 14);
            assert_eq!(
                outer.dcp().value() << 2 | outer.ecn().value(),
                tos,
                "TOS copied"
            );
            assert!(outer.dont_fragment(), "DF copied from the inner header");
            assert_eq!(&out[34..], inner, "the inner packet as it came");
        }
        std::net::IpAddr::V6(src) => {
            assert_eq!(out[12..14], [0x86, 0xdd], "ethertype IPv6");
            let outer = Ipv6HeaderSlice::from_slice(&out[14..]).expect("outer IPv6 header");
            assert_eq!(outer.next_header().0, 41, "IPv6 in IPv6");
            assert_eq!(outer.hop_limit(), 64);
            assert_eq!(outer.source_addr(), src);
            assert_eq!(outer.destination_addr().to_string(), dst);
            assert_eq!(usize::from(outer.payload_length()), out.len() - 54);
            assert_eq!(outer.traffic_class(), tos, "traffic class copied");
            assert_eq!(&out[54..], inner, "the inner packet as it came");
        }
    }
    // The inner frame, given an Ethernet header again, is a whole valid packet.
    assert!(checksums::valid(&[&sent[..14], inner].concat()));
}

#[test]
fn dsr_l2_changes_only_the_macs_and_the_ttl() {
    in_lab(|h, tx0| {
        let f = Frame::udp("198.18.0.2", "198.18.0.10", 40000, 514, b"<13>dsr l2");
        let (action, out) = h.run_on(&f.build(), tx0);
        assert_eq!(action, XDP_TX, "counters: {:?}", h.counters());
        let mut want = f.clone();
        want.ttl = 63;
        let mut want = want.build();
        want[0..6].copy_from_slice(&BACKEND_MAC);
        want[6..12].copy_from_slice(&TX0_MAC);
        assert_eq!(out, want, "the service address stays the destination");
        assert!(checksums::valid(&out));
        let c = h.counters();
        assert_eq!((c["tx"], c["dsr_l2"], c["dsr_ipip"]), (1, 1, 0));
        assert_eq!(h.traffic(0)[0].packets, 1, "counted on blue");
    });
}

#[test]
fn dsr_l2_onto_a_backend_behind_a_gateway_passes_untouched() {
    in_lab(|h, tx0| {
        flip(h, Colour::Green);
        let frame = Frame::udp("198.18.0.2", "198.18.0.10", 40001, 514, b"<13>far").build();
        let (action, out) = h.run_on(&frame, tx0);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, frame, "untouched");
        let c = h.counters();
        assert_eq!((c["dsr_not_on_link"], c["pass_kernel_route"]), (1, 1));
        assert_eq!(c["dsr_l2"], 0);
    });
}

#[test]
fn dsr_ipip_over_ipv4_adds_a_checked_outer_header() {
    in_lab(|h, tx0| {
        let mut f = Frame::udp("198.18.0.2", "198.18.0.11", 40002, 514, b"<13>tunnel");
        f.tos = 0xb8;
        let frame = f.build();
        // Blue: behind the gateway, which the outer header is sent to.
        let (action, out) = h.run_on(&frame, tx0);
        assert_eq!(action, XDP_TX, "counters: {:?}", h.counters());
        assert_encapsulated(&out, &frame, GATEWAY_MAC, "198.18.1.1", "198.18.5.3", 0xb8);
        // Green: on the segment; tunnels need no more than a route.
        flip(h, Colour::Green);
        let (action, out) = h.run_on(&frame, tx0);
        assert_eq!(action, XDP_TX);
        assert_encapsulated(&out, &frame, BACKEND_MAC, "198.18.1.1", "198.18.1.3", 0xb8);
        assert_eq!(h.counters()["dsr_ipip"], 2);
    });
}

#[test]
fn dsr_ipip_over_ipv6_adds_a_checked_outer_header() {
    in_lab(|h, tx0| {
        let mut f = Frame::udp("2001:db8::2", "2001:db8::11", 40003, 514, b"<13>tunnel6");
        f.tos = 0x2e;
        let frame = f.build();
        let (action, out) = h.run_on(&frame, tx0);
        assert_eq!(action, XDP_TX, "counters: {:?}", h.counters());
        assert_encapsulated(
            &out,
            &frame,
            GATEWAY_MAC,
            "2001:db8:1::1",
            "2001:db8:5::3",
            0x2e,
        );
        flip(h, Colour::Green);
        let (action, out) = h.run_on(&frame, tx0);
        assert_eq!(action, XDP_TX);
        assert_encapsulated(
            &out,
            &frame,
            BACKEND_MAC,
            "2001:db8:1::1",
            "2001:db8:1::3",
            0x2e,
        );
    });
}

/// The largest frame that fits the route's MTU with its outer header goes;
/// one byte more passes untouched, counted. NAT frames too big for the
/// route go to the kernel too (DNATed), not to a device that drops them.
#[test]
fn frames_too_big_for_the_route_pass_and_are_counted() {
    in_lab(|h, tx0| {
        // IPv4 + UDP headers: 28 bytes; the tunnel adds 20.
        let fits = MTU - 28 - 20;
        let udp = |len: usize, dst: &str| {
            Frame::udp("198.18.0.2", dst, 40004, 514, &vec![b'x'; len]).build()
        };
        let (action, out) = h.run_on(&udp(fits, "198.18.0.11"), tx0);
        assert_eq!(action, XDP_TX, "counters: {:?}", h.counters());
        assert_eq!(out.len() - 14, MTU, "exactly the MTU");
        let big = udp(fits + 1, "198.18.0.11");
        let (action, out) = h.run_on(&big, tx0);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, big, "untouched");
        assert_eq!(h.counters()["dsr_too_big"], 1);

        let nat_fits = MTU - 28;
        let (action, _) = h.run_on(&udp(nat_fits, "198.18.0.13"), tx0);
        assert_eq!(action, XDP_TX, "NAT at the MTU is sent");
        let big = Frame::udp(
            "198.18.0.2",
            "198.18.0.13",
            40004,
            514,
            &vec![b'x'; nat_fits + 1],
        );
        let (action, out) = h.run_on(&big.build(), tx0);
        assert_eq!(action, XDP_PASS, "NAT over the MTU goes to the kernel");
        let mut dnated = big.clone();
        dnated.dst = "198.18.1.4".parse().unwrap();
        dnated.dport = 5514;
        assert_eq!(out, dnated.build(), "only the DNAT");
        assert_eq!(h.counters()["dsr_too_big"], 1, "NAT is not DSR");
    });
}

/// No SYN-ACK crosses the steering node on a DSR colour: the handshake's
/// ACK admits the flow unchecked, and it keeps its colour across a flip.
/// A NAT colour of the same service still wants the server's ISN.
#[test]
fn tcp_on_a_dsr_colour_is_admitted_without_the_syn_ack_and_keeps_its_colour() {
    in_lab(|h, tx0| {
        let seg = |sport: u16, flags: u8, payload: &[u8]| {
            Frame::tcp("198.18.0.2", "198.18.0.12", sport, 601, flags, payload).build()
        };
        let syn = seg(41000, SYN, b"");
        let (action, out) = h.run_on(&syn, tx0);
        assert_eq!(action, XDP_TX, "counters: {:?}", h.counters());
        assert_encapsulated(&out, &syn, GATEWAY_MAC, "198.18.1.1", "198.18.5.4", 0);
        let (action, _) = h.run_on(&seg(41000, ACK, b""), tx0);
        assert_eq!(action, XDP_TX);
        let c = h.counters();
        assert_eq!((c["tcp_admitted"], c["dsr_admitted_unverified"]), (1, 1));
        assert_eq!(c["tcp_admission_refused"], 0);
        let entries = |h: &Harness, name: &str| {
            let map = h.dp.ebpf().map(name).expect(name);
            aya::maps::HashMap::<_, FlowKey, RevValue>::try_from(map)
                .unwrap()
                .keys()
                .count()
        };
        let admitted = entries(h, "REV_FLOWS") + entries(h, "PENDING_REV");
        assert_eq!(admitted, 0, "no reverse entries: replies bypass us");

        flip(h, Colour::Green);
        let data = seg(41000, ACK | PSH, b"<13>still blue\n");
        let (action, out) = h.run_on(&data, tx0);
        assert_eq!(action, XDP_TX);
        assert_encapsulated(&out, &data, GATEWAY_MAC, "198.18.1.1", "198.18.5.4", 0);

        // Green is NAT: its handshake is checked as ever.
        let (action, out) = h.run_on(&seg(41001, SYN, b""), tx0);
        assert_eq!(action, XDP_TX);
        assert_eq!(out[30..34], [198, 18, 5, 5], "DNAT to green");
        h.run_on(&seg(41001, ACK, b""), tx0);
        assert_eq!(entries(h, "PENDING_REV"), 1, "the NAT colour's handshake");
        let c = h.counters();
        assert_eq!(
            c["tcp_admission_refused"], 1,
            "no ISN seen on the NAT colour"
        );
        assert_eq!((c["tcp_admitted"], c["dsr_admitted_unverified"]), (1, 1));
    });
}

#[test]
fn dsr_frames_the_path_cannot_serve_pass_untouched_and_are_counted() {
    in_lab(|h, tx0| {
        // A VLAN tag: the frame belongs to a VLAN device.
        let mut tagged = Frame::udp("198.18.0.2", "198.18.0.10", 40005, 514, b"<13>tag");
        tagged.vlan = Some((0x8100, 7));
        let tagged = tagged.build();
        let (action, out) = h.run_on(&tagged, tx0);
        assert_eq!((action, out), (XDP_PASS, tagged));
        // TC steering (only maps written by hand get a DSR colour there).
        let frame = Frame::udp("198.18.0.2", "198.18.0.11", 40005, 514, b"<13>tc").build();
        let (action, out) = h.run_steer_tc(&frame);
        assert_eq!((action, out), (TCX_NEXT, frame));
        let c = h.counters();
        assert_eq!(c["dsr_unsupported"], 2);
        assert_eq!((c["dsr_l2"], c["dsr_ipip"]), (0, 0));
    });
}

/// A shadow while DSR colours serve: XDP hands each sampled datagram to
/// the kernel as the client sent it (no MAC change, no TTL drop, no outer
/// header: TC sends it on after the copy), with its service and backend
/// slot in the metadata, and sends nothing itself.
#[test]
fn a_sampled_dsr_datagram_goes_to_tc_untouched_with_its_slot() {
    in_lab(|h, tx0| {
        let route = |id: u32| ShadowRoute {
            id,
            blue: "198.18.1.2:514".parse().unwrap(),
            to: "198.18.1.9:5514".parse().unwrap(),
            from: "198.18.1.1:40000".parse().unwrap(),
            dmac: [0; 6],
            smac: [0; 6],
        };
        let (l2, ipip) = (h.ids[0], h.ids[1]);
        h.dp.start_shadow(&[route(l2), route(ipip)], 10_000, 0, None)
            .unwrap();
        for (id, dst) in [(l2, "198.18.0.10"), (ipip, "198.18.0.11")] {
            let frame = Frame::udp("198.18.0.2", dst, 40000, 514, b"<13>copied").build();
            let (action, out) = h.run_on(&frame, tx0);
            assert_eq!(action, XDP_PASS, "counters: {:?}", h.counters());
            assert_eq!(out.len(), META_LEN + frame.len(), "{out:02x?}");
            assert_eq!(&out[META_LEN..], &frame[..], "as the client sent it");
            let word = |i: usize| u32::from_ne_bytes(out[4 * i..4 * i + 4].try_into().unwrap());
            assert_eq!((word(0), word(1), word(2)), (META_MAGIC, id, id * 2));
            assert_eq!(h.dp.shadow_counts(id).unwrap().handed_to_tc, 1);
        }
        let c = h.counters();
        assert_eq!((c["dsr_l2"], c["dsr_ipip"], c["tx"]), (0, 0, 0));
        assert_eq!(h.traffic(0)[0].packets, 1, "counted on blue");
    });
}
