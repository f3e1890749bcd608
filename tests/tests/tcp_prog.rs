//! Unit tests of TCP steering and reverse NAT through BPF_PROG_TEST_RUN:
//! connection affinity across flips, the handshake that admits a flow,
//! SYN/ACK/FIN/RST handling, spoofed segments and floods, flow misses, the
//! reverse-NAT rewrite, checksums (verified independently), and malformed
//! TCP headers.
use bg_common::{
    FAMILY_IPV4, FLOW_CLOSING, FLOW_OPEN, FLOW_SYN, FlowKey, FlowKey4, FlowValue, PendingFlow,
};
use bg_tests::{
    fixtures::TCP_SERVICES,
    packet::{ACK, FIN, Frame, PSH, RST, SYN, ipv4_header_checksum_ok, l4_checksum_ok},
    prog::{Harness, TCX_NEXT, XDP_PASS, in_netns},
};
use bluegreen::{dataplane::addr_words, model::Colour};

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

fn key(client: &str, sport: u16, server: &str, dport: u16) -> FlowKey {
    let (client_be, family) = addr_words(client.parse().unwrap());
    let (server_be, _) = addr_words(server.parse().unwrap());
    FlowKey {
        client_be,
        server_be,
        client_port_be: sport.to_be(),
        server_port_be: dport.to_be(),
        proto: 6,
        family,
        _pad: [0; 2],
    }
}

/// The established-table entry of a client's connection to the service:
/// IPv4 flows in `FLOWS4`, IPv6 ones in `FLOWS`, never both.
fn flow(h: &Harness, client: &str, sport: u16, service: &str, dport: u16) -> Option<FlowValue> {
    let k = key(client, sport, service, dport);
    let map = |name| h.dp.ebpf().map(name).expect(name);
    let wide: aya::maps::HashMap<_, FlowKey, FlowValue> =
        aya::maps::HashMap::try_from(map("FLOWS")).unwrap();
    let narrow: aya::maps::HashMap<_, FlowKey4, FlowValue> =
        aya::maps::HashMap::try_from(map("FLOWS4")).unwrap();
    let (in_wide, in_narrow) = (wide.get(&k, 0).ok(), narrow.get(&FlowKey4::of(&k), 0).ok());
    if k.family == FAMILY_IPV4 {
        assert_eq!(in_wide, None, "an IPv4 flow admitted to FLOWS");
        in_narrow
    } else {
        assert_eq!(in_narrow, None, "an IPv6 flow in FLOWS4");
        in_wide
    }
}

/// The pending-table entry (handshake in progress, or probation).
fn pending(h: &Harness, sport: u16) -> Option<PendingFlow> {
    let map = h.dp.ebpf().map("PENDING_FLOWS").expect("PENDING_FLOWS");
    let flows: aya::maps::HashMap<_, FlowKey, PendingFlow> =
        aya::maps::HashMap::try_from(map).unwrap();
    flows.get(&key(CLIENT, sport, SERVICE, 601), 0).ok()
}

fn event(h: &Harness, name: &str) -> u64 {
    h.counters()[name]
}

/// The server's initial sequence number in the tests' SYN-ACKs.
const ISN: u32 = 0x5eed_0001;

/// A SYN-ACK from `backend` to the client, as it leaves through bg_unnat.
fn syn_ack(h: &mut Harness, backend: (&str, u16), sport: u16) {
    let mut f = Frame::tcp(backend.0, CLIENT, backend.1, sport, SYN | ACK, b"");
    f.seq = ISN;
    let (action, out) = h.run_tc(&f.build());
    assert_eq!(action, TCX_NEXT);
    assert_eq!(&out[14 + 12..14 + 16], &[198, 18, 0, 1], "SYN-ACK un-NATed");
}

/// The client's side of a handshake through the data path: SYN, the
/// backend's SYN-ACK on egress, and the final ACK. Returns the colour.
fn handshake(h: &mut Harness, sport: u16) -> &'static str {
    let colour = steer(h, &seg(sport, SYN));
    let backend = if colour == "blue" {
        ("198.18.1.2", 601)
    } else {
        ("198.18.2.2", 1601)
    };
    syn_ack(h, backend, sport);
    let mut ack = seg(sport, ACK);
    ack.ack = ISN.wrapping_add(1);
    assert_eq!(steer(h, &ack), colour, "the final ACK follows the SYN");
    assert!(
        flow(h, CLIENT, sport, SERVICE, 601).is_some(),
        "admitted to the established table"
    );
    assert!(pending(h, sport).is_none(), "and gone from the pending one");
    colour
}

