//! Unit tests of shadow copies (issue 15) through BPF_PROG_TEST_RUN: XDP
//! hands a sampled datagram to the kernel, rewritten towards blue exactly
//! as without a shadow, with its service in the metadata; the share copied
//! follows the split's hash (the senders a canary would move first); and on
//! TC the copy leaves rewritten towards the shadow target, checked byte for
//! byte against a frame built independently, while the original goes on
//! unchanged.
use std::{net::IpAddr, time::Duration};

use bg_common::shadow::{META_LEN, META_MAGIC};
use bg_tests::{
    fixtures::XDP_SERVICES,
    netns::NetNs,
    packet::{Frame, ipv4_header_checksum_ok, l4_checksum_ok},
    privileged,
    prog::{Harness, TCX_NEXT, XDP_PASS, XDP_REDIRECT},
    unique_id,
};
use bluegreen::{
    dataplane::shadow::ShadowRoute,
    model::{Colour, Steering, Weight},
};

const PAYLOAD: &[u8] = b"<13>Dec  2 05:00:00 host app: shadow test";

/// Copies of the first (v4, any address) and the last (v6) service.
fn shadow_on(h: &mut Harness, bp: u32) {
    let routes = [
        ShadowRoute {
            id: h.ids[0],
            blue: "198.18.1.2:514".parse().unwrap(),
            to: "198.18.2.2:5514".parse().unwrap(),
            from: "198.18.2.1:40000".parse().unwrap(),
            dmac: [0; 6],
            smac: [0; 6],
        },
        ShadowRoute {
            id: h.ids[2],
            blue: "[2001:db8:1::2]:514".parse().unwrap(),
            to: "[2001:db8:2::2]:6515".parse().unwrap(),
            from: "[2001:db8:2::1]:40000".parse().unwrap(),
            dmac: [0; 6],
            smac: [0; 6],
        },
    ];
    h.dp.start_shadow(&routes, bp, 0, None).unwrap();
}

/// The frame `bg_steer` makes of `f` for blue, built independently.
fn to_blue(f: &Frame) -> Vec<u8> {
    let mut g = f.clone();
    (g.dst, g.dport) = match f.src {
        IpAddr::V4(_) => ("198.18.1.2".parse().unwrap(), 514),
        IpAddr::V6(_) => ("2001:db8:1::2".parse().unwrap(), 514),
    };
    g.build()
}

/// Whether XDP handed the frame over for a copy: metadata in front of a
/// frame that is exactly the one for blue.
fn handed_over(h: &mut Harness, f: &Frame, ingress: u32) -> bool {
    let (action, out) = h.run_on(&f.build(), ingress);
    if action == XDP_REDIRECT {
        return false;
    }
    assert_eq!(action, XDP_PASS);
    let blue = to_blue(f);
    if out == blue {
        return false;
    }
    assert_eq!(out.len(), META_LEN + blue.len(), "{out:02x?}");
    assert_eq!(
        &out[META_LEN..],
        &blue[..],
        "the original must be blue's frame"
    );
    let magic = u32::from_ne_bytes(out[0..4].try_into().unwrap());
    let service = u32::from_ne_bytes(out[4..8].try_into().unwrap());
    assert_eq!(magic, META_MAGIC);
    let want = if f.src.is_ipv4() { h.ids[0] } else { h.ids[2] };
    assert_eq!(service, want);
    true
}

#[test]
fn xdp_hands_sampled_udp_over_with_its_service_and_changes_nothing_else() {
    in_forwarding_ns(|h, [_, _, sd]| {
        let v4 = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, PAYLOAD);
        let v6 = Frame::udp("2001:db8::2", "2001:db8::1", 40000, 514, PAYLOAD);
        assert!(!handed_over(h, &v4, sd), "no shadow: redirected");
        // Not armed for broadcast: the kernel's path.
        shadow_on(h, 10_000);
        assert!(handed_over(h, &v4, sd));
        assert!(handed_over(h, &v6, sd));
        // The second service has no target: not copied (its backend has
        // no neighbour here, so the kernel gets it, untagged).
        let other = Frame::udp("198.18.0.2", "198.18.0.10", 40000, 514, PAYLOAD);
        let (_, out) = h.run_on(&other.build(), sd);
        let mut blue = other.clone();
        (blue.dst, blue.dport) = ("198.18.1.10".parse().unwrap(), 1514);
        assert_eq!(out, blue.build());
        let c = h.dp.shadow_counts(h.ids[0]).unwrap();
        assert_eq!((c.handed_to_tc, c.copied, c.no_metadata), (1, 0, 0));
        // Blue counted both v4 datagrams: the shadow takes nothing from it.
        assert_eq!(h.traffic(0)[0].packets, 2);
        h.dp.stop_shadow().unwrap();
        assert!(!handed_over(h, &v4, sd), "stopped: redirected");
        assert_eq!(h.dp.shadow_weight().unwrap(), 0);
    });
}

