//! A real rsyslog server (Debian's rsyslogd) used as a blue or green backend.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// What an rsyslogd listens for, and the rules before its file action.
#[derive(Clone, Copy, Default)]
pub struct Inputs<'a> {
    pub udp: &'a [SocketAddr],
    /// RFC 6587 syslog over plain TCP.
    pub tcp: &'a [SocketAddr],
    /// RELP (imrelp, Debian rsyslog-relp).
    pub relp: &'a [SocketAddr],
    /// Syslog over TLS (gtls, Debian rsyslog-gnutls), presenting `pki`'s
    /// server certificate.
    pub tls: &'a [SocketAddr],
    pub pki: Option<&'a crate::certs::TestPki>,
    pub rules: &'a str,
    /// Shadow listeners (UDP): their own ruleset writes `<name>-shadow.log`
    /// ("fromhost-ip msg"), apart from the production file, as the README
    /// shows an operator to keep shadow copies out of the store.
    pub shadow: &'a [SocketAddr],
}

pub struct Rsyslog {
    child: Child,
    /// File the server writes each received message to, one per line.
    pub log: PathBuf,
    /// Its standard error: rsyslogd -n reports its own errors there.
    pub err: PathBuf,
    /// What its shadow listeners received (`Inputs::shadow`).
    pub shadow_log: PathBuf,
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
        Self::launch(
            ns,
            dir,
            name,
            &Inputs {
                udp,
                tcp,
                ..Inputs::default()
            },
        )
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
        Self::launch(
            ns,
            dir,
            name,
            &Inputs {
                udp,
                tcp,
                rules,
                ..Inputs::default()
            },
        )
    }

    /// Starts rsyslogd in `ns` with `inputs`, writing each message's text
    /// to `<dir>/<name>.log`. Waits until every port is bound.
    pub fn launch(ns: &NetNs, dir: &Path, name: &str, inputs: &Inputs<'_>) -> Result<Self> {
        let Inputs {
            udp,
            tcp,
            relp,
            tls,
            pki,
            rules,
            shadow,
        } = *inputs;
        let work = dir.join(format!("{name}.work"));
        std::fs::create_dir_all(&work)?;
        let log = dir.join(format!("{name}.log"));
        let shadow_log = dir.join(format!("{name}-shadow.log"));
        let conf = dir.join(format!("{name}.conf"));
        let mut global = format!("workDirectory=\"{}\" net.enableDNS=\"off\"", work.display());
        let mut modules = String::from("module(load=\"imudp\")\n");
        if !tls.is_empty() {
            let pki = pki.context("TLS inputs need a certificate")?;
            if !tcp.is_empty() {
                bail!("one rsyslogd serves plain TCP or TLS, not both");
            }
            global.push_str(&format!(
                " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                pki.ca.display(),
                pki.cert.display(),
                pki.key.display()
            ));
            modules.push_str("module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n");
        } else {
            modules.push_str("module(load=\"imtcp\")\n");
        }
        if !relp.is_empty() {
            modules.push_str("module(load=\"imrelp\")\n");
        }
        let mut inputs = String::new();
        for l in udp {
            inputs.push_str(&format!(
                "input(type=\"imudp\" address=\"{}\" port=\"{}\" rcvbufSize=\"8m\")\n",
                l.ip(),
                l.port()
            ));
        }
        for l in tcp.iter().chain(tls) {
            inputs.push_str(&format!(
                "input(type=\"imtcp\" address=\"{}\" port=\"{}\")\n",
                l.ip(),
                l.port()
            ));
        }
        for l in shadow {
            inputs.push_str(&format!(
                "input(type=\"imudp\" address=\"{}\" port=\"{}\" ruleset=\"shadow\")\n",
                l.ip(),
                l.port()
            ));
        }
        if !shadow.is_empty() {
            inputs.push_str(&format!(
                "template(name=\"bgshadow\" type=\"string\" string=\"%fromhost-ip% %msg%\\n\")\nruleset(name=\"shadow\") {{\n  action(type=\"omfile\" file=\"{}\" template=\"bgshadow\" asyncWriting=\"off\" flushOnTXEnd=\"on\" flushInterval=\"0\")\n  stop\n}}\n",
                shadow_log.display()
            ));
        }
        for l in relp {
            inputs.push_str(&format!(
                "input(type=\"imrelp\" address=\"{}\" port=\"{}\")\n",
                l.ip(),
                l.port()
            ));
        }
        std::fs::write(
            &conf,
            format!(
                r#"global({global})
{modules}{inputs}template(name="bgmsg" type="string" string="%msg%\n")
{rules}
action(type="omfile" file="{log}" template="bgmsg" asyncWriting="off" flushOnTXEnd="on" flushInterval="0")
"#,
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
        let server = Self {
            child,
            log,
            err: dir.join(format!("{name}.err")),
            shadow_log,
        };
        let needles: Vec<String> = udp
            .iter()
            .chain(tcp)
            .chain(relp)
            .chain(tls)
            .chain(shadow)
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

    /// Stops it as `systemctl stop` does: SIGTERM, so it writes what it
    /// holds, and SIGKILL only if it is still there after 5 s.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = crate::wait_for(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        });
    }

    /// What rsyslogd reported about itself so far (session errors, ...).
    pub fn errors(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
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
