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

/// `bg-soak` stopped by SIGTERM (Ctrl-C, a CI timeout) removes its lab:
/// namespaces (and what ran in them), the state tmpfs and the pins.
#[test]
fn a_soak_stopped_by_sigterm_leaves_nothing_behind() {
    if !privileged() {
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bg-soak"))
        .args(["--duration", "60", "--seed", "7"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bg-soak");
    // Its lab's namespaces, directory and pins carry this id.
    let id = format!("{:x}", child.id() % 0xffff);
    let _leftovers = Leftovers(id.clone());
    let netns = || {
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("bg{id}")))
            .count()
    };
    let mounted = || {
        std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("soak-state ") && l.contains(&format!("bluegreen-lab-{id}")))
            .count()
    };
    let pins = || {
        std::fs::read_dir("/sys/fs/bpf")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("bluegreen-test-{id}"))
            })
            .count()
    };
    let up = bg_tests::wait_for(Duration::from_secs(60), || {
        (netns() > 0 && mounted() > 0 && pins() > 0).then_some(())
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("bg-soak exits");
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
    assert!(up.is_some(), "the soak's lab never came up: {stderr}");
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_eq!(
        (netns(), mounted(), pins()),
        (0, 0, 0),
        "namespaces, mounts, pins left: {stderr}"
    );
}

/// Removes what a soak with this id left, if the test fails: the test
/// itself must not leave what it checks for.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let id = &self.0;
        // Everything named after the id: `bg_tests::unique_id` appends a
        // counter to it.
        let named = |dir: &std::path::Path, prefix: String| -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with(&format!("bg{id}")) {
                    bg_tests::netns::delete(name);
                }
            }
        }
        for lab in named(&std::env::temp_dir(), format!("bluegreen-lab-{id}")) {
            let _ = std::process::Command::new("umount")
                .arg("--lazy")
                .arg(lab.join("state"))
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(lab);
        }
        for pins in named(
            std::path::Path::new("/sys/fs/bpf"),
            format!("bluegreen-test-{id}"),
        ) {
            bg_tests::lab::remove_pins(&pins);
        }
    }
}
