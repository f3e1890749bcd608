//! A real rsyslog server (Debian's rsyslogd) used as a blue or green backend.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

pub struct Rsyslog {
    child: Child,
    /// File the server writes each received message to, one per line.
    pub log: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd in `ns`, listening on UDP at each of `udp` and on TCP
    /// (RFC 6587 framing, octet-counted or not) at each of `tcp`, writing
    /// each message's text to `<dir>/<name>.log`. Waits until every port is
    /// bound.
    pub fn start(
        ns: &NetNs,
        dir: &Path,
        name: &str,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
    ) -> Result<Self> {
        Self::start_with(ns, dir, name, udp, tcp, "")
    }

    /// `start`, with `rules` (RainerScript) placed before the action that
    /// writes the file: filters an operator would add.
    pub fn start_with(
        ns: &NetNs,
        dir: &Path,
        name: &str,
        udp: &[SocketAddr],
        tcp: &[SocketAddr],
        rules: &str,
    ) -> Result<Self> {
        let work = dir.join(format!("{name}.work"));
        std::fs::create_dir_all(&work)?;
        let log = dir.join(format!("{name}.log"));
        let conf = dir.join(format!("{name}.conf"));
        let mut inputs = String::from("module(load=\"imtcp\")\n");
        for l in udp {
            inputs.push_str(&format!(
                "input(type=\"imudp\" address=\"{}\" port=\"{}\" rcvbufSize=\"8m\")\n",
                l.ip(),
                l.port()
            ));
        }
        for l in tcp {
            inputs.push_str(&format!(
                "input(type=\"imtcp\" address=\"{}\" port=\"{}\")\n",
                l.ip(),
                l.port()
            ));
        }
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" net.enableDNS="off")
module(load="imudp")
{inputs}template(name="bgmsg" type="string" string="%msg%\n")
{rules}
action(type="omfile" file="{log}" template="bgmsg" asyncWriting="off" flushOnTXEnd="on" flushInterval="0")
"#,
                work = work.display(),
                log = log.display()
            ),
        )?;
        let child = ns
            .command("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join(format!("{name}.err")),
            )?))
            .spawn()
            .context(
                "starting rsyslogd (Debian package rsyslog; `cargo xtask setup` installs it)",
            )?;
        let server = Self { child, log };
        let needles: Vec<String> = udp
            .iter()
            .chain(tcp)
            .map(|l| format!("{}:{}", fmt_ip(*l), l.port()))
            .collect();
        let bound = crate::wait_for(Duration::from_secs(10), || {
            let out = ns.run("ss", &["-Hlutn"]).ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            needles
                .iter()
                .all(|n| text.contains(n.as_str()))
                .then_some(())
        });
        if bound.is_none() {
            bail!("rsyslogd {name} did not bind {needles:?} within 10 s; see {name}.err");
        }
        Ok(server)
    }

    /// Lines written so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_owned())
            .collect()
    }
}

fn fmt_ip(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