#[test]
fn a_connection_keeps_its_colour_across_flips_and_new_ones_take_the_active_colour() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        assert_eq!(handshake(&mut h, 40000), "blue", "the active colour");
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
            handshake(&mut h, 40001),
            "green",
            "a new connection after the flip"
        );
        h.dp.set_active(Colour::Blue).unwrap();
        assert_eq!(steer(&mut h, &seg(40001, ACK)), "green");
        // A retransmitted SYN (the handshake not done) keeps its colour.
        assert_eq!(steer(&mut h, &seg(40002, SYN)), "blue");
        h.dp.set_active(Colour::Green).unwrap();
        assert_eq!(steer(&mut h, &seg(40002, SYN)), "blue");
        assert_eq!(pending(&h, 40002).unwrap().state, FLOW_SYN);
        syn_ack(&mut h, ("198.18.1.2", 601), 40002);
        let mut ack = seg(40002, ACK);
        ack.ack = ISN + 1;
        assert_eq!(steer(&mut h, &ack), "blue");
        let f = flow(&h, CLIENT, 40002, SERVICE, 601).expect("admitted");
        assert_eq!((f.colour, f.state), (0, FLOW_OPEN), "handshake done");
        let [blue, green] = h.traffic(0);
        assert_eq!((blue.tcp_new, green.tcp_new), (3, 1));
        // Final ACKs (3) and the segments after them (3 + 1).
        assert_eq!((blue.tcp_established, green.tcp_established), (5, 2));
        assert_eq!(blue.tcp_flow_miss + green.tcp_flow_miss, 0);
        assert_eq!(event(&h, "tcp_admitted"), 3);
        let f = flow(&h, CLIENT, 40000, SERVICE, 601).expect("flow entry");
        assert_eq!((f.colour, f.state), (0, FLOW_OPEN));
    });
}

/// One spoofed SYN carrying a live connection's own 4-tuple, after a flip,
/// once moved the connection to green, where it was reset. It must change
/// nothing: the kernel's conntrack ignores a SYN on an established entry,
/// and so does bg_steer.
#[test]
fn a_spoofed_syn_cannot_move_a_live_connection() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        h.dp.set_tcp_timeouts(120 * 250, 2 * 250).unwrap();
        assert_eq!(handshake(&mut h, 48000), "blue");
        h.dp.set_active(Colour::Green).unwrap();
        let before = flow(&h, CLIENT, 48000, SERVICE, 601).unwrap();
        assert_eq!(steer(&mut h, &seg(48000, SYN)), "blue", "the SYN itself");
        assert_eq!(
            flow(&h, CLIENT, 48000, SERVICE, 601).unwrap(),
            before,
            "the flow is untouched"
        );
        assert_eq!(steer(&mut h, &seg(48000, ACK | PSH)), "blue");
        assert_eq!(event(&h, "tcp_syn_on_live_flow"), 1);
        // A spoofed RST then a SYN: the grace keeps a flow that closed
        // moments ago where it was.
        assert_eq!(steer(&mut h, &seg(48000, RST)), "blue");
        assert_eq!(steer(&mut h, &seg(48000, SYN)), "blue");
        assert_eq!(event(&h, "tcp_syn_on_live_flow"), 2);
        assert_eq!(event(&h, "tcp_reopened"), 0);
    });
}

#[test]
fn fin_and_rst_mark_the_flow_closing_and_a_new_syn_reuses_the_ports() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        for (sport, close) in [(41000u16, FIN | ACK), (41001, RST)] {
            assert_eq!(handshake(&mut h, sport), "blue");
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
        // ...but a new SYN on the same ports (no close grace here) is a new
        // connection.
        assert_eq!(steer(&mut h, &seg(41000, SYN)), "green");
        assert_eq!(event(&h, "tcp_reopened"), 1);
        assert!(flow(&h, CLIENT, 41000, SERVICE, 601).is_none());
        assert_eq!(pending(&h, 41000).unwrap().state, FLOW_SYN);
    });
}