#[test]
fn the_copied_share_is_the_senders_a_canary_would_move_first() {
    in_forwarding_ns(|h, [_, _, sd]| {
        h.dp.set_split_seed(0x5eed_1234).unwrap();
        let n = 20_000u32;
        let senders: Vec<Frame> = (0..n)
            .map(|i| {
                let a = IpAddr::V4((0xc612_0000u32 + i).into());
                Frame::udp(&a.to_string(), "198.18.0.1", 41000, 514, PAYLOAD)
            })
            .collect();
        shadow_on(h, 2500);
        let copied: Vec<bool> = senders.iter().map(|f| handed_over(h, f, sd)).collect();
        h.dp.stop_shadow().unwrap();
        // The same share as a split, through the program's split path:
        // green's senders leave addressed to green's backend.
        let split = Steering::split(Colour::Blue, Weight::new(2500).unwrap());
        h.dp.set_steering(split).unwrap();
        let green: Vec<bool> = senders
            .iter()
            .map(|f| {
                let (_, out) = h.run_on(&f.build(), sd);
                out[30..34] == [198, 18, 2, 2]
            })
            .collect();
        assert_eq!(copied, green, "shadow and canary sample different senders");
        let k = copied.iter().filter(|&&c| c).count() as f64;
        let (mean, sd) = (f64::from(n) * 0.25, (f64::from(n) * 0.25 * 0.75).sqrt());
        assert!((k - mean).abs() <= 5.0 * sd, "{k} of {n} copied at 25 %");
    });
}

/// A namespace where blue's backend (198.18.1.2) is reached out of `sa`
/// and green's (198.18.2.2) out of `sc`, neighbours fixed, forwarding on;
/// frames "arrive" on `sd`. Returns it and the ifindexes of sa, sc, sd.
fn forwarding_ns() -> (NetNs, [u32; 3]) {
    let ns = NetNs::new(&format!("bgs{}", unique_id())).unwrap();
    for args in [
        "link add sa address 02:00:00:00:0a:01 type veth peer name sb",
        "link add sc address 02:00:00:00:0c:01 type veth peer name sd",
        "link set sa up",
        "link set sb up",
        "link set sc up",
        "link set sd up",
        "addr add 198.18.1.1/24 dev sa",
        "addr add 198.18.2.1/24 dev sc",
        "neigh add 198.18.1.2 lladdr 02:00:00:00:0b:02 dev sa nud permanent",
        "neigh add 198.18.2.2 lladdr 02:00:00:00:0d:02 dev sc nud permanent",
        "addr add 2001:db8:1::1/64 dev sa nodad",
        "neigh add 2001:db8:1::2 lladdr 02:00:00:00:0b:02 dev sa nud permanent",
    ] {
        ns.run("ip", &args.split(' ').collect::<Vec<_>>()).unwrap();
    }
    ns.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    ns.run("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    let ids = ns
        .enter(|| {
            ["sa", "sc", "sd"].map(|n| {
                let c = std::ffi::CString::new(n).unwrap();
                unsafe { libc::if_nametoindex(c.as_ptr()) }
            })
        })
        .unwrap();
    (ns, ids)
}

/// Runs `body` in a fresh `forwarding_ns` with a harness whose devmap
/// holds its interfaces.
fn in_forwarding_ns(body: impl FnOnce(&mut Harness, [u32; 3]) + Send + 'static) {
    if !privileged() {
        return;
    }
    let (ns, ifs) = forwarding_ns();
    ns.enter(move || {
        let mut h = Harness::new(XDP_SERVICES, false);
        h.dp.refresh_redirect_ifaces().unwrap();
        body(&mut h, ifs);
    })
    .unwrap();
}

fn green_route(h: &Harness) -> ShadowRoute {
    ShadowRoute {
        id: h.ids[0],
        blue: "198.18.1.2:514".parse().unwrap(),
        to: "198.18.2.2:5514".parse().unwrap(),
        from: "198.18.2.1:40000".parse().unwrap(),
        dmac: [2, 0, 0, 0, 0x0d, 2],
        smac: [2, 0, 0, 0, 0x0c, 1],
    }
}

/// Runs `bg_steer` on `f` arriving on `ingress`: the action, whether the
/// output carries our tag, and the frame after the tag.
fn steer_on(h: &mut Harness, f: &Frame, ingress: u32) -> (u32, bool, Vec<u8>) {
    let (action, out) = h.run_on(&f.build(), ingress);
    let tagged =
        out.len() >= META_LEN && u32::from_ne_bytes(out[0..4].try_into().unwrap()) == META_MAGIC;
    let frame = if tagged {
        out[META_LEN..].to_vec()
    } else {
        out
    };
    (action, tagged, frame)
}

#[test]
fn past_its_budget_xdp_redirects_datagrams_without_a_copy() {
    in_forwarding_ns(|h, [_, _, sd]| {
        let cpus = aya::util::nr_cpus().unwrap() as u32;
        // 1000 hand-overs per second per CPU: a full bucket holds 100.
        h.dp.start_shadow(&[green_route(h)], 10_000, 1000 * cpus, None)
            .unwrap();
        let f = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, PAYLOAD);
        let (mut handed, mut redirected) = (0u64, 0u64);
        for _ in 0..150 {
            match steer_on(h, &f, sd) {
                (XDP_PASS, true, _) => handed += 1,
                (XDP_REDIRECT, _, _) => redirected += 1,
                other => panic!("{other:?}"),
            }
        }
        let c = h.dp.shadow_counts(h.ids[0]).unwrap();
        assert!((100..=110).contains(&handed), "{handed} handed over");
        assert_eq!(handed + redirected, 150);
        assert_eq!((c.handed_to_tc, c.over_budget), (handed, redirected));
        // Every one of them reached blue's counters.
        assert_eq!(h.traffic(0)[0].packets, 150);
    });
}

