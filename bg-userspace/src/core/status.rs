//! The status report: every service's backends, traffic and health, the
//! data path's counters, and live TCP connections per colour.
use std::time::{Duration, Instant};

use super::{Core, OpResult};
use crate::{
    model::{
        BackendHealth, Colour, PerColour, ServiceReport, StatusReport, TcpStatus, Traffic,
        UDP_EVIDENCE,
    },
    probe::ProbeKind,
};

/// How long a count of live TCP connections serves the dashboard and
/// metrics (a walk of the flow table; `bgctl status` always walks afresh).
const TCP_COUNT_MAX_AGE: Duration = Duration::from_secs(2);

impl Core {
    /// The status; `walk` counts live TCP connections afresh (a walk of the
    /// flow table), else a count under `TCP_COUNT_MAX_AGE` old is reused.
    pub fn status(&self, walk: bool) -> OpResult<StatusReport> {
        let (mut report, now) = {
            let dp = self.dp();
            let steering = dp.steering()?;
            let mut services = Vec::with_capacity(self.ids.len());
            for (svc, &id) in self.config.services.iter().zip(&self.ids) {
                let [blue, green] = dp.traffic(id)?;
                let health = |c| {
                    self.health
                        .get(&svc.name, c)
                        .unwrap_or_else(|| BackendHealth::new(self.backend(svc, c)))
                };
                services.push(ServiceReport {
                name: svc.name.clone(),
                protocol: svc.protocol,
                listen: svc.listen,
                blue: self.backend(svc, Colour::Blue),
                green: self.backend(svc, Colour::Green),
                traffic: PerColour { blue, green },
                health: PerColour {
                    blue: health(Colour::Blue),
                    green: health(Colour::Green),
                },
                probe_note: matches!(svc.health.probe, ProbeKind::Udp(_)).then(|| {
                    format!(
                        "udp probe: up means {UDP_EVIDENCE}. Deployments need --force while this service has only this probe"
                    )
                }),
                shadow: dp.shadow_counts(id)?,
                shadow_icmp_errors: self.shadow_icmp_errors(&svc.name),
            });
            }
            let report = StatusReport {
                iface: dp.iface.clone(),
                ifindex: dp.ifindex,
                xdp_mode: dp.mode,
                agent_pid: std::process::id(),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_s: self.started.elapsed().as_secs(),
                active: steering.active,
                split: steering.is_split().then_some(steering.green),
                split_seed: dp.split_seed()?,
                last_flip: self.state.lock().expect("poisoned").last_flip.clone(),
                services,
                colours: *self.rates.lock().expect("poisoned"),
                health_problems: PerColour {
                    blue: self.health.problems(Colour::Blue),
                    green: self.health.problems(Colour::Green),
                },
                tcp: TcpStatus {
                    live_connections: PerColour::default(),
                    idle_timeout_s: self.config.tcp.idle_timeout_s,
                    flow_table_size: self.tables.flows,
                    pending_table_size: self.tables.pending,
                },
                counters: dp
                    .counters()?
                    .named()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                unavailable: dp
                    .unavailable
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                detached: self.detached.lock().expect("poisoned").clone(),
                shadow: None,
            };
            (report, dp.now_jiffies()?)
        };
        report.shadow = self.shadow_status()?;
        // A walk of a full table costs a good part of a core: the dashboard's
        // polls and scrapes reuse one that is under TCP_COUNT_MAX_AGE old.
        let cached = *self.tcp_live.lock().expect("poisoned");
        report.tcp.live_connections = match cached {
            Some((at, live)) if !walk && at.elapsed() < TCP_COUNT_MAX_AGE => live,
            _ => self.count_live(now)?,
        };
        Ok(report)
    }

    /// Walks the flow table. It costs a syscall pair per flow: done without the
    /// dp lock so a flip never waits behind it.
    fn count_live(&self, now_jiffies: u64) -> OpResult<PerColour<u64>> {
        let idle = self.config.tcp.idle_timeout_s * self.hz;
        let [blue, green] = self
            .flows
            .lock()
            .expect("poisoned")
            .live_connections(now_jiffies, idle)?;
        let live = PerColour { blue, green };
        *self.tcp_live.lock().expect("poisoned") = Some((Instant::now(), live));
        Ok(live)
    }

    pub(super) fn totals(&self) -> OpResult<PerColour<Traffic>> {
        let dp = self.dp();
        let mut total = PerColour::<Traffic>::default();
        for &id in &self.ids {
            let [b, g] = dp.traffic(id)?;
            for (c, t) in [(Colour::Blue, b), (Colour::Green, g)] {
                let slot = total.get_mut(c);
                slot.packets += t.packets;
                slot.bytes += t.bytes;
            }
        }
        Ok(total)
    }

    /// Live TCP connections per colour, counted now (a walk of the flow
    /// table, without the dp lock).
    pub fn live_connections(&self) -> OpResult<PerColour<u64>> {
        let now = self.dp().now_jiffies()?;
        self.count_live(now)
    }
}