/// A client that reuses its ports to the same backend (the same colour
/// still active) after a connection closed: the old connection's reverse
/// entry is still there, and the new handshake must still be admitted, or
/// the live connection stays pending, where `drain` does not see it (the
/// soak's resets: a drained backend restarted under it).
#[test]
fn reused_ports_to_the_same_backend_are_admitted_again() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        assert_eq!(handshake(&mut h, 41500), "blue");
        assert_eq!(steer(&mut h, &seg(41500, FIN | ACK)), "blue");
        // The same ports again (no close grace here), blue still active.
        assert_eq!(steer(&mut h, &seg(41500, SYN)), "blue");
        assert_eq!(event(&h, "tcp_reopened"), 1);
        syn_ack(&mut h, ("198.18.1.2", 601), 41500);
        assert_eq!(pending(&h, 41500).unwrap().isn_seen, 1, "ISN recorded");
        let mut ack = seg(41500, ACK);
        ack.ack = ISN.wrapping_add(1);
        assert_eq!(steer(&mut h, &ack), "blue");
        assert_eq!(event(&h, "tcp_admission_refused"), 0);
        let f = flow(&h, CLIENT, 41500, SERVICE, 601).expect("admitted again");
        assert_eq!((f.colour, f.state), (0, FLOW_OPEN));
        assert!(pending(&h, 41500).is_none());
    });
}

/// A connection quiet for longer than the idle timeout takes a SYN on its
/// ports as a new connection (its client went away without FIN or RST).
#[test]
fn a_syn_on_an_idle_flow_is_a_new_connection() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        h.dp.set_tcp_timeouts(1, 1).unwrap();
        assert_eq!(handshake(&mut h, 49000), "blue");
        h.dp.set_active(Colour::Green).unwrap();
        // One jiffy is at most 10 ms.
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(steer(&mut h, &seg(49000, SYN)), "green");
        assert_eq!(event(&h, "tcp_reopened"), 1);
    });
}

/// Only the client's ACK of the server's ISN + 1 admits a handshake: a
/// blind spoofer cannot know it. Anything else stays pending, on the
/// pending flow's colour.
#[test]
fn the_final_ack_must_acknowledge_the_servers_isn() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        // Before any SYN-ACK: refused.
        assert_eq!(steer(&mut h, &seg(50000, SYN)), "blue");
        h.dp.set_active(Colour::Green).unwrap();
        let mut early = seg(50000, ACK);
        early.ack = ISN + 1;
        assert_eq!(steer(&mut h, &early), "blue", "the pending colour");
        assert!(flow(&h, CLIENT, 50000, SERVICE, 601).is_none());
        assert_eq!(event(&h, "tcp_admission_refused"), 1);
        // After it, the wrong number: refused.
        syn_ack(&mut h, ("198.18.1.2", 601), 50000);
        let p = pending(&h, 50000).unwrap();
        assert_eq!((p.isn_seen, p.server_isn), (1, ISN), "bg_unnat recorded it");
        for wrong in [ISN, ISN + 2, 0] {
            let mut f = seg(50000, ACK);
            f.ack = wrong;
            assert_eq!(steer(&mut h, &f), "blue");
        }
        assert!(flow(&h, CLIENT, 50000, SERVICE, 601).is_none());
        assert_eq!(event(&h, "tcp_admission_refused"), 4);
        // The right one: admitted, on the colour of its SYN.
        let mut f = seg(50000, ACK);
        f.ack = ISN + 1;
        assert_eq!(steer(&mut h, &f), "blue");
        assert_eq!(flow(&h, CLIENT, 50000, SERVICE, 601).unwrap().colour, 0);
        assert_eq!(event(&h, "tcp_admitted"), 1);
    });
}

#[test]
fn a_segment_without_a_flow_goes_on_probation_on_the_active_colour() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        h.dp.set_active(Colour::Green).unwrap();
        assert_eq!(steer(&mut h, &seg(42000, ACK | PSH)), "green");
        assert_eq!(h.traffic(0)[1].tcp_flow_miss, 1);
        assert_eq!(event(&h, "tcp_probation"), 1);
        // The miss records the flow, so the rest of it stays together, but
        // on probation: it proved no handshake, so it never becomes
        // established.
        h.dp.set_active(Colour::Blue).unwrap();
        assert_eq!(steer(&mut h, &seg(42000, ACK)), "green");
        assert_eq!(h.traffic(0)[1].tcp_established, 1);
        assert_eq!(pending(&h, 42000).unwrap().state, FLOW_OPEN);
        assert!(flow(&h, CLIENT, 42000, SERVICE, 601).is_none());
        // A SYN cannot move it either.
        assert_eq!(steer(&mut h, &seg(42000, SYN)), "green");
        assert_eq!(event(&h, "tcp_syn_on_live_flow"), 1);
        assert_eq!(pending(&h, 42000).unwrap().state, FLOW_OPEN, "unchanged");
    });
}

