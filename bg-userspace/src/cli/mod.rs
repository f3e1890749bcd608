//! Command-line interface of `bgctl`.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    dataplane::XdpModeRequest,
    model::{Colour, Pause, Weight},
};

pub mod backend_setup;
pub mod client;
pub mod deployment;
pub mod drain;
pub mod flip_text;
pub mod format;
pub mod operations;
pub mod time;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// The command did what was asked.
    pub const OK: i32 = 0;
    /// The agent (or the data path) refused or failed; the message says why.
    pub const FAILED: i32 = 1;
    /// Bad arguments (clap's own code).
    pub const USAGE: i32 = 2;
    /// No agent answered on the control socket.
    pub const UNREACHABLE: i32 = 3;
    /// `drain`: the timeout passed while the colour still held live connections.
    pub const DRAIN_TIMEOUT: i32 = 4;
}

const AFTER_HELP: &str = "\
Examples:
  bgctl agent --iface eth0 --config /etc/bluegreen/bluegreen.toml
  bgctl agent --netns lb --iface veth0 --config bg.toml   # in a network namespace
  bgctl status
  bgctl flip green        # every service moves to green with one map write, if green is healthy
  bgctl flip green --force  # even if it is not (recorded in the history)
  bgctl rollback          # back to the colour active before the last flip
  bgctl shift green 10%   # 10% of senders (by source address) to green, if green is healthy
  bgctl drain blue --timeout 600   # wait until blue holds no live TCP connections
  bgctl history           # flips, rollbacks, refusals, probe state changes
  bgctl deploy green --version 8.2 --wait   # validated switch with automatic rollback
  bgctl deploy green --steps 1,10,50,100 --pause 60s   # progressive: watched steps, then the switch
  bgctl deploy green --steps 5,25 --pause indefinite   # each step waits for `bgctl promote`
  bgctl deploy --status
  bgctl check-config /etc/bluegreen/bluegreen.toml   # validate before a reload
  bgctl reload            # apply the edited config in place (or: systemctl reload, SIGHUP)
  bgctl teardown --iface eth0

