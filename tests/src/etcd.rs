//! A real etcd cluster (Debian's etcd 3.4) for the fleet tests. Its members
//! run in a network namespace of their own, on a bridge; each agent's lb
//! namespace joins the bridge with a veth, and cutting that veth is a
//! partition. The members listen on 2379/2380 inside that namespace only:
//! the host's etcd service, if any, is never touched. Everything goes on
//! drop, even when a test fails.
use std::{
    path::PathBuf,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    agent::Agent,
    certs::TestPki,
    lab::{self, Backends, Family, Lab},
    netns::NetNs,
    unique_id,
};

/// The bridge's subnet: members at .11, .12, ..; agents at .101, .102, ...
const NET: &str = "198.19.250";

pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    pub ns: NetNs,
    dir: PathBuf,
    id: String,
    /// Clients must speak TLS and show a certificate this CA signed.
    pub pki: Option<TestPki>,
    /// Set once authentication is on: etcdctl's `--user` for the tests'
    /// own reads.
    root: Option<String>,
}

/// An agent namespace's link to the cluster.
pub struct EtcdLink {
    ns_name: String,
    dev: String,
}

impl EtcdLink {
    /// Cuts this node off etcd (its link goes down); traffic elsewhere is
    /// untouched.
    pub fn cut(&self) -> Result<()> {
        self.set("down")
    }

    pub fn heal(&self) -> Result<()> {
        self.set("up")
    }

    fn set(&self, state: &str) -> Result<()> {
        crate::netns::sh(
            "ip",
            &["-n", &self.ns_name, "link", "set", &self.dev, state],
        )?;
        Ok(())
    }
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster has a leader.
    pub fn start(n: usize) -> Result<Self> {
        Self::start_with(n, false)
    }

    /// `start`, with the client URLs on TLS and client certificates
    /// required (`--client-cert-auth`).
    pub fn start_tls(n: usize) -> Result<Self> {
        Self::start_with(n, true)
    }