/// Floods of spoofed SYNs and of spoofed ACKs, each ten times the size of
/// the tables, from as many fake clients, after a flip: every established
/// connection stays on its colour and keeps its reverse-NAT entry.
#[test]
fn floods_cannot_evict_established_flows() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        let live: Vec<u16> = (51000..51100).collect();
        for &sport in &live {
            assert_eq!(handshake(&mut h, sport), "blue");
        }
        h.dp.set_active(Colour::Green).unwrap();
        // The harness's tables hold 1024 entries each.
        let flood = 10 * 1024u32;
        for i in 0..flood {
            // Each fake client sends a SYN, green answers it (the SYN-ACK
            // goes to the spoofed address, unseen by the attacker), and the
            // attacker sends a blind ACK.
            let src = format!("198.19.{}.{}", i / 250, i % 250 + 1);
            let sport = 1024 + (i % 60000) as u16;
            let syn = Frame::tcp(&src, SERVICE, sport, 601, SYN, b"");
            assert_eq!(h.run(&syn.build()).0, XDP_PASS);
            let mut answer = Frame::tcp("198.18.2.2", &src, 1601, sport, SYN | ACK, b"");
            answer.seq = ISN;
            assert_eq!(h.run_tc(&answer.build()).0, TCX_NEXT);
            let mut blind = Frame::tcp(&src, SERVICE, sport, 601, ACK, b"");
            blind.ack = i;
            assert_eq!(h.run(&blind.build()).0, XDP_PASS);
        }
        for &sport in &live {
            assert_eq!(steer(&mut h, &seg(sport, ACK | PSH)), "blue", "{sport}");
            let reply = Frame::tcp("198.18.1.2", CLIENT, 601, sport, ACK, b"");
            let (_, out) = h.run_tc(&reply.build());
            assert_eq!(&out[14 + 12..14 + 16], &[198, 18, 0, 1], "{sport} un-NATed");
        }
        let [blue, green] = h.traffic(0);
        assert_eq!(blue.tcp_flow_miss, 0, "no established flow was lost");
        assert_eq!(green.tcp_new, u64::from(flood));
        assert_eq!(event(&h, "tcp_admitted"), live.len() as u64);
        assert_eq!(event(&h, "tcp_admission_refused"), u64::from(flood));
    });
}

/// A reverse-NAT entry lost (evicted) is written again from its forward
/// flow by the connection's next segment, so replies keep their source.
#[test]
fn a_missing_reverse_entry_is_restored_by_its_forward_flow() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        assert_eq!(handshake(&mut h, 52000), "blue");
        {
            let map = h.dp.ebpf_mut().map_mut("REV_FLOWS").expect("REV_FLOWS");
            let mut rev: aya::maps::HashMap<_, FlowKey, bg_common::RevValue> =
                aya::maps::HashMap::try_from(map).unwrap();
            rev.remove(&key(CLIENT, 52000, "198.18.1.2", 601)).unwrap();
        }
        let reply = Frame::tcp("198.18.1.2", CLIENT, 601, 52000, ACK, b"");
        let (_, out) = h.run_tc(&reply.build());
        assert_eq!(out, reply.build(), "without it, the reply is not ours");
        // The check runs once a jiffy (at most 10 ms).
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(steer(&mut h, &seg(52000, ACK)), "blue");
        assert_eq!(event(&h, "tcp_reverse_restored"), 1);
        let (_, out) = h.run_tc(&reply.build());
        assert_eq!(&out[14 + 12..14 + 16], &[198, 18, 0, 1], "un-NATed again");
    });
}

#[test]
fn ipv6_tcp_is_steered_with_valid_checksums() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
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

