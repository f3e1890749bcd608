//! Unit tests of the split (issue 14) through BPF_PROG_TEST_RUN: green's
//! share over many synthetic senders, monotonicity as the weight rises,
//! the plain colours at weights 0 and 10,000, one colour per sender
//! whatever its port, the seed, and TCP connections that keep their colour
//! across weight changes. Which backend a frame went to is read from the
//! rewritten frame, compared byte for byte with one built independently.
use std::net::IpAddr;

use bg_tests::{
    fixtures::{TCP_SERVICES, XDP_SERVICES},
    packet::{ACK, Frame, SYN, l4_checksum_ok},
    prog::{Harness, TCX_NEXT, XDP_PASS, in_netns},
};
use bluegreen::{
    dataplane::addr_words,
    model::{Colour, Steering, Weight},
};

fn split(h: &mut Harness, green_bp: u32) {
    let s = Steering::split(Colour::Blue, Weight::new(green_bp).unwrap());
    h.dp.set_steering(s).unwrap();
}

/// The i-th of 2^17 distinct IPv4 senders in 198.18.0.0/15.
fn sender(i: u32) -> IpAddr {
    let a = 0xc612_0000u32 + i; // 198.18.0.0 + i
    IpAddr::V4(a.into())
}

/// Which colour `bg_steer` sent a UDP datagram from `src:sport` to.
fn udp_colour(h: &mut Harness, src: IpAddr, sport: u16) -> Colour {
    let (dst, blue, green) = match src {
        IpAddr::V4(_) => ("198.18.0.1", ("198.18.1.2", 514), ("198.18.2.2", 5514)),
        IpAddr::V6(_) => (
            "2001:db8::1",
            ("2001:db8:1::2", 514),
            ("2001:db8:2::2", 6514),
        ),
    };
    let f = Frame::udp(&src.to_string(), dst, sport, 514, b"<13>split test");
    let (action, out) = h.run(&f.build());
    assert_eq!(action, XDP_PASS);
    let to = |(addr, port): (&str, u16)| {
        let mut g = f.clone();
        g.dst = addr.parse().unwrap();
        g.dport = port;
        g.build()
    };
    if out == to(blue) {
        Colour::Blue
    } else if out == to(green) {
        Colour::Green
    } else {
        panic!("{src}: rewritten to neither backend: {out:02x?}")
    }
}

/// Green's count over `n` senders must be within 5 standard deviations
/// of the binomial mean: false only once in ~3.5 million runs by chance.
fn assert_share(green: u32, n: u32, bp: u32, what: &str) {
    let p = f64::from(bp) / 10_000.0;
    let mean = f64::from(n) * p;
    let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
    let got = f64::from(green);
    assert!(
        (got - mean).abs() <= 5.0 * sd,
        "{what}: {green} of {n} senders on green at {bp} bp; expected {mean:.0} ± {:.0}",
        5.0 * sd
    );
}

#[test]
fn the_split_over_100k_senders_matches_the_weight() {
    in_netns(|| {
        let mut h = Harness::new(XDP_SERVICES, false);
        for (seed, bp) in [(0x5eed_0001u32, 1000u32), (0xc0ff_ee00, 5000)] {
            h.dp.set_split_seed(seed).unwrap();
            split(&mut h, bp);
            let n = 100_000;
            let green = (0..n)
                .filter(|&i| udp_colour(&mut h, sender(i), 40000) == Colour::Green)
                .count() as u32;
            assert_share(green, n, bp, &format!("IPv4, seed {seed:#x}"));
        }
        // IPv6 senders hash all four words: structured addresses (a few
        // prefixes, small interface ids) must spread too, whatever the seed.
        split(&mut h, 2500);
        for seed in [1u32, 0x5eed_0001, 0x8000_0000, 0xffff_ffff] {
            h.dp.set_split_seed(seed).unwrap();
            let n = 10_000;
            let green = (0..n)
                .filter(|&i| {
                    let src: IpAddr = format!("2001:db8:{:x}::{:x}", i / 97, i % 97 + 1)
                        .parse()
                        .unwrap();
                    udp_colour(&mut h, src, 40000) == Colour::Green
                })
                .count() as u32;
            assert_share(green, n, 2500, &format!("IPv6, seed {seed:#x}"));
        }
    });
}

#[test]
fn raising_the_weight_only_moves_senders_from_blue_to_green() {
    in_netns(|| {
        let mut h = Harness::new(XDP_SERVICES, false);
        h.dp.set_split_seed(0x1234_5678).unwrap();
        let n = 20_000;
        let mut prev: Vec<Colour> = vec![Colour::Blue; n as usize];
        let mut prev_bp = 0;
        for bp in [1, 100, 1000, 2500, 5000, 9000, 9999] {
            split(&mut h, bp);
            let now: Vec<Colour> = (0..n)
                .map(|i| udp_colour(&mut h, sender(i), 41000))
                .collect();
            let back = (0..n as usize)
                .filter(|&i| prev[i] == Colour::Green && now[i] == Colour::Blue)
                .count();
            assert_eq!(
                back, 0,
                "{back} senders went from green back to blue at {bp} bp"
            );
            // Exactly the added fraction moves, within statistical bounds.
            let moved = (0..n as usize)
                .filter(|&i| prev[i] == Colour::Blue && now[i] == Colour::Green)
                .count() as u32;
            assert_share(
                moved,
                n,
                bp - prev_bp,
                &format!("moved from {prev_bp} to {bp} bp"),
            );
            prev = now;
            prev_bp = bp;
        }
    });
}