#[test]
fn past_its_budget_a_broadcast_redirects_datagrams_without_a_copy() {
    in_forwarding_ns(|h, [sa, sc, sd]| {
        let cpus = aya::util::nr_cpus().unwrap() as u32;
        let f = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, PAYLOAD);
        let (_, _, plain) = steer_on(h, &f, sd);
        let broadcast = bluegreen::dataplane::shadow::Broadcast {
            blue: sa,
            target: sc,
        };
        // 1000 copies per second per CPU: a full bucket holds 100.
        h.dp.start_shadow(&[green_route(h)], 10_000, 1000 * cpus, Some(broadcast))
            .unwrap();
        for _ in 0..150 {
            // Copied or not, the original leaves as without a shadow.
            let (action, tagged, frame) = steer_on(h, &f, sd);
            assert_eq!((action, tagged), (XDP_REDIRECT, false));
            assert_eq!(frame, plain);
        }
        let c = h.dp.shadow_counts(h.ids[0]).unwrap();
        assert!((100..=110).contains(&c.broadcast), "{c:?}");
        assert_eq!(c.broadcast + c.over_budget, 150, "{c:?}");
        assert_eq!(c.handed_to_tc, 0, "{c:?}");
        assert_eq!(h.traffic(0)[0].packets, 151);
    });
}

#[test]
fn armed_for_blues_interface_xdp_copies_by_broadcast() {
    in_forwarding_ns(|h, [sa, sc, sd]| {
        let f = Frame::udp("198.18.0.2", "198.18.0.1", 40000, 514, PAYLOAD);
        // Without a shadow: redirected out of sa, untagged.
        let (action, tagged, plain) = steer_on(h, &f, sd);
        assert_eq!((action, tagged), (XDP_REDIRECT, false));
        let broadcast = bluegreen::dataplane::shadow::Broadcast {
            blue: sa,
            target: sc,
        };
        h.dp.start_shadow(&[green_route(h)], 10_000, 0, Some(broadcast))
            .unwrap();
        // The copy is told by its destination (blue's backend) on the
        // target's interface, not by metadata: none is written.
        let (action, tagged, frame) = steer_on(h, &f, sd);
        assert_eq!((action, tagged), (XDP_REDIRECT, false));
        assert_eq!(frame, plain, "the original must leave as without a shadow");
        let c = h.dp.shadow_counts(h.ids[0]).unwrap();
        assert_eq!((c.broadcast, c.handed_to_tc), (1, 0), "{c:?}");
        // Armed for another interface: the kernel's path instead.
        h.dp.stop_shadow().unwrap();
        let elsewhere = bluegreen::dataplane::shadow::Broadcast {
            blue: sc,
            target: sa,
        };
        h.dp.start_shadow(&[green_route(h)], 10_000, 0, Some(elsewhere))
            .unwrap();
        let (action, tagged, _) = steer_on(h, &f, sd);
        assert_eq!((action, tagged), (XDP_PASS, true));
        let c = h.dp.shadow_counts(h.ids[0]).unwrap();
        assert_eq!((c.broadcast, c.handed_to_tc), (1, 1), "{c:?}");
    });
}

