//! Unit tests of TCP steering and reverse NAT through BPF_PROG_TEST_RUN:
//! connection affinity across flips, SYN/ACK/FIN/RST handling, flow misses,
//! the reverse-NAT rewrite, checksums (verified independently), and
//! malformed TCP headers.
use bg_common::{FLOW_CLOSING, FLOW_OPEN, FLOW_SYN, FlowKey, FlowValue};
use bg_tests::{
    packet::{ACK, FIN, Frame, PSH, RST, SYN, ipv4_header_checksum_ok, l4_checksum_ok},
    prog::{Harness, TC_ACT_OK, XDP_PASS, in_netns},
};
use bluegreen::{colour::Colour, dataplane::addr_words};

const CONFIG: &str = r#"
[[service]]
name = "tcp-601"
protocol = "tcp"
listen = "0.0.0.0:601"
blue = "198.18.1.2:601"
green = "198.18.2.2:1601"

[[service]]
name = "tcp6-6514"
protocol = "tcp"
listen = "[::]:6514"
blue = "[2001:db8:1::2]:6514"
green = "[2001:db8:2::2]:7514"
"#;

const CLIENT: &str = "198.18.0.2";
const SERVICE: &str = "198.18.0.1";

fn seg(sport: u16, flags: u8) -> Frame {
    Frame::tcp(CLIENT, SERVICE, sport, 601, flags, b"")
}

/// The frame `f` as it must leave after DNAT to `dst:dport`.
fn to(f: &Frame, dst: &str, dport: u16) -> Vec<u8> {
    let mut g = f.clone();
    g.dst = dst.parse().unwrap();
    g.dport = dport;
    g.build()
}

/// Runs a segment and returns the backend it was sent to (checking the
/// rewritten frame byte for byte against an independently built one).
fn steer(h: &mut Harness, f: &Frame) -> &'static str {
    let (action, out) = h.run(&f.build());
    assert_eq!(action, XDP_PASS);
    assert!(ipv4_header_checksum_ok(&out, 14) || f.src.is_ipv6());
    assert!(l4_checksum_ok(&out, 14), "TCP checksum after DNAT");
    let (blue, green) = if f.src.is_ipv4() {
        (("198.18.1.2", 601), ("198.18.2.2", 1601))
    } else {
        (("2001:db8:1::2", 6514), ("2001:db8:2::2", 7514))
    };
    if out == to(f, blue.0, blue.1) {
        "blue"
    } else if out == to(f, green.0, green.1) {
        "green"
    } else {
        panic!("segment rewritten to neither backend: {out:02x?}")
    }
}

fn flow(h: &Harness, client: &str, sport: u16, service: &str, dport: u16) -> Option<FlowValue> {
    let (client_be, family) = addr_words(client.parse().unwrap());
    let (server_be, _) = addr_words(service.parse().unwrap());
    let key = FlowKey {
        client_be,
        server_be,
        client_port_be: sport.to_be(),
        server_port_be: dport.to_be(),
        proto: 6,
        family,
        _pad: [0; 2],
    };
    let map = h.dp.ebpf().map("FLOWS").expect("FLOWS");
    let flows: aya::maps::HashMap<_, FlowKey, FlowValue> =
        aya::maps::HashMap::try_from(map).unwrap();
    flows.get(&key, 0).ok()
}

#[test]
fn a_connection_keeps_its_colour_across_flips_and_new_ones_take_the_active_colour() {
    in_netns("a_connection_keeps_its_colour_across_flips", || {
        let mut h = Harness::new(CONFIG, false);
        assert_eq!(
            steer(&mut h, &seg(40000, SYN)),
            "blue",
            "SYN takes the active colour"
        );
        h.dp.set_active(Colour::Green).unwrap();
        for flags in [ACK, ACK | PSH, ACK] {
            let mut f = seg(40000, flags);
            f.payload = b"12 <13>message".to_vec();
            assert_eq!(
                steer(&mut h, &f),
                "blue",
                "established segment stays on blue"
            );
        }
        assert_eq!(
            steer(&mut h, &seg(40001, SYN)),
            "green",
            "a new connection after the flip"
        );
        h.dp.set_active(Colour::Blue).unwrap();
        assert_eq!(steer(&mut h, &seg(40001, ACK)), "green");
        // A SYN on a flow that carried data is a new connection reusing the
        // ports (the old one ended without FIN or RST): the active colour.
        assert_eq!(steer(&mut h, &seg(40001, SYN)), "blue");
        // A retransmitted SYN (nothing but SYNs seen) keeps its colour.
        assert_eq!(steer(&mut h, &seg(40002, SYN)), "blue");
        h.dp.set_active(Colour::Green).unwrap();
        assert_eq!(steer(&mut h, &seg(40002, SYN)), "blue");
        assert_eq!(
            flow(&h, CLIENT, 40002, SERVICE, 601).unwrap().state,
            FLOW_SYN
        );
        assert_eq!(steer(&mut h, &seg(40002, ACK)), "blue");
        assert_eq!(
            flow(&h, CLIENT, 40002, SERVICE, 601).unwrap().state,
            FLOW_OPEN,
            "handshake done"
        );
        let [blue, green] = h.traffic(0);
        assert_eq!((blue.tcp_new, green.tcp_new), (3, 1));
        assert_eq!((blue.tcp_established, green.tcp_established), (4, 1));
        assert_eq!(blue.tcp_flow_miss + green.tcp_flow_miss, 0);
        let f = flow(&h, CLIENT, 40000, SERVICE, 601).expect("flow entry");
        assert_eq!((f.colour, f.state), (0, FLOW_OPEN));
    });
}

