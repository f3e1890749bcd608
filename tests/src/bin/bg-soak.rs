//! `cargo xtask soak`: the lab under a fixed-rate syslog stream and seeded
//! chaos (see `bg_tests::soak`), for as long as asked.
//!
//! bg-soak [--duration SECONDS] [--seed S]
use std::{process::ExitCode, time::Duration};

use bg_tests::{flag_number, soak};

fn main() -> ExitCode {
    // Ctrl-C or SIGTERM must not leave namespaces, mounts or pins behind.
    bg_tests::cleanup::remove_everything_on_interrupt();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed =
        flag_number(&args, "--duration").and_then(|d| Ok((d, flag_number(&args, "--seed")?)));
    let (duration, seed) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bg-soak: {e}\nusage: bg-soak [--duration SECONDS] [--seed S]");
            return ExitCode::from(2);
        }
    };
    let duration = duration.unwrap_or(3600);
    if duration < 30 {
        eprintln!("bg-soak: --duration = {duration}: at least 30 seconds (one chaos episode)");
        return ExitCode::from(2);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bg-soak: needs root (network namespaces, XDP, rsyslog in namespaces)");
        return ExitCode::from(2);
    }
    let opts = soak::Options {
        duration: Duration::from_secs(duration),
        seed: seed.unwrap_or_else(|| fastrand::u64(..u64::MAX / 2)),
        ..soak::Options::default()
    };
    println!(
        "soak: {duration} s from seed {}, {} UDP msg/s and {} TCP connections at {} msg/s",
        opts.seed, opts.udp_rate, opts.tcp_connections, opts.tcp_rate
    );
    match soak::run(&opts) {
        Ok(report) => {
            print!("{}", report.summary());
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bg-soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}