    fn start_with(n: usize, tls: bool) -> Result<Self> {
        let id = unique_id();
        let ns = NetNs::new(&format!("bg{id}-etcd"))?;
        ns.run("ip", &["link", "add", "br0", "type", "bridge"])?;
        // A bridge takes the lowest MAC of its ports unless given one: a
        // node joining later with a lower MAC would change the members'
        // MAC under the nodes already there, whose ARP entries then point
        // nowhere until they go stale (CI saw node0 cut off for 30 s).
        ns.run(
            "ip",
            &["link", "set", "br0", "address", "02:00:c6:13:fa:01"],
        )?;
        ns.run("ip", &["link", "set", "br0", "up"])?;
        for i in 0..n {
            ns.run(
                "ip",
                &["addr", "add", &format!("{NET}.{}/24", 11 + i), "dev", "br0"],
            )?;
        }
        let dir = std::env::temp_dir().join(format!("bluegreen-etcd-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let pki = if tls {
            let ips: Vec<std::net::IpAddr> = (0..n)
                .map(|i| Self::member_ip(i).parse().expect("address"))
                .collect();
            Some(TestPki::new(&dir, &["etcd.test"], &ips)?)
        } else {
            None
        };
        let mut cluster = Self {
            members: Vec::new(),
            ns,
            dir,
            id,
            pki,
            root: None,
        };
        for i in 0..n {
            let child = cluster.spawn(i, n)?;
            cluster.members.push(Some(child));
        }
        cluster.wait_healthy(Duration::from_secs(20))?;
        Ok(cluster)
    }

    fn member_ip(i: usize) -> String {
        format!("{NET}.{}", 11 + i)
    }

    fn spawn(&self, i: usize, n: usize) -> Result<Child> {
        let ip = Self::member_ip(i);
        let initial: Vec<String> = (0..n)
            .map(|j| format!("m{j}=http://{}:2380", Self::member_ip(j)))
            .collect();
        let log = std::fs::File::create(self.dir.join(format!("m{i}.log")))?;
        let scheme = self.scheme();
        let mut etcd = self.ns.command("etcd");
        if let Some(pki) = &self.pki {
            etcd.arg("--cert-file")
                .arg(&pki.cert)
                .arg("--key-file")
                .arg(&pki.key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        etcd.args([
            "--name",
            &format!("m{i}"),
            "--data-dir",
            self.dir.join(format!("m{i}")).to_str().context("utf-8")?,
            "--listen-client-urls",
            &format!("{scheme}://{ip}:2379"),
            "--advertise-client-urls",
            &format!("{scheme}://{ip}:2379"),
            "--listen-peer-urls",
            &format!("http://{ip}:2380"),
            "--initial-advertise-peer-urls",
            &format!("http://{ip}:2380"),
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &format!("bluegreen-{}", self.id),
            // Fast elections: the tests kill members on purpose.
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting etcd (Debian's etcd-server; `cargo xtask setup` installs it)")
    }

    fn scheme(&self) -> &'static str {
        if self.pki.is_some() { "https" } else { "http" }
    }

    /// The client URLs, for `[fleet] endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| format!("{}://{}:2379", self.scheme(), Self::member_ip(i)))
            .collect()
    }

    /// etcdctl's flags for this cluster's TLS and authentication, if any.
    fn etcdctl_tls(&self) -> Vec<String> {
        let mut flags = match &self.pki {
            Some(p) => vec![
                format!("--cacert={}", p.ca.display()),
                format!("--cert={}", p.cert.display()),
                format!("--key={}", p.key.display()),
            ],
            None => Vec::new(),
        };
        if let Some(root) = &self.root {
            flags.push(format!("--user={root}"));
        }
        flags
    }

    /// Turns etcd authentication on, with `user` allowed read and write on
    /// `/bluegreen/test/` only (the access the README documents). Returns
    /// a file holding `password`, for `password_file`.
    pub fn enable_auth(&mut self, user: &str, password: &str) -> Result<PathBuf> {
        let root = format!("root:{}", unique_id());
        let prefix = "/bluegreen/test/";
        let login = format!("{user}:{password}");
        let steps: [Vec<&str>; 6] = [
            vec!["user", "add", &root],
            vec!["role", "add", "bluegreen"],
            vec![
                "role",
                "grant-permission",
                "bluegreen",
                "--prefix=true",
                "readwrite",
                prefix,
            ],
            vec!["user", "add", &login],
            vec!["user", "grant-role", user, "bluegreen"],
            vec!["auth", "enable"],
        ];
        for step in steps {
            let out = self
                .ns
                .command("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(self.etcdctl_tls())
                .args(["--endpoints", &self.endpoints().join(",")])
                .args(&step)
                .output()?;
            if !out.status.success() {
                bail!(
                    "etcdctl {}: {}",
                    step.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        self.root = Some(root);
        let file = self.dir.join(format!("{user}.password"));
        std::fs::write(&file, format!("{password}\n"))?;
        Ok(file)
    }

    /// `[fleet]` for node `node` of this cluster, with short timeouts.
    pub fn fleet_section(&self, node: &str) -> String {
        let endpoints: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!(
            "[fleet]\ncluster = \"test\"\nnode = \"{node}\"\nendpoints = [{}]\nconverge_timeout_ms = 3000\nlease_ttl_s = 10\n{}",
            endpoints.join(", "),
            match &self.pki {
                // The members' own certificate doubles as the clients'.
                Some(p) => format!("ca = {:?}\ncert = {:?}\nkey = {:?}\n", p.ca, p.cert, p.key),
                None => String::new(),
            }
        )
    }

    /// Gives `ns` a link to the members' bridge, as node number `k`.
    pub fn join(&self, ns: &NetNs, k: usize) -> Result<EtcdLink> {
        let (ours, theirs) = (format!("e{}n{k}", self.id), format!("e{}b{k}", self.id));
        lab::veth(ns, &ours, &self.ns, &theirs)?;
        self.ns
            .run("ip", &["link", "set", &theirs, "master", "br0"])?;
        ns.run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{NET}.{}/24", 101 + k),
                "dev",
                &ours,
            ],
        )?;
        Ok(EtcdLink {
            ns_name: ns.name.clone(),
            dev: ours,
        })
    }

    /// Kills member `i` (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `etcdctl endpoint health` on every member still running, until all
    /// answer or `limit` passes.
    pub fn wait_healthy(&self, limit: Duration) -> Result<()> {
        let live: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_some())
            .map(|(i, _)| format!("{}://{}:2379", self.scheme(), Self::member_ip(i)))
            .collect();
        let ok = crate::wait_for(limit, || {
            let out = self
                .ns
                .command("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(self.etcdctl_tls())
                .args(["--endpoints", &live.join(","), "endpoint", "health"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        if ok.is_none() {
            bail!(
                "etcd did not become healthy within {limit:?}; member logs in {}",
                self.dir.display()
            );
        }
        Ok(())
    }

    /// `etcdctl get` of one key inside the cluster's namespace.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self
            .ns
            .command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(self.etcdctl_tls())
            .args([
                "--endpoints",
                &self.endpoints().join(","),
                "get",
                "--print-value-only",
                key,
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Node `k` of a fleet on `cluster`: a lab with one UDP service, its link
/// to etcd, and its agent with `[fleet]` (node name `node<k>`) and `extra`
/// in its config. Bind as `let (lab, link, agent) = ...`: locals drop in
/// reverse, so the agent stops first.
pub fn fleet_node(cluster: &EtcdCluster, k: usize, extra: &str) -> Result<(Lab, EtcdLink, Agent)> {
    fleet_node_serving(cluster, k, &[("udp", 514)], extra)
}

/// `fleet_node`, steering `services` ((protocol, port) pairs).
pub fn fleet_node_serving(
    cluster: &EtcdCluster,
    k: usize,
    services: &[(&str, u16)],
    extra: &str,
) -> Result<(Lab, EtcdLink, Agent)> {
    let lab = Lab::new(Backends::Local)?;
    let link = cluster.join(&lab.lb, k)?;
    let fleet = cluster.fleet_section(&format!("node{k}"));
    let config = lab.write_test_config(services, Family::V4, &format!("{fleet}\n{extra}"))?;
    let agent = Agent::start(&lab, &config)?;
    Ok((lab, link, agent))
}