#[test]
fn fin_and_rst_mark_the_flow_closing_and_a_new_syn_reuses_the_ports() {
    in_netns("fin_and_rst_mark_the_flow_closing", || {
        let mut h = Harness::new(CONFIG, false);
        for (sport, close) in [(41000u16, FIN | ACK), (41001, RST)] {
            assert_eq!(steer(&mut h, &seg(sport, SYN)), "blue");
            assert_eq!(
                steer(&mut h, &seg(sport, close)),
                "blue",
                "the close itself still reaches blue"
            );
            assert_eq!(
                flow(&h, CLIENT, sport, SERVICE, 601).unwrap().state,
                FLOW_CLOSING
            );
        }
        assert_eq!(h.traffic(0)[0].tcp_closing, 2);
        // Late segments of the closing flow stay on blue after a flip...
        h.dp.set_active(Colour::Green).unwrap();
        assert_eq!(steer(&mut h, &seg(41000, ACK)), "blue");
        assert_eq!(
            h.traffic(0)[0].tcp_closing,
            2,
            "closing is counted once per flow"
        );
        // ...but a new SYN on the same ports is a new connection.
        assert_eq!(steer(&mut h, &seg(41000, SYN)), "green");
        assert_eq!(
            flow(&h, CLIENT, 41000, SERVICE, 601).unwrap().state,
            FLOW_SYN
        );
    });
}

#[test]
fn a_segment_without_a_flow_goes_to_the_active_colour_and_counts_as_a_miss() {
    in_netns("a_segment_without_a_flow_is_a_miss", || {
        let mut h = Harness::new(CONFIG, false);
        h.dp.set_active(Colour::Green).unwrap();
        assert_eq!(steer(&mut h, &seg(42000, ACK | PSH)), "green");
        assert_eq!(h.traffic(0)[1].tcp_flow_miss, 1);
        // The miss records the flow, so the rest of it stays together.
        h.dp.set_active(Colour::Blue).unwrap();
        assert_eq!(steer(&mut h, &seg(42000, ACK)), "green");
        assert_eq!(h.traffic(0)[1].tcp_established, 1);
    });
}

#[test]
fn ipv6_tcp_is_steered_with_valid_checksums() {
    in_netns("ipv6_tcp_is_steered_with_valid_checksums", || {
        let mut h = Harness::new(CONFIG, false);
        let syn = Frame::tcp("2001:db8::2", "2001:db8::1", 43000, 6514, SYN, b"");
        assert_eq!(steer(&mut h, &syn), "blue");
        h.dp.set_active(Colour::Green).unwrap();
        let data = Frame::tcp(
            "2001:db8::2",
            "2001:db8::1",
            43000,
            6514,
            ACK | PSH,
            b"\x16\x03\x01tls bytes",
        );
        assert_eq!(steer(&mut h, &data), "blue", "TLS is steered at L4, opaque");
        let syn2 = Frame::tcp("2001:db8::2", "2001:db8::1", 43001, 6514, SYN, b"");
        assert_eq!(steer(&mut h, &syn2), "green");
    });
}

