//! Once a second: per-colour totals and rates (and five minutes of them
//! for the dashboard), whether the steering link is still attached, and,
//! every few seconds, new interfaces in the redirect devmap.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::Core;
use crate::model::{Colour, ColourRate, PerColour, Traffic, TrafficSample, now_unix_ms};

/// How often the agent samples counters for packets-per-second figures.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often new interfaces are added to the redirect devmap.
const IFACE_REFRESH: Duration = Duration::from_secs(5);
/// Five minutes of one-second samples.
const TRAFFIC_HISTORY: usize = 300;

/// Keeps per-colour totals and rates fresh, and the devmap complete.
pub(super) async fn run(core: Arc<Core>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    let mut last: Option<(Instant, PerColour<Traffic>)> = None;
    let mut last_refresh = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let Ok(total) = core.totals() else { continue };
        let mut rates = PerColour::<ColourRate>::default();
        for c in Colour::ALL {
            let t = total.get(c);
            let r = rates.get_mut(c);
            r.packets = t.packets;
            r.bytes = t.bytes;
            if let Some((then, prev)) = &last {
                let dt = now.duration_since(*then).as_secs_f64().max(1e-3);
                let p = prev.get(c);
                r.pps = t.packets.saturating_sub(p.packets) as f64 / dt;
                r.bps = t.bytes.saturating_sub(p.bytes) as f64 * 8.0 / dt;
            }
        }
        *core.rates.lock().expect("poisoned") = rates;
        if last.is_some() {
            let mut h = core.traffic_history.lock().expect("poisoned");
            h.push_back(TrafficSample {
                at_unix_ms: now_unix_ms(),
                pps: PerColour {
                    blue: rates.blue.pps,
                    green: rates.green.pps,
                },
                bps: PerColour {
                    blue: rates.blue.bps,
                    green: rates.green.bps,
                },
            });
            while h.len() > TRAFFIC_HISTORY {
                h.pop_front();
            }
        }
        last = Some((now, total));
        let attached = core.dp().steering_attached();
        {
            let mut detached = core.detached.lock().expect("poisoned");
            match (attached, detached.is_some()) {
                (Err(why), false) => {
                    log::error!(
                        "the data path is detached: {why}; flips are refused until the agent restarts"
                    );
                    *detached = Some(why);
                }
                (Ok(()), true) => *detached = None,
                _ => {}
            }
        }
        if last_refresh.elapsed() >= IFACE_REFRESH {
            last_refresh = Instant::now();
            if let Err(e) = core.dp().refresh_redirect_ifaces() {
                log::warn!("refreshing redirect interfaces: {e}");
            }
        }
    }
}