Exit codes: 0 success, 1 refused or failed, 2 bad arguments, 3 agent unreachable,
4 drain timed out with connections still live.
Logging: RUST_LOG=debug (RUST_LOG=bg_ebpf=debug adds the data path's own debug logs);
--log-format json for one JSON object per line. History lines name who asked ([by uid 0 (pid N)]).";

/// One of `deploy --steps`: a percentage, with or without `%`.
fn parse_step(text: &str) -> Result<Weight, String> {
    let steps = crate::deploy::steps::parse_steps(&[text.to_owned()]);
    match steps {
        Ok(s) => Ok(s.first().copied().unwrap_or(Weight::FULL)),
        // A lone 100 is the switch: valid as the last of several.
        Err(_) if text.trim().trim_end_matches('%') == "100" => Ok(Weight::FULL),
        Err(e) => Err(e),
    }
}

/// Parses `SERVICE=ADDR:PORT` for `deploy --backend`.
fn parse_mode(text: &str) -> Result<crate::config::dsr::Mode, String> {
    use crate::config::dsr::Mode;
    Mode::parse(text).ok_or_else(|| format!("unknown mode; accepted: {}", Mode::ACCEPTED))
}

fn parse_backend(text: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (service, addr) = text.split_once('=').ok_or_else(|| {
        format!("{text:?}: expected SERVICE=ADDR:PORT, e.g. syslog-udp=198.18.2.3:514")
    })?;
    let addr = addr.parse().map_err(|_| {
        format!("{addr:?}: not ADDR:PORT (an IPv4 address or [IPv6] address, and a port)")
    })?;
    Ok((service.to_owned(), addr))
}

/// bluegreen: zero-downtime blue/green switching for syslog pipelines, steered in XDP.
#[derive(Debug, Parser)]
#[command(name = "bgctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Control socket of the agent.
    #[arg(long, global = true, env = "BGCTL_SOCKET", default_value = crate::api::protocol::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Print stable JSON instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log lines: auto is journal under systemd (syslog priority prefixes,
    /// so `journalctl -p warning` works), text elsewhere; json writes one
    /// object per line for log shippers.
    #[arg(long, global = true, value_enum, env = "BGCTL_LOG_FORMAT", default_value_t = crate::host::logging::LogFormat::Auto)]
    pub log_format: crate::host::logging::LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground: attach XDP to an interface, fill the
    /// maps from the config and serve the control socket.
    ///
    /// If an earlier agent left pinned state for the interface, the agent
    /// adopts it: the active colour is kept and the program is replaced in
    /// place, so traffic never stops. Stopping the agent (Ctrl-C, SIGTERM,
    /// even kill -9) leaves traffic flowing on the active colour.
    Agent {
        /// Interface that receives the syslog traffic.
        #[arg(long, value_name = "IF")]
        iface: String,
        /// TOML file listing the services and their blue and green backends.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// XDP attach mode: auto tries driver mode and falls back to generic.
        #[arg(long, value_enum, default_value_t = XdpModeRequest::Auto)]
        xdp_mode: XdpModeRequest,
        /// Where the maps and the XDP link are pinned (one directory per interface).
        #[arg(long, value_name = "DIR", env = "BGCTL_PIN_ROOT", default_value = crate::dataplane::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
        /// Directory for the agent's own state (last flip record, history,
        /// API token) [default: /var/lib/bluegreen/<IF>].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Address of the dashboard, JSON API (/api/...) and Prometheus
        /// metrics (/metrics), or `off`. Reads need nothing; flips, rollbacks,
        /// deployments and aborts need the token that `bgctl token` prints.
        /// A non-loopback address is allowed, with a warning.
        #[arg(long, value_name = "ADDR:PORT|off", default_value = "127.0.0.1:9514", value_parser = parse_http)]
        http: HttpAddr,
        /// A host name the HTTP server answers to (repeatable). IP
        /// addresses and `localhost` always work; any other name in a
        /// request's Host header is refused (403), which defeats DNS
        /// rebinding. Give the names operators use to reach the dashboard.
        #[arg(long = "http-host", value_name = "NAME")]
        http_hosts: Vec<String>,
        /// Run in this network namespace (a name from `ip netns list`, or a
        /// path). Only the network namespace changes, so the pins stay in
        /// the host's bpffs and the data path outlives the agent. Prefer it
        /// to `ip netns exec`, which also gives the agent private mounts
        /// (the agent then joins the host's mounts itself, if it may).
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
    },
    /// Check a config file the way the agent checks it at start, without
    /// starting anything (like `nginx -t`). Exits 0 when it is valid,
    /// 1 with the agent's own message (file, field, value and what is
    /// accepted) when not.
    CheckConfig {
        /// The TOML file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the commands a backend needs for its colour's mode (nat,
    /// dsr-l2 or dsr-ipip): the service address on loopback, the ARP
    /// sysctls, the tunnel device, MTU advice and the rsyslog input, for
    /// Debian. Read it, then run it as root on that backend, e.g.
    /// `bgctl backend-setup --service syslog --colour green | ssh root@collector-g sh`.
    BackendSetup {
        /// The config that names the service.
        #[arg(
            long,
            value_name = "FILE",
            env = "BLUEGREEN_CONFIG",
            default_value = "/etc/bluegreen/bluegreen.toml"
        )]
        config: PathBuf,
        /// The service, by its name in the config.
        #[arg(long, value_name = "NAME")]
        service: String,
        /// Whose backend: blue or green [default: both, one after the other].
        #[arg(long, value_enum)]
        colour: Option<Colour>,
        /// Set up for this mode instead of the config's (to prepare a
        /// backend before the config changes): nat, dsr-l2 or dsr-ipip.
        #[arg(long, value_name = "MODE", value_parser = parse_mode)]
        mode: Option<crate::config::dsr::Mode>,
    },
    /// Re-read the agent's config file (the one it was started with) and
    /// apply it: the agent restarts itself in place, as `systemctl restart`
    /// would, and traffic never stops. An invalid file is refused with the
    /// reason and the running config stays; so is a reload during a
    /// deployment. SIGHUP to the agent does the same (`systemctl reload`).
    Reload,
    /// Print a shell completion script, e.g.
    /// `bgctl completions bash > /etc/bash_completion.d/bgctl`
    /// (the Debian package installs them for bash, zsh and fish).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (bgctl.1 and one per subcommand) into DIR;
    /// `cargo xtask package` uses it.
    #[command(hide = true)]
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the bearer token the HTTP API's mutating endpoints need, e.g.
    /// `curl -H "Authorization: Bearer $(bgctl token)" -d '{"colour":"green"}' http://127.0.0.1:9514/api/flip`.
    /// The agent made it on its first start (0600 file in its state directory).
    Token,
    /// Fleet mode (a `[fleet]` section in the agent's config): what this
    /// agent sees of the fleet.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Make one colour active for every service (one atomic map write).
    ///
    /// Refused when a backend of that colour is not up by its health probe;
    /// the message says which and why. --force flips anyway (logged and
    /// recorded in the history).
    Flip {
        /// The colour to make active.
        #[arg(value_enum)]
        colour: Colour,
        /// Flip even if the colour is not healthy.
        #[arg(long)]
        force: bool,
        /// Say what it would do and whether the health gate would pass;
        /// change nothing (exit 1 when it would be refused).
        #[arg(long)]
        dry_run: bool,
    },
    /// Flip back to the colour that was active before the last flip.
    /// Never refused for health: it is the way out. Under a split (`shift`),
    /// every sender goes back to the colour the split started from.
    Rollback,
    /// Split new senders between the colours: give COLOUR the share WEIGHT
    /// of them, e.g. `bgctl shift green 10%` (or `1000`, in basis points).
    ///
    /// Senders are chosen by a keyed hash of their source address, so each
    /// sender's stream stays on one colour while the weight holds, and
    /// raising green's weight moves only senders from blue to green. UDP
    /// senders move at once; TCP connections keep the colour they opened
    /// on until they close. 100% (or 0%) ends the split on one colour, like
    /// a flip. Refused when the colour gaining senders is not healthy,
    /// unless --force; recorded in the history.
    Shift {
        /// The colour whose share WEIGHT sets.
        #[arg(value_enum)]
        colour: Colour,
        /// Its share: a percentage ("10%", "2.5%") or basis points
        /// (0 to 10000).
        #[arg(value_name = "WEIGHT")]
        weight: Weight,
        /// Shift even if the colour gaining senders is not healthy.
        #[arg(long)]
        force: bool,
        /// Say what it would do and whether the health gate would pass;
        /// change nothing (exit 1 when it would be refused).
        #[arg(long)]
        dry_run: bool,
    },
    /// Deploy onto the idle colour: wait until it is healthy, validate its
    /// performance with synthetic load, switch, bake (rolling back by
    /// itself if it fails), then keep the old colour warm before it goes idle.
    ///
    /// Thresholds, bake and keep-warm times and hooks are in the config's
    /// [deploy] table. Exit code with --wait: 0 when it completed, 1 when it
    /// failed, was aborted or rolled back.
    Deploy {
        /// The idle colour to deploy onto.
        #[arg(value_enum, required_unless_present = "status")]
        colour: Option<Colour>,
        /// A label for this deployment (given to hooks as BG_VERSION).
        #[arg(long)]
        version: Option<String>,
        /// Put this backend in place for a service on the deployed colour
        /// first (repeatable). It stays across agent restarts.
        #[arg(long = "backend", value_name = "SERVICE=ADDR:PORT", value_parser = parse_backend)]
        backends: Vec<(String, std::net::SocketAddr)>,
        /// Deploy even though a UDP service's only health evidence is silence
        /// (its probe is `udp`). A UDP probe sees a refused port, a missing
        /// route or an unanswered neighbour, but not whether the collector
        /// keeps what it gets: configure an http or exec probe instead.
        #[arg(long)]
        force: bool,
        /// A progressive deployment: green's share of senders, in percent,
        /// at each step before the switch, e.g. 1,10,50,100 (a final 100 is
        /// the switch). Senders are split by source address, as `bgctl
        /// shift` does; each step is watched on real traffic (green's
        /// health, failed redirects, kernel drops) and any failure takes
        /// every sender back to the old colour and runs the rollback hook.
        #[arg(long, value_name = "PCT,PCT,...", value_delimiter = ',', value_parser = parse_step)]
        steps: Vec<Weight>,
        /// How long each step is watched before the next: 60s, 5m, 1h, or
        /// `indefinite` to wait for `bgctl promote` (or `bgctl abort`)
        /// [default: [deploy] bake_s].
        #[arg(long, value_name = "DURATION|indefinite", requires = "steps", value_parser = crate::deploy::steps::parse_pause)]
        pause: Option<Pause>,
        /// Show the current or last deployment instead of starting one.
        #[arg(long, conflicts_with_all = ["colour", "version", "wait", "backends", "force", "steps", "pause", "dry_run"])]
        status: bool,
        /// Stay until the deployment ends, printing each phase.
        #[arg(long)]
        wait: bool,
        /// Run the checks a start makes and print the phases it would run
        /// with their limits, from the config; start nothing (exit 1 when
        /// it would be refused).
        #[arg(long, conflicts_with = "wait")]
        dry_run: bool,
    },
    /// Stop the running deployment. Before any sender moved it just ends;
    /// after (its steps, or the switch) it rolls back.
    Abort,
    /// Move a progressive deployment (`deploy --steps`) on from the step it
    /// is paused at, to the next step or the switch. Like Argo Rollouts'
    /// promote, it is how a `--pause indefinite` step ends.
    Promote,
    /// Show the agent's event history: flips, rollbacks, refused flips and
    /// probe state changes, oldest first.
    History {
        /// How many of the latest events to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show the active colour, services, backends and traffic counters.
    Status,
    /// Wait until a colour holds no live TCP connections, printing progress
    /// each second. Exits 0 when drained, 4 when the timeout passes first.
    ///
    /// A connection is live while it is open (no FIN or RST seen) and its
    /// client sent a segment within the configured idle timeout
    /// (`[tcp] idle_timeout`). Drain the colour you flipped away from.
    Drain {
        /// The colour to drain.
        #[arg(value_enum)]
        colour: Colour,
        /// Give up after this many seconds.
        #[arg(long, value_name = "S", default_value_t = 300)]
        timeout: u64,
    },
    /// Detach steering from an interface and remove all of its pinned state.
    ///
    /// The agent for the interface (on --socket) is asked to stop first; an
    /// agent that still holds the interface after 5 s (it serves another
    /// socket) makes teardown refuse, unless --force. Traffic then reaches
    /// the listen addresses unsteered.
    Teardown {
        /// Interface to clean up.
        #[arg(long, value_name = "IF")]
        iface: String,
        /// Pin root used by the agent.
        #[arg(long, value_name = "DIR", env = "BGCTL_PIN_ROOT", default_value = crate::dataplane::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
        /// Remove the pins even while an agent that did not stop (it serves
        /// another socket) still manages them. That agent then reports its
        /// data path detached and refuses flips.
        #[arg(long)]
        force: bool,
    },
}

/// `--http`: an address, or off.
#[derive(Clone, Copy, Debug)]
pub struct HttpAddr(pub Option<std::net::SocketAddr>);

fn parse_http(s: &str) -> Result<HttpAddr, String> {
    if s == "off" {
        return Ok(HttpAddr(None));
    }
    s.parse().map(|a| HttpAddr(Some(a))).map_err(|_| {
        format!("{s:?} is not an address: use ADDR:PORT (e.g. 127.0.0.1:9514 or [::1]:9514) or off")
    })
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every live node: its applied generation and colour, config drift,
    /// what it sees unhealthy, when it last published; and whether this
    /// agent is connected to etcd or stale (steering on the colour it
    /// applied last).
    Status,
}