#[test]
fn weights_0_and_10000_are_todays_blue_and_green() {
    in_netns(|| {
        let mut h = Harness::new(XDP_SERVICES, false);
        h.dp.set_split_seed(0xabcd).unwrap();
        for (bp, colour) in [(0, Colour::Blue), (10_000, Colour::Green)] {
            split(&mut h, bp);
            assert_eq!(h.dp.steering().unwrap(), Steering::plain(colour));
            for i in 0..2000 {
                assert_eq!(udp_colour(&mut h, sender(i), 40000), colour, "{bp} bp");
            }
            // The very words a flip writes, and older agents wrote: 0 and 1.
            let word = Steering::split(Colour::Blue, Weight::new(bp).unwrap()).word();
            assert_eq!(word, colour.index());
            assert_eq!(Steering::plain(colour).word(), word);
        }
    });
}

#[test]
fn a_sender_keeps_one_colour_on_every_port_and_the_agent_predicts_it() {
    in_netns(|| {
        let mut h = Harness::new(XDP_SERVICES, false);
        let seed = 0x0bad_cafe;
        h.dp.set_split_seed(seed).unwrap();
        split(&mut h, 5000);
        let word = h.dp.steering().unwrap().word();
        let mut seen = [0u32; 2];
        for i in 0..500 {
            let src = sender(i * 7);
            let c = udp_colour(&mut h, src, 40000);
            for port in [1024, 33333, 65535] {
                assert_eq!(udp_colour(&mut h, src, port), c, "{src} port {port}");
            }
            // bgctl computes the same choice (one hash for kernel and agent).
            let (addr, _) = addr_words(src);
            let predicted = bg_common::split::colour(word, seed, &addr);
            assert_eq!(predicted, c.index(), "{src}");
            seen[c.index() as usize] += 1;
        }
        assert!(
            seen[0] > 150 && seen[1] > 150,
            "both colours used: {seen:?}"
        );
        // Another seed puts other senders on green.
        h.dp.set_split_seed(seed ^ 0x5555).unwrap();
        let changed = (0..500)
            .filter(|&i| {
                let src = sender(i * 7);
                let (addr, _) = addr_words(src);
                udp_colour(&mut h, src, 40000).index()
                    != bg_common::split::colour(word, seed, &addr)
            })
            .count();
        assert!(
            changed > 150,
            "only {changed} of 500 senders moved with a new seed"
        );
    });
}

#[test]
fn tcp_connections_keep_their_colour_across_weight_changes() {
    in_netns(|| {
        let mut h = Harness::new(TCP_SERVICES, false);
        h.dp.set_split_seed(0x7777).unwrap();
        split(&mut h, 5000);
        const ISN: u32 = 0x5eed_0001;
        let service = "198.18.0.1";
        let tcp_colour = |h: &mut Harness, f: &Frame| {
            let (action, out) = h.run(&f.build());
            assert_eq!(action, XDP_PASS);
            assert!(l4_checksum_ok(&out, 14));
            let to = |addr: &str, port: u16| {
                let mut g = f.clone();
                g.dst = addr.parse().unwrap();
                g.dport = port;
                g.build()
            };
            if out == to("198.18.1.2", 601) {
                Colour::Blue
            } else if out == to("198.18.2.2", 1601) {
                Colour::Green
            } else {
                panic!("rewritten to neither backend")
            }
        };
        // 200 connections, from 200 senders, opened at 50 %.
        let mut conns = Vec::new();
        for i in 0..200u32 {
            let src = sender(1000 + i);
            let syn = Frame::tcp(&src.to_string(), service, 40000, 601, SYN, b"");
            let c = tcp_colour(&mut h, &syn);
            let (backend, port) = match c {
                Colour::Blue => ("198.18.1.2", 601),
                Colour::Green => ("198.18.2.2", 1601),
            };
            let mut sa = Frame::tcp(backend, &src.to_string(), port, 40000, SYN | ACK, b"");
            sa.seq = ISN;
            assert_eq!(h.run_tc(&sa.build()).0, TCX_NEXT);
            let mut ack = Frame::tcp(&src.to_string(), service, 40000, 601, ACK, b"");
            ack.ack = ISN.wrapping_add(1);
            assert_eq!(tcp_colour(&mut h, &ack), c);
            conns.push((ack, c));
        }
        let greens = conns.iter().filter(|(_, c)| *c == Colour::Green).count();
        assert!(
            (50..=150).contains(&greens),
            "{greens} of 200 on green at 50%"
        );
        for bp in [1000, 9000, 0, 10_000, 3000] {
            split(&mut h, bp);
            for (seg, c) in &conns {
                assert_eq!(tcp_colour(&mut h, seg), *c, "{} moved at {bp} bp", seg.src);
            }
        }
        // New connections from those senders follow the weight in force
        // (3000 bp), as their UDP would.
        let word = h.dp.steering().unwrap().word();
        for (seg, _) in conns.iter().take(50) {
            let mut syn = seg.clone();
            syn.sport = 50000;
            syn.tcp_flags = SYN;
            syn.ack = 0;
            let (addr, _) = addr_words(seg.src);
            let want = bg_common::split::colour(word, 0x7777, &addr);
            assert_eq!(tcp_colour(&mut h, &syn).index(), want, "{}", seg.src);
        }
    });
}
