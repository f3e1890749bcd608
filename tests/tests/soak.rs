//! The soak in the suite: 60 s of the lab under a fixed-rate syslog stream
//! and seeded chaos (see `bg_tests::soak`). `cargo xtask soak` runs it for
//! as long as asked.
use std::time::Duration;

use bg_tests::{privileged, soak};

#[test]
fn sixty_seconds_of_chaos_lose_nothing_outside_the_documented_windows() {
    if !privileged() {
        return;
    }
    let opts = soak::Options {
        duration: Duration::from_secs(60),
        seed: 20_261_204,
        ..soak::Options::default()
    };
    let r = soak::run(&opts).expect("soak");
    eprint!("{}", r.summary());
    assert!(r.clean(), "{}", r.summary());
    // Every episode ran, and traffic flowed through all of it.
    assert!(r.restarts_survived >= 1, "{}", r.summary());
    assert!(r.rollbacks >= 1, "{}", r.summary());
    assert!(r.backend_restarts >= 2, "{}", r.summary());
    assert!(r.disk_full_episodes >= 1, "{}", r.summary());
    assert!(r.flips_ok >= 30, "{}", r.summary());
    assert!(r.udp_sent > 20_000 && r.tcp_sent > 3_000, "{}", r.summary());
    // The one window: what reached the dying colour before the rollback,
    // at most a second of the UDP stream.
    assert!(
        r.lost_in_window <= u64::from(opts.udp_rate),
        "{}",
        r.summary()
    );
}
