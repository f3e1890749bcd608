//! A real syslog-ng (Debian's syslog-ng-core), unpacked apart from rsyslog
//! by `cargo xtask setup` (the two packages conflict), as a UDP backend.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// Where `cargo xtask setup` unpacked it (the same rule as setup's).
pub fn root() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("bluegreen/syslog-ng")
}

pub struct SyslogNg {
    child: Child,
    /// Every message stored, one line each: `<program> [<message>]`, so an
    /// empty message would still show as a line.
    pub log: PathBuf,
}

impl SyslogNg {
    /// Starts syslog-ng in `ns` with a UDP source `s_net` (syslog parsing,
    /// as deployed) at each of `udp` and a file destination `d_store`
    /// (`<dir>/<name>.log`), joined by `log`: the filters and log path an
    /// operator would write, by default a plain
    /// `log { source(s_net); destination(d_store); };`. Waits until every
    /// port is bound.
    pub fn launch(
        ns: &NetNs,
        dir: &Path,
        name: &str,
        udp: &[SocketAddr],
        log: Option<&str>,
    ) -> Result<Self> {
        let root = root();
        let binary = root.join("usr/sbin/syslog-ng");
        if !binary.exists() {
            bail!(
                "no syslog-ng at {}; `cargo xtask setup` unpacks it",
                binary.display()
            );
        }
        let file = dir.join(format!("{name}.log"));
        let conf = dir.join(format!("{name}.conf"));
        let sources: String = udp
            .iter()
            .map(|a| {
                format!(
                    "  network(transport(\"udp\") ip(\"{}\") port({}));\n",
                    a.ip(),
                    a.port()
                )
            })
            .collect();
        std::fs::write(
            &conf,
            format!(
                "@version: 3.38\noptions {{ use-dns(no); dns-cache(no); stats-freq(0); }};\n\
                 source s_net {{\n{sources}}};\n\
                 destination d_store {{ file(\"{}\" template(\"${{PROGRAM}} [${{MESSAGE}}]\\n\") fsync(yes)); }};\n\
                 {}\n",
                file.display(),
                log.unwrap_or("log { source(s_net); destination(d_store); };")
            ),
        )?;
        let lib: Vec<String> = [
            "usr/lib/x86_64-linux-gnu",
            "lib/x86_64-linux-gnu",
            "usr/lib/syslog-ng",
        ]
        .iter()
        .map(|d| root.join(d).display().to_string())
        .collect();
        let child = ns
            .command(binary.to_str().context("a UTF-8 path")?)
            .arg("-F")
            .arg("--no-caps")
            .arg("-f")
            .arg(&conf)
            .arg(format!(
                "--module-path={}",
                root.join("usr/lib/syslog-ng/3.38").display()
            ))
            .arg("-R")
            .arg(dir.join(format!("{name}.persist")))
            .arg("-p")
            .arg(dir.join(format!("{name}.pid")))
            .arg("-c")
            .arg(dir.join(format!("{name}.ctl")))
            .env("LD_LIBRARY_PATH", lib.join(":"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                dir.join(format!("{name}.err")),
            )?))
            .spawn()
            .context("starting syslog-ng")?;
        let server = Self { child, log: file };
        let needles: Vec<String> = udp
            .iter()
            .map(|a| format!("{}:{}", a.ip(), a.port()))
            .collect();
        let bound = crate::wait_for(Duration::from_secs(10), || {
            let out = ns.run("ss", &["-Hlun"]).ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            needles
                .iter()
                .all(|n| text.contains(n.as_str()))
                .then_some(())
        });
        if bound.is_none() {
            bail!("syslog-ng {name} did not bind {needles:?} within 10 s; see {name}.err");
        }
        Ok(server)
    }

    /// Lines stored so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
