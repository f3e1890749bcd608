//! The namespace topology shared by the end-to-end tests and `cargo xtask run`:
//!
//! ```text
//!  client ns            lb ns (XDP on the ingress veth)            backends
//!  198.18.0.2  ──veth── 198.18.0.1 ┬─ local sockets: port+10000 blue, +20000 green (Local)
//!  2001:db8::2          2001:db8::1 ├─veth─ blue ns  198.18.1.2 2001:db8:1::2  (Namespaces)
//!                                   └─veth─ green ns 198.18.2.2 2001:db8:2::2
//! ```
//! Everything is created under unique names and removed on drop.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::netns::NetNs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backends {
    /// Blue and green are sockets on other ports inside the lb namespace.
    Local,
    /// Blue and green live in their own namespaces behind veths.
    Namespaces,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

pub struct Lab {
    pub id: String,
    pub backends: Backends,
    /// Scratch directory: config, logs, sockets, agent state.
    pub dir: PathBuf,
    /// The lb-side interface that carries XDP.
    pub lb_if: String,
    pub pin_root: PathBuf,
    // Namespaces last: they are dropped after the fields above.
    pub client: NetNs,
    pub lb: NetNs,
    pub blue: Option<NetNs>,
    pub green: Option<NetNs>,
}

/// Where the client sends, for each family.
pub fn service_addr(family: Family) -> SocketAddr {
    service_addr_for(family, 514)
}

/// Where the client sends for the service on `port`.
pub fn service_addr_for(family: Family, port: u16) -> SocketAddr {
    match family {
        Family::V4 => format!("198.18.0.1:{port}").parse().unwrap(),
        Family::V6 => format!("[2001:db8::1]:{port}").parse().unwrap(),
    }
}

