//! Unit tests of the TC steering program (`bg_steer_tc`, `attach = "tc"`)
//! through BPF_PROG_TEST_RUN: the same decisions as XDP, the rewrite done
//! by the kernel's checksum helpers, byte-exact against frames built
//! independently, and everything else untouched.
use bg_tests::{
    fixtures::TC_SERVICES,
    packet::{ACK, Frame, SYN, ipv4_header_checksum_ok, l4_checksum_ok},
    prog::{Harness, TCX_NEXT, in_netns},
};
use bluegreen::model::Colour;

fn rewritten(f: &Frame, dst: &str, dport: u16) -> Vec<u8> {
    let mut g = f.clone();
    g.dst = dst.parse().unwrap();
    g.dport = dport;
    g.build()
}

/// Runs a frame through bg_steer_tc and checks it came out as `want`, with
/// checksums that verify in full.
fn steered(h: &mut Harness, f: &Frame, want: Vec<u8>) {
    let (action, out) = h.run_steer_tc(&f.build());
    assert_eq!(action, TCX_NEXT, "TC never drops");
    assert_eq!(out, want, "rewritten byte for byte");
    let l3 = f.l3_offset();
    if f.src.is_ipv4() {
        assert!(ipv4_header_checksum_ok(&out, l3), "IPv4 header checksum");
    }
    assert!(l4_checksum_ok(&out, l3), "L4 checksum");
}

#[test]
fn udp_is_steered_byte_exact_on_both_colours_and_families() {
    in_netns(|| {
        let mut h = Harness::new(TC_SERVICES, false);
        let v4 = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, b"<13>tc hello");
        let v6 = Frame::udp("2001:db8::2", "2001:db8::1", 40001, 514, b"<14>tc v6");
        steered(&mut h, &v4, rewritten(&v4, "198.18.1.2", 514));
        steered(&mut h, &v6, rewritten(&v6, "2001:db8:1::2", 514));
        h.dp.set_active(Colour::Green).unwrap();
        steered(&mut h, &v4, rewritten(&v4, "198.18.2.2", 5514));
        steered(&mut h, &v6, rewritten(&v6, "2001:db8:2::2", 6514));
        // Ethernet + IP + UDP headers and the payload, counted from the MAC.
        assert_eq!(h.traffic(0)[1].packets, 1);
        assert_eq!(h.traffic(0)[1].bytes, v4.build().len() as u64);
        assert_eq!(h.counters()["tc_to_kernel"], 4);
    });
}

#[test]
fn a_missing_udp_checksum_stays_missing_and_vlan_tags_are_kept() {
    in_netns(|| {
        let mut h = Harness::new(TC_SERVICES, false);
        let mut none = Frame::udp("198.18.0.2", "198.18.0.1", 40002, 514, b"no checksum");
        none.no_udp_checksum = true;
        let (_, out) = h.run_steer_tc(&none.build());
        assert_eq!(out, rewritten(&none, "198.18.1.2", 514));
        assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0], "still no checksum");
        let mut tagged = Frame::udp("198.18.0.2", "198.18.0.1", 40003, 514, b"tagged");
        tagged.vlan = Some((0x8100, 42));
        steered(&mut h, &tagged, rewritten(&tagged, "198.18.1.2", 514));
    });
}

#[test]
fn tcp_segments_keep_their_colour_on_tc_too() {
    in_netns(|| {
        let mut h = Harness::new(TC_SERVICES, false);
        let mut syn = Frame::tcp("198.18.0.2", "198.18.0.1", 45000, 601, SYN, b"");
        syn.tcp_options = vec![2, 4, 5, 180];
        steered(&mut h, &syn, rewritten(&syn, "198.18.1.2", 601));
        h.dp.set_active(Colour::Green).unwrap();
        let data = Frame::tcp("198.18.0.2", "198.18.0.1", 45000, 601, ACK, b"5 hello");
        steered(&mut h, &data, rewritten(&data, "198.18.1.2", 601));
        let fresh = Frame::tcp("198.18.0.2", "198.18.0.1", 45001, 601, SYN, b"");
        steered(&mut h, &fresh, rewritten(&fresh, "198.18.2.2", 1601));
    });
}

#[test]
fn what_is_not_steered_passes_untouched_and_is_counted() {
    in_netns(|| {
        let mut h = Harness::new(TC_SERVICES, false);
        let other = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 515, b"not a service").build();
        let mut frag = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, b"fragment");
        frag.frag = 0x2000; // MF
        let frag = frag.build();
        let mut cut = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, b"truncated").build();
        cut.truncate(14 + 20 + 4);
        for frame in [&other, &frag, &cut] {
            let (action, out) = h.run_steer_tc(frame);
            assert_eq!((action, &out), (TCX_NEXT, frame), "untouched");
        }
        let c = h.counters();
        assert_eq!(
            (
                c["pass_no_service"],
                c["pass_fragment"],
                c["pass_malformed"]
            ),
            (1, 1, 1)
        );
        assert_eq!(c["tc_to_kernel"], 0);
    });
}
