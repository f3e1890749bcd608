//! The probe tasks: one per backend, each on its own timer, recording on
//! the board and in the history and metrics. A success is then checked
//! against the data path (`PathCheck`).
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::HealthBoard;
use crate::{
    config::Config,
    metrics::Metrics,
    model::{Colour, Event, Protocol},
    probe::{ProbeError, Target},
    store::history::History,
};

/// Whether the data path can deliver to a backend, asked after its probe
/// succeeded: (service, colour, backend, protocol, whether the probe just
/// sent traffic there). Err says why not; the probe then fails. It may
/// block (on a blocking thread) for up to the probe's timeout.
pub type PathCheck =
    Arc<dyn Fn(&str, Colour, SocketAddr, Protocol, bool) -> Result<(), String> + Send + Sync>;

/// Starts one probe task per backend. Each runs on its own timer, so a slow
/// probe never delays another.
pub fn spawn_probes(
    config: &Config,
    board: Arc<HealthBoard>,
    history: Arc<History>,
    metrics: Arc<Metrics>,
    path: PathCheck,
) {
    for svc in &config.services {
        for colour in Colour::ALL {
            let check = svc.health.clone();
            let service = svc.name.clone();
            let protocol = svc.protocol;
            let (board, history, metrics, path) = (
                board.clone(),
                history.clone(),
                metrics.clone(),
                path.clone(),
            );
            tokio::spawn(async move {
                let mut next = tokio::time::Instant::now();
                let mut last_local_log: Option<Instant> = None;
                loop {
                    tokio::time::sleep_until(next).await;
                    let began = tokio::time::Instant::now();
                    // Read each time: a deployment may point the colour elsewhere.
                    let Some(addr) = board.backend(&service, colour) else {
                        return;
                    };
                    let started = Instant::now();
                    let target = Target {
                        addr,
                        service: &service,
                        colour,
                        timeout: check.timeout,
                    };
                    let outcome = check.probe.probe(&target).await;
                    let latency = started.elapsed();
                    let mut result = match outcome {
                        Ok(took) => Ok(took),
                        Err(ProbeError::Backend(e)) => Err(e),
                        Err(ProbeError::Local(e)) => {
                            // Not the backend's doing: record nothing, so
                            // its state (and any bake) stays as it was.
                            if last_local_log
                                .is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(10))
                            {
                                log::warn!(
                                    "{service} {colour} backend {addr}: probe skipped, this host failed it: {e}"
                                );
                                last_local_log = Some(Instant::now());
                            }
                            next = (began + check.interval).max(tokio::time::Instant::now());
                            continue;
                        }
                    };
                    if result.is_ok() {
                        // The backend answered its probe; the data path must
                        // reach it too. Probes that sent it traffic made the
                        // kernel resolve its neighbour; an exec probe did not.
                        let sent = check.probe.sends_to_backend();
                        // Off the async workers: the check may wait for an
                        // answer (the probe through a DSR service address).
                        let (path, name) = (path.clone(), service.clone());
                        let judged = tokio::task::spawn_blocking(move || {
                            path(&name, colour, addr, protocol, sent)
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("the path check failed: {e}")));
                        if let Err(e) = judged {
                            result = Err(e);
                        }
                    }
                    metrics.observe_probe(&service, colour, latency.as_secs_f64());
                    if let Some((state, h)) =
                        board.record(&service, colour, &result, latency, &check)
                    {
                        let detail = h.last_error.clone().unwrap_or_default();
                        log::info!("{service} {colour} backend {addr}: {state:?} {detail}");
                        history.append(&Event::Probe {
                            service: service.clone(),
                            colour,
                            backend: addr,
                            state,
                            error: h.last_error,
                        });
                    }
                    // The next probe starts an interval after this one began
                    // (fastinter while the backend is in transition), or at
                    // once if this one took longer.
                    let gap = if board.in_transition(&service, colour) {
                        check.fastinter
                    } else {
                        check.interval
                    };
                    next = (began + gap).max(tokio::time::Instant::now());
                }
            });
        }
    }
}
