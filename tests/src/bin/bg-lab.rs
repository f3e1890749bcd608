//! The lab behind `cargo xtask run`: a client, the agent on a steering
//! namespace, and real rsyslog servers as blue and green backends, with a
//! trickle of real syslog traffic (`logger`). Ctrl-C tears it all down.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use bg_tests::{
    agent::{Agent, bgctl_bin},
    lab::{Backends, Family, Lab, service_addr},
    rsyslog::Rsyslog,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

const USAGE: &str =
    "usage: bg-lab [--seconds N]   (default 3600; the lab stops by itself after N seconds)";

fn main() -> Result<()> {
    let mut seconds: u64 = 3600;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                let v = args.next().context(USAGE)?;
                seconds = v
                    .parse()
                    .with_context(|| format!("--seconds = {v:?}: not a whole number; {USAGE}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the lab needs root to create network namespaces and attach XDP");
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    println!("starting the bluegreen lab ...");
    let lab = Lab::new(Backends::Namespaces)?;
    let config = lab.write_config()?;
    let servers: Vec<Rsyslog> = ["blue", "green"]
        .iter()
        .map(|c| {
            let udp = [lab.backend(c, Family::V4), lab.backend(c, Family::V6)];
            let tcp: Vec<_> = [514, 601, 6514]
                .iter()
                .flat_map(|&p| {
                    [
                        lab.backend_for(c, Family::V4, p),
                        lab.backend_for(c, Family::V6, p),
                    ]
                })
                .collect();
            Rsyslog::start(lab.backend_ns(c), &lab.dir, c, &udp, &tcp)
        })
        .collect::<Result<_>>()?;
    let agent = Agent::start(&lab, &config)?;
    // The agent's dashboard listens on loopback in the steering namespace;
    // relay it to the host's loopback so a browser here can open it.
    let dashboard = match bg_tests::http::forward_into(&lab.lb, "127.0.0.1:9514".parse()?) {
        Ok(()) => "http://127.0.0.1:9514/  (mutations need the token: bgctl token)".to_owned(),
        Err(e) => format!(
            "127.0.0.1:9514 is taken on this host ({e}); inside the lab: nsenter --net=/run/netns/{} curl http://127.0.0.1:9514/api/status",
            lab.lb.name
        ),
    };
    let bgctl = bgctl_bin();
    let bgctl = bgctl.display();
    let socket = agent.socket.display();
    let target = service_addr(Family::V4);
    println!(
        r#"
bluegreen lab is up (stops after {seconds} s, or on Ctrl-C)

  client   namespace {client}: sends a syslog message (util-linux `logger`) every 500 ms to {target}
  steering namespace {lb}: bgctl agent, XDP on {iface} (UDP 514; TCP 514, 601, 6514); config {config}
  blue     namespace {blue}: rsyslogd (UDP and TCP) on {b4} and {b6}, writes {blog}
  green    namespace {green}: rsyslogd (UDP and TCP) on {g4} and {g6}, writes {glog}

Flip and watch, in another terminal:
  export BGCTL_SOCKET={socket}
  {bgctl} status            # active colour, backends, packets per colour
  {bgctl} flip green        # one atomic map write
  {bgctl} rollback
  tail -f {blog} {glog}
  nsenter --net=/run/netns/{client} logger -d -n 198.18.0.1 -P 514 "hello over UDP"
  nsenter --net=/run/netns/{client} logger --tcp --octet-count -n 198.18.0.1 -P 601   # type lines; the
      connection keeps its colour across flips while new ones take the active colour
  {bgctl} drain blue --timeout 60   # after a flip to green: wait for blue's TCP connections

Dashboard: {dashboard}
Metrics:   http://127.0.0.1:9514/metrics

Agent log: {alog}
"#,
        client = lab.client.name,
        lb = lab.lb.name,
        iface = lab.lb_if,
        config = config.display(),
        blue = lab.blue.as_ref().map(|n| n.name.as_str()).unwrap_or(""),
        green = lab.green.as_ref().map(|n| n.name.as_str()).unwrap_or(""),
        b4 = lab.backend("blue", Family::V4),
        b6 = lab.backend("blue", Family::V6),
        g4 = lab.backend("green", Family::V4),
        g6 = lab.backend("green", Family::V6),
        blog = servers[0].log.display(),
        glog = servers[1].log.display(),
        alog = lab.path("agent.log").display(),
    );

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut n: u64 = 0;
    while !STOP.load(Ordering::Relaxed) && Instant::now() < deadline {
        n += 1;
        let status = lab
            .logger(target, "bg-lab")
            .arg(format!("lab message {n}"))
            .status();
        if let Err(e) = status {
            eprintln!("logger: {e}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let blue = servers[0].lines().len();
    let green = servers[1].lines().len();
    println!(
        "\nstopping: sent {n} messages; blue wrote {blue} lines, green {green}. Tearing down ..."
    );
    drop(agent);
    drop(servers);
    drop(lab);
    println!("lab removed");
    Ok(())
}