impl Lab {
    pub fn new(backends: Backends) -> Result<Self> {
        let id = crate::unique_id();
        let dir = std::env::temp_dir().join(format!("bluegreen-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let client = NetNs::new(&format!("bg{id}-client"))?;
        let lb = NetNs::new(&format!("bg{id}-lb"))?;
        let (blue, green) = match backends {
            Backends::Local => (None, None),
            Backends::Namespaces => (
                Some(NetNs::new(&format!("bg{id}-blue"))?),
                Some(NetNs::new(&format!("bg{id}-green"))?),
            ),
        };
        let pin_root = PathBuf::from(format!("/sys/fs/bpf/bluegreen-test-{id}"));
        crate::cleanup::track_pins(&pin_root);
        let lab = Self {
            lb_if: format!("bg{id}in"),
            pin_root,
            id,
            backends,
            dir,
            client,
            lb,
            blue,
            green,
        };
        lab.wire()?;
        Ok(lab)
    }

    fn wire(&self) -> Result<()> {
        self.wire_client()?;
        self.lb.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        self.lb
            .run("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
        for (ns, n) in [(&self.blue, 1), (&self.green, 2)] {
            let Some(ns) = ns else { continue };
            let lb_side = format!("bg{}l{n}", self.id);
            veth(&self.lb, &lb_side, ns, "b0")?;
            addr(
                &self.lb,
                &lb_side,
                &format!("198.18.{n}.1/24"),
                &format!("2001:db8:{n}::1/64"),
            )?;
            addr(
                ns,
                "b0",
                &format!("198.18.{n}.2/24"),
                &format!("2001:db8:{n}::2/64"),
            )?;
            ns.run(
                "ip",
                &["route", "add", "default", "via", &format!("198.18.{n}.1")],
            )?;
            ns.run(
                "ip",
                &[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("2001:db8:{n}::1"),
                ],
            )?;
            // XDP_REDIRECT into a veth needs NAPI on the receiving peer; GRO enables it.
            ns.run("ethtool", &["-K", "b0", "gro", "on"])?;
        }
        Ok(())
    }

    /// The client's link to the lb: the steering interface.
    fn wire_client(&self) -> Result<()> {
        veth(&self.client, "c0", &self.lb, &self.lb_if)?;
        addr(&self.client, "c0", "198.18.0.2/24", "2001:db8::2/64")?;
        addr(&self.lb, &self.lb_if, "198.18.0.1/24", "2001:db8::1/64")?;
        self.client
            .run("ip", &["route", "add", "default", "via", "198.18.0.1"])?;
        self.client.run(
            "ip",
            &["-6", "route", "add", "default", "via", "2001:db8::1"],
        )?;
        // Frames from a local socket carry only a partial checksum on veth;
        // a real sender on another host sends full ones. Make the client real.
        self.client.run("ethtool", &["-K", "c0", "tx", "off"])?;
        Ok(())
    }

    /// Deletes the steering interface and makes it again under the same
    /// name (a new ifindex), as when a host's link is recreated: whatever
    /// was attached to it is gone.
    pub fn recreate_steering_interface(&self) -> Result<()> {
        self.client.run("ip", &["link", "del", "c0"])?;
        self.wire_client()
    }

    /// Gives the client's veth its default checksum offload back: frames
    /// leave it with partial checksums, as from a container on this host.
    pub fn client_offload_on(&self) -> Result<()> {
        self.client.run("ethtool", &["-K", "c0", "tx", "on"])?;
        Ok(())
    }

    /// Backend address of a colour for a family, for the UDP 514 service.
    pub fn backend(&self, colour: &str, family: Family) -> SocketAddr {
        self.backend_for(colour, family, 514)
    }

    /// Backend address of a colour for the service on `port`: the same port
    /// on the colour's own host, or port + 10000 (blue) / + 20000 (green)
    /// on the lb host for local backends.
    pub fn backend_for(&self, colour: &str, family: Family, port: u16) -> SocketAddr {
        let n = if colour == "blue" { 1 } else { 2 };
        let text = match (self.backends, family) {
            (Backends::Local, Family::V4) => format!("198.18.0.1:{}", port + 10000 * n),
            (Backends::Local, Family::V6) => format!("[2001:db8::1]:{}", port + 10000 * n),
            (Backends::Namespaces, Family::V4) => format!("198.18.{n}.2:{port}"),
            (Backends::Namespaces, Family::V6) => format!("[2001:db8:{n}::2]:{port}"),
        };
        text.parse().unwrap()
    }

    /// The namespace a colour's backend runs in.
    pub fn backend_ns(&self, colour: &str) -> &NetNs {
        let ns = if colour == "blue" {
            &self.blue
        } else {
            &self.green
        };
        ns.as_ref().unwrap_or(&self.lb)
    }

    /// Writes the agent config: UDP 514 and TCP 514, 601 and 6514, each for
    /// IPv4 and IPv6, with the default health probes (the lab's config).
    pub fn write_config(&self) -> Result<PathBuf> {
        let services = [("udp", 514), ("tcp", 514), ("tcp", 601), ("tcp", 6514)];
        self.write_config_for(&services, &[Family::V4, Family::V6], "")
    }

    /// Writes a config with only the given (protocol, port) services in one
    /// family, and fast probes (100 ms, rise 2, fall 2) so tests need not
    /// wait a second per probe. Default probes guard every configured
    /// backend, so a test declares only the backends it runs. `extra` is
    /// appended as is.
    pub fn write_test_config(
        &self,
        services: &[(&str, u16)],
        family: Family,
        extra: &str,
    ) -> Result<PathBuf> {
        let health = format!("{}\n{extra}", crate::fixtures::FAST_HEALTH);
        self.write_config_for(services, &[family], &health)
    }

    /// Writes a config with the given (protocol, port) services in each of
    /// `families`, then `extra` as is (no probe settings of its own).
    pub fn write_config_for(
        &self,
        services: &[(&str, u16)],
        families: &[Family],
        extra: &str,
    ) -> Result<PathBuf> {
        let mut text = String::new();
        for &(proto, port) in services {
            for &family in families {
                let (listen, suffix) = match family {
                    Family::V4 => ("0.0.0.0", ""),
                    Family::V6 => ("[::]", "6"),
                };
                // The lab's backends speak plain syslog on every port,
                // 6514 (whose default is TLS) included.
                let app = if port == 6514 {
                    "app = \"syslog\"\n"
                } else {
                    ""
                };
                text.push_str(&crate::fixtures::service(
                    &format!("syslog-{proto}{suffix}-{port}"),
                    proto,
                    format!("{listen}:{port}"),
                    self.backend_for("blue", family, port),
                    self.backend_for("green", family, port),
                    app,
                ));
            }
        }
        text.push_str(extra);
        let path = self.dir.join("bluegreen.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// util-linux `logger` in the client namespace, sending RFC 3164 syslog
    /// over UDP to `target` with `tag`. Messages come from arguments or stdin.
    pub fn logger(&self, target: SocketAddr, tag: &str) -> std::process::Command {
        let mut c = self.client.command("logger");
        c.args([
            "-d",
            "-n",
            &target.ip().to_string(),
            "-P",
            &target.port().to_string(),
            "-t",
            tag,
        ]);
        c
    }

    /// util-linux `logger` over one TCP connection with RFC 6587
    /// octet-counted framing (`--tcp --octet-count`).
    pub fn logger_tcp(&self, target: SocketAddr, tag: &str) -> std::process::Command {
        let mut c = self.client.command("logger");
        c.args(["--tcp", "--octet-count", "-n", &target.ip().to_string()])
            .args(["-P", &target.port().to_string(), "-t", tag]);
        c
    }

    /// Runs a `logger` command (from `logger` or `logger_tcp`) with `msgs`
    /// on its standard input, one message per line; fails if it fails.
    pub fn log(&self, mut logger: std::process::Command, msgs: &[String]) {
        use std::io::Write as _;
        let mut child = logger
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("logger (Debian bsdutils)");
        let input: String = msgs.iter().map(|m| format!("{m}\n")).collect();
        let mut stdin = child.stdin.take().expect("logger's stdin");
        stdin
            .write_all(input.as_bytes())
            .expect("writing to logger");
        drop(stdin);
        assert!(child.wait().expect("logger").success(), "logger failed");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        remove_pins(&self.pin_root);
        crate::cleanup::untrack_pins(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A pin root removed when dropped, also while a test panics: made before
/// anything is pinned under it, so a verifier rejection leaves nothing.
pub struct PinRoot(pub PathBuf);

impl PinRoot {
    /// A fresh root under /sys/fs/bpf named `<prefix>-<unique id>`.
    pub fn new(prefix: &str) -> Self {
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/{prefix}-{}",
            crate::unique_id()
        )))
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        remove_pins(&self.0);
    }
}

/// Removes a pin root and everything under it (pins are files and dirs).
pub fn remove_pins(root: &Path) {
    if let Ok(dirs) = std::fs::read_dir(root) {
        for d in dirs.flatten() {
            if let Ok(files) = std::fs::read_dir(d.path()) {
                for f in files.flatten() {
                    let _ = std::fs::remove_file(f.path());
                }
            }
            let _ = std::fs::remove_dir(d.path());
        }
    }
    let _ = std::fs::remove_dir(root);
}

pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    crate::netns::sh(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    )?;
    a.run("ip", &["link", "set", a_if, "up"])?;
    b.run("ip", &["link", "set", b_if, "up"])?;
    Ok(())
}

pub fn addr(ns: &NetNs, dev: &str, v4: &str, v6: &str) -> Result<()> {
    ns.run("ip", &["addr", "add", v4, "dev", dev])?;
    ns.run("ip", &["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
    Ok(())
}