/// A packet socket on `iface`: what arrives there.
fn capture(iface: &str) -> std::net::UdpSocket {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain socket calls with valid arguments.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        let rc = libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // A UdpSocket only to own the fd and read with a timeout.
        use std::os::fd::FromRawFd;
        let s = std::net::UdpSocket::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    }
}

#[test]
fn on_tc_the_copy_is_rewritten_to_the_target_and_the_original_is_untouched() {
    if !privileged() {
        return;
    }
    let ns = NetNs::new(&format!("bgs{}", unique_id())).unwrap();
    for args in [
        "link add sa address 02:00:00:00:0a:01 type veth peer name sb",
        "link set sa up",
        "link set sb up",
        "addr add 198.18.2.1/24 dev sa",
        "addr add 2001:db8:2::1/64 dev sa nodad",
        "neigh add 198.18.2.2 lladdr 02:00:00:00:0b:02 dev sa nud permanent",
        "neigh add 2001:db8:2::2 lladdr 02:00:00:00:0b:02 dev sa nud permanent",
    ] {
        ns.run("ip", &args.split(' ').collect::<Vec<_>>()).unwrap();
    }
    ns.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    ns.run("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    ns.enter(|| {
        let mut h = Harness::new(XDP_SERVICES, false);
        shadow_on(&mut h, 10_000);
        let sa = unsafe { libc::if_nametoindex(c"sa".as_ptr()) };
        let sb = capture("sb");
        for (f, to, from) in [
            (
                Frame::udp("198.18.0.2", "198.18.0.1", 40001, 514, PAYLOAD),
                ("198.18.2.2", 5514),
                "198.18.2.1",
            ),
            (
                Frame::udp("2001:db8::2", "2001:db8::1", 40001, 514, PAYLOAD),
                ("2001:db8:2::2", 6515),
                "2001:db8:2::1",
            ),
        ] {
            let (action, out) = h.run_steer_tc_on(&f.build(), sa);
            assert_eq!(action, TCX_NEXT);
            assert_eq!(out, to_blue(&f), "the original must be blue's frame");
            let mut copy = f.clone();
            (copy.src, copy.sport) = (from.parse().unwrap(), 40000);
            (copy.dst, copy.dport) = (to.0.parse().unwrap(), to.1);
            let mut want = copy.build();
            want[0..6].copy_from_slice(&[2, 0, 0, 0, 0x0b, 2]);
            want[6..12].copy_from_slice(&[2, 0, 0, 0, 0x0a, 1]);
            let mut got = None;
            let mut buf = [0u8; 2048];
            for _ in 0..20 {
                let Ok(n) = sb.recv(&mut buf) else { break };
                // Skip the interface's own chatter (IPv6 neighbour discovery...).
                if n == want.len()
                    && buf[12..14] == want[12..14]
                    && buf[n - PAYLOAD.len()..n] == *PAYLOAD
                {
                    got = Some(buf[..n].to_vec());
                    break;
                }
            }
            let got = got.unwrap_or_else(|| panic!("no copy of {} arrived on sb", f.src));
            assert_eq!(got, want, "copy of {}", f.src);
            assert!(l4_checksum_ok(&got, 14));
            if f.src.is_ipv4() {
                assert!(ipv4_header_checksum_ok(&got, 14));
            }
        }
        let c = h.dp.shadow_counts(h.ids[0]).unwrap();
        assert_eq!((c.copied, c.copy_failed, c.no_route), (1, 0, 0), "{c:?}");
        // A target with no neighbour: no copy, counted; the original as ever.
        h.dp.stop_shadow().unwrap();
        h.dp.start_shadow(
            &[ShadowRoute {
                id: h.ids[0],
                blue: "198.18.1.2:514".parse().unwrap(),
                to: "198.18.9.9:5514".parse().unwrap(),
                from: "198.18.2.1:40000".parse().unwrap(),
                dmac: [0; 6],
                smac: [0; 6],
            }],
            10_000,
            0,
            None,
        )
        .unwrap();
        let f = Frame::udp("198.18.0.2", "198.18.0.1", 40001, 514, PAYLOAD);
        let (_, out) = h.run_steer_tc_on(&f.build(), sa);
        assert_eq!(out, to_blue(&f));
        let c = h.dp.shadow_counts(h.ids[0]).unwrap();
        assert_eq!((c.copied, c.no_route), (1, 1), "{c:?}");
    })
    .unwrap();
}
