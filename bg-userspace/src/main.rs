//! `bgctl`: the bluegreen agent and its command-line client.
use std::process::ExitCode;

use anyhow::Context as _;
use bluegreen::{
    agent::{self, AgentOptions},
    api::protocol::{Request, Response},
    cli::{
        Cli, Command, FleetCommand,
        client::{self, ClientError},
        drain, exit, format, operations,
    },
    dataplane::{self, bpffs, pin_lock},
    model::{Event, Phase, Tail},
    store::state,
};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    bluegreen::host::logging::init(cli.log_format);
    let code = match run(cli) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("bgctl: {e:#}");
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::Unreachable { .. }) => exit::UNREACHABLE,
                _ if e.is::<drain::DrainTimedOut>() => exit::DRAIN_TIMEOUT,
                _ => exit::FAILED,
            }
        }
    };
    ExitCode::from(code as u8)
}

/// `--dry-run`: the agent's checks of `of`, and what it would do.
fn dry_run(socket: &std::path::Path, json: bool, of: Request) -> anyhow::Result<()> {
    match client::request(socket, &Request::DryRun { of: Box::new(of) })? {
        Response::Preview(p) if json => print_json(&p),
        Response::Preview(p) => {
            print!("{}", operations::format_preview(&p));
            Ok(())
        }
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Agent {
            iface,
            config,
            xdp_mode,
            pin_root,
            state_dir,
            http,
            http_hosts,
            netns,
        } => {
            // Namespaces first: a process can change them only while it
            // has one thread, before the runtime starts its workers.
            if let Some(name) = &netns {
                bpffs::enter_netns(name)?;
            }
            report_mounts(bpffs::join_host_mounts(&pin_root)?);
            let state_dir = state_dir
                .unwrap_or_else(|| std::path::Path::new(state::DEFAULT_STATE_ROOT).join(&iface));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(agent::run(AgentOptions {
                iface,
                config,
                socket: cli.socket,
                pin_root,
                state_dir,
                xdp_mode,
                http: http.0,
                http_hosts,
            }))
        }
        Command::Flip {
            colour,
            force,
            dry_run: true,
        } => dry_run(&cli.socket, cli.json, Request::Flip { colour, force }),
        Command::Flip { colour, force, .. } => {
            flip(&cli.socket, cli.json, Request::Flip { colour, force })
        }
        Command::Deploy {
            colour,
            version,
            status,
            wait,
            backends,
            force,
            steps,
            pause,
            dry_run: preview,
        } => {
            let req = match colour {
                Some(colour) if !status => Request::Deploy {
                    colour,
                    version,
                    backends,
                    force,
                    steps,
                    pause,
                },
                _ => Request::DeployStatus,
            };
            if preview {
                return dry_run(&cli.socket, cli.json, req);
            }
            let Response::Deployment(d) = client::request(&cli.socket, &req)? else {
                anyhow::bail!("unexpected answer");
            };
            if !wait {
                return match d {
                    Some(d) if cli.json => print_json(&d),
                    Some(d) => {
                        print!("{}", format::format_deployment(&d));
                        Ok(())
                    }
                    None if cli.json => print_json(&serde_json::Value::Null),
                    None => {
                        println!("no deployment yet");
                        Ok(())
                    }
                };
            }
            follow_deployment(&cli.socket, cli.json)
        }
        Command::Abort => match client::request(&cli.socket, &Request::Abort)? {
            Response::Deployment(Some(d)) if cli.json => print_json(&d),
            Response::Deployment(Some(d)) => {
                println!(
                    "aborting deployment {} (in {:?}); `bgctl deploy --status` shows how it ends",
                    d.id, d.phase
                );
                Ok(())
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        },
        Command::Promote => match client::request(&cli.socket, &Request::Promote)? {
            Response::Deployment(Some(d)) if cli.json => print_json(&d),
            Response::Deployment(Some(d)) => {
                let step = d
                    .progressive
                    .as_ref()
                    .and_then(|p| Some((p.step?, p.steps.len())));
                println!(
                    "deployment {} promoted from step {} of {}; `bgctl deploy --status` shows the next",
                    d.id,
                    step.map_or(0, |(s, _)| s + 1),
                    step.map_or(0, |(_, n)| n)
                );
                Ok(())
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        },
        Command::History { limit } => {
            match client::request(&cli.socket, &Request::History { limit })? {
                Response::History(tail) => {
                    if tail.skipped > 0 {
                        eprintln!(
                            "bgctl: {} line(s) of the history file do not parse and were skipped",
                            tail.skipped
                        );
                    }
                    if cli.json {
                        return print_json(&tail.entries);
                    }
                    let entries = tail.entries;
                    print!("{}", format::format_history(&entries));
                    Ok(())
                }
                other => anyhow::bail!("unexpected answer {other:?}"),
            }
        }
        Command::Rollback => flip(&cli.socket, cli.json, Request::Rollback),
        Command::CheckConfig { file } => check_config(&file, cli.json),
        Command::BackendSetup {
            config,
            service,
            colour,
            mode,
        } => backend_setup(&config, &service, colour, mode),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "bgctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpages { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))
        }
        Command::Reload => match client::request(&cli.socket, &Request::Reload)? {
            Response::Reload(r) if cli.json => print_json(&r),
            Response::Reload(r) => {
                print!("{}", operations::format_reload(&r));
                Ok(())
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        },
        Command::Shift {
            colour,
            weight,
            force,
            dry_run: preview,
        } => {
            let req = Request::Shift {
                colour,
                weight,
                force,
            };
            if preview {
                return dry_run(&cli.socket, cli.json, req);
            }
            let Response::Shift(r) = client::request(&cli.socket, &req)? else {
                anyhow::bail!("the agent answered a shift with something else");
            };
            if cli.json {
                print_json(&r)?;
            } else {
                println!("{}", format::format_shift(&r));
            }
            converged(r.fleet.as_ref())
        }
        Command::Fleet {
            command: FleetCommand::Status,
        } => match client::request(&cli.socket, &Request::FleetStatus)? {
            Response::Fleet(f) if cli.json => print_json(&f),
            Response::Fleet(f) => {
                print!("{}", format::format_fleet(&f));
                Ok(())
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        },
        Command::Token => match client::request(&cli.socket, &Request::Token)? {
            Response::Token { token } if cli.json => print_json(&token),
            Response::Token { token } => {
                println!("{token}");
                Ok(())
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        },
        Command::Status => match client::request(&cli.socket, &Request::Status)? {
            Response::Status(s) if cli.json => print_json(&s),
            Response::Status(s) => {
                print!("{}", format::format_status(&s));
                // Fleet mode: one line on the fleet, drift first.
                if let Ok(Response::Fleet(f)) = client::request(&cli.socket, &Request::FleetStatus)
                {
                    println!("{}", format::fleet_line(&f));
                }
                Ok(())
            }
            other => anyhow::bail!("unexpected answer {other:?}"),
        },
        Command::Drain { colour, timeout } => drain::drain(
            &cli.socket,
            colour,
            std::time::Duration::from_secs(timeout),
            cli.json,
        ),
        Command::Teardown {
            iface,
            pin_root,
            force,
        } => {
            // The pins are in the host's bpffs, also under `ip netns exec`.
            report_mounts(bpffs::join_host_mounts(&pin_root)?);
            // Ask a running agent for this interface to stop first, so that it
            // does not keep the program alive; no agent is fine.
            let _ = client::request(
                &cli.socket,
                &Request::Shutdown {
                    iface: iface.clone(),
                },
            );
            // Never pull the pins from under a live agent: it would go on
            // acknowledging flips that steer nothing.
            let pin_dir = dataplane::pin_dir(&pin_root, &iface);
            let lock = pin_lock::PinLock::wait(&pin_dir, std::time::Duration::from_secs(5))?;
            if let Err(holder) = &lock
                && !force
            {
                anyhow::bail!(
                    "an agent ({holder}) still manages {} and did not stop: it serves another control socket than {}. Stop it, or run `bgctl --socket <its socket> teardown --iface {iface}`; --force removes the pins anyway (that agent then reports its data path detached)",
                    pin_dir.display(),
                    cli.socket.display()
                );
            }
            let removed = dataplane::teardown(&pin_root, &iface)?;
            if cli.json {
                print_json(&serde_json::json!({ "iface": iface, "removed": removed }))
            } else {
                if removed {
                    println!("{iface}: steering detached and pinned state removed");
                } else {
                    println!(
                        "{iface}: no pinned state under {}; nothing to do",
                        pin_root.display()
                    );
                }
                Ok(())
            }
        }
    }
}

/// Prints each phase of the running deployment until it ends; fails unless
/// it completed.
fn follow_deployment(socket: &std::path::Path, json: bool) -> anyhow::Result<()> {
    // Phases are read from the history, so a phase shorter than the poll
    // interval is still printed, in order, with its reason.
    let mut printed = 0;
    loop {
        let Response::Deployment(Some(d)) = client::request(socket, &Request::DeployStatus)? else {
            anyhow::bail!("no deployment to follow");
        };
        let Response::History(Tail { entries, .. }) =
            client::request(socket, &Request::History { limit: 1000 })?
        else {
            anyhow::bail!("the agent sent no history");
        };
        let phases: Vec<_> = entries
            .into_iter()
            .filter(|e| matches!(&e.event, Event::Deploy { id, .. } if *id == d.id))
            .collect();
        for e in phases.iter().skip(printed) {
            if json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                print!("{}", format::format_history(std::slice::from_ref(e)));
            }
        }
        printed = printed.max(phases.len());
        if d.phase.is_terminal() {
            if json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                print!("{}", format::format_deployment(&d));
            }
            if d.phase == Phase::Done {
                return Ok(());
            }
            anyhow::bail!(
                "deployment {} ended {:?}: {}",
                d.id,
                d.phase,
                d.reason.unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `check-config`: the agent's own validation; its message on failure.
fn check_config(file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let config = bluegreen::config::Config::load(file);
    match (config, json) {
        (Ok(c), true) => print_json(&serde_json::json!({
            "file": file, "valid": true, "config": c,
        })),
        (Ok(c), false) => {
            print!("{}", operations::format_check(file, &c));
            Ok(())
        }
        (Err(e), true) => {
            print_json(&serde_json::json!({
                "file": file, "valid": false, "error": e.to_string(),
            }))?;
            Err(e.into())
        }
        (Err(e), false) => Err(e.into()),
    }
}

fn backend_setup(
    file: &std::path::Path,
    service: &str,
    colour: Option<bluegreen::model::Colour>,
    mode: Option<bluegreen::config::dsr::Mode>,
) -> anyhow::Result<()> {
    use bluegreen::model::Colour;
    let config = bluegreen::config::Config::load(file)?;
    let Some((_, svc)) = config.service(service) else {
        let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "--service {service:?}: no such service in {}; it has {}",
            file.display(),
            names.join(", ")
        );
    };
    let colours = colour.map_or(Colour::ALL.to_vec(), |c| vec![c]);
    let scripts: Vec<String> = colours
        .iter()
        .map(|&c| bluegreen::cli::backend_setup::script(svc, c, mode.unwrap_or(svc.mode(c))))
        .collect();
    print!("{}", scripts.join("\n"));
    Ok(())
}

fn report_mounts(ns: bpffs::MountNamespace) {
    if let bpffs::MountNamespace::Joined { pid } = ns {
        log::info!(
            "started in a private mount namespace (ip netns exec?); joined the host's (pid {pid}) so the pins outlive the agent"
        );
    }
}

fn flip(socket: &std::path::Path, json: bool, req: Request) -> anyhow::Result<()> {
    let Response::Flip(r) = client::request(socket, &req)? else {
        anyhow::bail!("the agent answered a flip with something else");
    };
    if json {
        print_json(&r)?;
    } else {
        println!("{}", format::format_flip(&r));
    }
    if let Some(warning) = format::flip_warning(&r) {
        eprintln!("{warning}");
    }
    converged(r.fleet.as_ref())
}

/// A fleet flip or shift that some node did not apply in time is a
/// failure: the fleet steers two ways until it does.
fn converged(fleet: Option<&bluegreen::model::FleetFlip>) -> anyhow::Result<()> {
    if let Some(f) = fleet
        && f.converged_ms.is_none()
    {
        anyhow::bail!(
            "the fleet did not converge: {} did not apply generation {} in time",
            f.missing().join(", "),
            f.generation
        );
    }
    Ok(())
}