#[test]
fn tcp_options_are_kept_and_checksums_stay_valid() {
    in_netns("tcp_options_are_kept", || {
        let mut h = Harness::new(CONFIG, false);
        let mut f = seg(44000, SYN);
        // MSS 1460, SACK permitted, timestamps, window scale: 20 bytes.
        f.tcp_options = vec![
            2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(steer(&mut h, &f), "blue");
    });
}

#[test]
fn malformed_tcp_headers_pass_untouched() {
    in_netns("malformed_tcp_headers_pass_untouched", || {
        let mut h = Harness::new(CONFIG, false);
        let good = seg(45000, SYN).build();
        let doff = 14 + 20 + 12;
        let mut cases = Vec::new();
        for bad in [0u8, 4] {
            let mut f = good.clone();
            f[doff] = bad << 4;
            cases.push((format!("data offset {bad}"), f));
        }
        let mut f = good.clone();
        f[doff] = 8 << 4; // 32-byte header claimed, 20 present: truncated options
        cases.push(("truncated options".into(), f));
        let mut opts = seg(45000, SYN);
        opts.tcp_options = vec![1, 1, 1, 1, 2, 4, 5, 180];
        let with_opts = opts.build();
        for cut in [with_opts.len() - 4, 14 + 20 + 20, 14 + 20 + 10] {
            let mut f = with_opts[..cut].to_vec();
            let tot = (cut - 14) as u16;
            f[16..18].copy_from_slice(&tot.to_be_bytes()); // IP length agrees with the cut
            cases.push((format!("cut at {cut}"), f));
        }
        for (what, frame) in &cases {
            let (action, out) = h.run(frame);
            assert_eq!(action, XDP_PASS, "{what}");
            assert_eq!(&out, frame, "{what}: untouched");
        }
        assert_eq!(h.counters()["pass_malformed"], cases.len() as u64);
        assert_eq!(h.traffic(0)[0].tcp_new, 0, "no flow was opened");
    });
}

/// A reply from the backend gets the service address and port back as its
/// source, with checksums that verify in full; unrelated packets pass.
#[test]
fn replies_of_steered_flows_get_the_service_address_back() {
    in_netns(
        "replies_of_steered_flows_get_the_service_address_back",
        || {
            let mut h = Harness::new(CONFIG, false);
            h.dp.set_active(Colour::Green).unwrap();
            assert_eq!(steer(&mut h, &seg(46000, SYN)), "green");
            let reply = Frame::tcp("198.18.2.2", CLIENT, 1601, 46000, SYN | ACK, b"");
            let (action, out) = h.run_tc(&reply.build());
            assert_eq!(action, TC_ACT_OK);
            let mut expected = reply.clone();
            expected.src = SERVICE.parse().unwrap();
            expected.sport = 601;
            assert_eq!(out, expected.build(), "source rewritten to the service");
            assert!(ipv4_header_checksum_ok(&out, 14));
            assert!(l4_checksum_ok(&out, 14));

            // IPv6, with data.
            let syn6 = Frame::tcp("2001:db8::2", "2001:db8::1", 46001, 6514, SYN, b"");
            assert_eq!(steer(&mut h, &syn6), "green");
            let reply6 = Frame::tcp(
                "2001:db8:2::2",
                "2001:db8::2",
                7514,
                46001,
                ACK | PSH,
                b"server says hi",
            );
            let (_, out) = h.run_tc(&reply6.build());
            let mut expected = reply6.clone();
            expected.src = "2001:db8::1".parse().unwrap();
            expected.sport = 6514;
            assert_eq!(out, expected.build());
            assert!(l4_checksum_ok(&out, 14));

            // Not a steered flow: another port, another client, UDP.
            let strangers = [
                Frame::tcp("198.18.2.2", CLIENT, 1601, 46999, ACK, b"").build(),
                Frame::tcp("198.18.2.2", "198.18.0.9", 1601, 46000, ACK, b"").build(),
                Frame::udp("198.18.2.2", CLIENT, 1601, 46000, b"udp").build(),
            ];
            for frame in &strangers {
                let (action, out) = h.run_tc(frame);
                assert_eq!((action, &out), (TC_ACT_OK, frame), "untouched");
            }
            let c = h.counters();
            assert_eq!((c["unnat"], c["unnat_pass"]), (2, 3));
        },
    );
}

/// A server-side FIN or RST (seen on egress) also marks the flow closing,
/// so drains see connections the backend closed.
#[test]
fn a_server_side_close_marks_the_flow_closing() {
    in_netns("a_server_side_close_marks_the_flow_closing", || {
        let mut h = Harness::new(CONFIG, false);
        assert_eq!(steer(&mut h, &seg(47000, SYN)), "blue");
        let fin = Frame::tcp("198.18.1.2", CLIENT, 601, 47000, FIN | ACK, b"");
        let (_, out) = h.run_tc(&fin.build());
        assert_eq!(&out[14 + 12..14 + 16], &[198, 18, 0, 1], "rewritten");
        assert_eq!(
            flow(&h, CLIENT, 47000, SERVICE, 601).unwrap().state,
            FLOW_CLOSING
        );
    });
}
