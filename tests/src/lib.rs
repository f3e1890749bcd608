//! Shared helpers of the privileged tests, the lab and the benchmarks.
pub mod agent;
pub mod browser;
pub mod certs;
pub mod cleanup;
pub mod docs;
pub mod etcd;
pub mod fixtures;
pub mod fuzz;
pub mod http;
pub mod lab;
pub mod lookup_bench;
pub mod netns;
pub mod notify;
pub mod observability;
pub mod paced;
pub mod packet;
pub mod pktgen;
pub mod prog;
pub mod rsyslog;
pub mod soak;
pub mod spoof;
pub mod syslog_ng;
pub mod traffic;
pub mod trafgen;

/// True when running as root. Otherwise prints why the caller is skipped.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        // libtest names each test's thread after the test.
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("this test");
        eprintln!(
            "SKIP {test}: needs root (network namespaces, XDP, BPF); run `cargo xtask test` as root"
        );
    }
    root
}

/// A name unique to this process and call, short enough for interface names.
pub fn unique_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{n:x}", std::process::id() % 0xffff)
}

/// Polls `f` every 50 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The whole number after `flag` in a runner's arguments (`bg-fuzz`,
/// `bg-soak`), `_` separators allowed; an error names the flag and value.
pub fn flag_number(args: &[String], flag: &str) -> Result<Option<u64>, String> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    let raw = args.get(i + 1).ok_or(format!("{flag} needs a value"))?;
    raw.replace('_', "")
        .parse()
        .map(Some)
        .map_err(|_| format!("{flag} = {raw:?}: expected a whole number, e.g. {flag} 1000"))
}
