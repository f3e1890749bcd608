//! Network namespaces that delete themselves, even when a test panics.
use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(name: &str) -> Result<Self> {
        sh("ip", &["netns", "add", name])?;
        crate::cleanup::track_netns(name);
        let ns = Self {
            name: name.to_owned(),
        };
        ns.run("ip", &["link", "set", "lo", "up"])?;
        // No duplicate address detection on test links: while a new link's
        // link-local address is tentative the kernel cannot solicit
        // neighbours, and forwarded IPv6 would stall for a second or two.
        ns.run(
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.accept_dad=0",
            ],
        )?;
        Ok(ns)
    }

    /// The MAC address of `dev` in this namespace (from `ip link`: under
    /// nsenter, /sys still shows the host's interfaces).
    pub fn mac(&self, dev: &str) -> Result<[u8; 6]> {
        let out = self.run("ip", &["-o", "link", "show", "dev", dev])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let hex = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .with_context(|| format!("no MAC for {dev}"))?;
        let mut mac = [0u8; 6];
        for (i, b) in hex.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(b, 16)?;
        }
        Ok(mac)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A command that runs inside the namespace. nsenter switches only the
    /// network namespace, so /sys/fs/bpf stays the host's and pins are shared.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        c
    }

    /// Runs a command in the namespace and fails with its stderr when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("{program} {args:?} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?} in {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created
    /// there stay in the namespace after being returned.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let file = File::open(self.path()).with_context(|| self.path())?;
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(anyhow::anyhow!(
                    "setns: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        delete(&self.name);
        crate::cleanup::untrack_netns(&self.name);
    }
}

/// Kills what still runs in a namespace, then deletes it; veths go with it.
pub fn delete(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Runs a host command and fails with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}