/// IPv4 flows are admitted to `FLOWS4` (12-byte key), IPv6 ones to `FLOWS`
/// (`flow` checks each is in its own table only). An IPv4 flow that an
/// older program admitted to `FLOWS` keeps its colour until it ends, so an
/// upgrade moves no live connection.
#[test]
fn each_family_is_admitted_to_its_table_and_older_ipv4_entries_still_hold() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        assert_eq!(handshake(&mut h, 42000), "blue");
        // IPv6: SYN, the backend's SYN-ACK on egress, the final ACK.
        let (c6, s6) = ("2001:db8::2", "2001:db8::1");
        assert_eq!(
            steer(&mut h, &Frame::tcp(c6, s6, 43100, 6514, SYN, b"")),
            "blue"
        );
        let mut sa = Frame::tcp("2001:db8:1::2", c6, 6514, 43100, SYN | ACK, b"");
        sa.seq = ISN;
        assert_eq!(h.run_tc(&sa.build()).0, TCX_NEXT);
        let mut ack = Frame::tcp(c6, s6, 43100, 6514, ACK, b"");
        ack.ack = ISN + 1;
        assert_eq!(steer(&mut h, &ack), "blue");
        assert!(flow(&h, c6, 43100, s6, 6514).is_some(), "IPv6 admitted");
        // An IPv4 entry as the previous program left it: in FLOWS, green.
        {
            let map = h.dp.ebpf_mut().map_mut("FLOWS").expect("FLOWS");
            let mut wide: aya::maps::HashMap<_, FlowKey, FlowValue> =
                aya::maps::HashMap::try_from(map).unwrap();
            let value = FlowValue {
                last_seen_jiffies: 0,
                colour: 1,
                state: FLOW_OPEN,
            };
            wide.insert(key(CLIENT, 42001, SERVICE, 601), value, 0)
                .unwrap();
        }
        let probation = event(&h, "tcp_probation");
        assert_eq!(steer(&mut h, &seg(42001, ACK | PSH)), "green");
        assert_eq!(event(&h, "tcp_probation"), probation, "found, not a miss");
        assert_eq!(steer(&mut h, &seg(42001, SYN)), "green", "no SYN moves it");
        assert!(pending(&h, 42001).is_none());
        assert_eq!(steer(&mut h, &seg(42000, ACK)), "blue");
    });
}

#[test]
fn tcp_options_are_kept_and_checksums_stay_valid() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
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
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
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
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        h.dp.set_active(Colour::Green).unwrap();
        // The SYN-ACK of a handshake in progress is un-NATed too.
        assert_eq!(steer(&mut h, &seg(46000, SYN)), "green");
        let reply = Frame::tcp("198.18.2.2", CLIENT, 1601, 46000, SYN | ACK, b"");
        let (action, out) = h.run_tc(&reply.build());
        assert_eq!(action, TCX_NEXT);
        let mut expected = reply.clone();
        expected.src = SERVICE.parse().unwrap();
        expected.sport = 601;
        assert_eq!(out, expected.build(), "source rewritten to the service");
        assert!(ipv4_header_checksum_ok(&out, 14));
        assert!(l4_checksum_ok(&out, 14));

        // IPv6, with data, after the handshake.
        let syn6 = Frame::tcp("2001:db8::2", "2001:db8::1", 46001, 6514, SYN, b"");
        assert_eq!(steer(&mut h, &syn6), "green");
        let mut syn_ack6 = Frame::tcp("2001:db8:2::2", "2001:db8::2", 7514, 46001, SYN | ACK, b"");
        syn_ack6.seq = ISN;
        h.run_tc(&syn_ack6.build());
        let mut ack6 = Frame::tcp("2001:db8::2", "2001:db8::1", 46001, 6514, ACK, b"");
        ack6.ack = ISN + 1;
        assert_eq!(steer(&mut h, &ack6), "green");
        assert_eq!(event(&h, "tcp_admitted"), 1, "through REV_FLOWS from here");
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
            assert_eq!((action, &out), (TCX_NEXT, frame), "untouched");
        }
        let c = h.counters();
        assert_eq!((c["unnat"], c["unnat_pass"]), (3, 3));
    });
}

/// A server-side FIN or RST (seen on egress) also marks the flow closing,
/// so drains see connections the backend closed.
#[test]
fn a_server_side_close_marks_the_flow_closing() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        assert_eq!(handshake(&mut h, 47000), "blue");
        let fin = Frame::tcp("198.18.1.2", CLIENT, 601, 47000, FIN | ACK, b"");
        let (_, out) = h.run_tc(&fin.build());
        assert_eq!(&out[14 + 12..14 + 16], &[198, 18, 0, 1], "rewritten");
        assert_eq!(
            flow(&h, CLIENT, 47000, SERVICE, 601).unwrap().state,
            FLOW_CLOSING
        );
        // A handshake the server refuses: its RST closes the pending flow.
        assert_eq!(steer(&mut h, &seg(47001, SYN)), "blue");
        let rst = Frame::tcp("198.18.1.2", CLIENT, 601, 47001, RST | ACK, b"");
        h.run_tc(&rst.build());
        assert_eq!(pending(&h, 47001).unwrap().state, FLOW_CLOSING);
    });
}
