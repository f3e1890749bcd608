//! `cargo xtask fuzz`: the differential fuzzer of the XDP program (see
//! `bg_tests::fuzz`), as many frames as asked, from a seed it prints.
//!
//! bg-fuzz [--frames N] [--seed S]
use std::process::ExitCode;

use bg_tests::{flag_number, fuzz, netns::NetNs, unique_id};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed =
        flag_number(&args, "--frames").and_then(|f| Ok((f, flag_number(&args, "--seed")?)));
    let (frames, seed) = match parsed {
        Ok((f, s)) => (f.unwrap_or(1_000_000), s),
        Err(e) => {
            eprintln!("bg-fuzz: {e}\nusage: bg-fuzz [--frames N] [--seed S]");
            return ExitCode::from(2);
        }
    };
    // A fresh seed unless one is given: printed, so the run can be repeated.
    let seed = seed.unwrap_or_else(|| fastrand::u64(..u64::MAX / 2));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bg-fuzz: needs root (a network namespace and BPF_PROG_TEST_RUN)");
        return ExitCode::from(2);
    }
    println!("fuzzing bg_steer: {frames} frames from seed {seed}");
    let ns = match NetNs::new(&format!("bgfz{}", unique_id())) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("bg-fuzz: creating a network namespace: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let report = match ns.enter(move || fuzz::run(seed, frames, 20)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bg-fuzz: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.summary());
    if report.disagreements.is_empty() {
        ExitCode::SUCCESS
    } else {
        for d in &report.disagreements {
            eprintln!("{d}");
        }
        ExitCode::FAILURE
    }
}
