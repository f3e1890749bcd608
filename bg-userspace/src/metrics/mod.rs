//! Prometheus metrics (prometheus-client, OpenMetrics text).
//!
//! One registry for the agent's life. The agent's own counters (flips,
//! rollbacks, probe durations) and its build are registered once; what
//! the data path counts and the process's footprint are collectors that
//! write from values read at scrape time (a status snapshot summed over
//! CPUs, `/proc/self`): a scrape costs a few map lookups per service and
//! builds no registry and never touches packets.
mod emit;
mod process;
mod status;

use std::sync::Mutex;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Registry, Unit},
};

pub use status::Scrape;
use status::{Slot, StatusCollector};

use crate::model::{Colour, RollbackReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub service: String,
    pub colour: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// What `bluegreen_build_info` says.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfo {
    /// bgctl's version.
    pub version: String,
    /// The first 12 hex digits of the SHA-256 of the eBPF object built
    /// in: which data path this agent loads.
    pub data_path: String,
}

type ProbeHistograms = Family<BackendLabels, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 100 µs to about 3.3 s: loopback probes to timeouts.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The agent's metrics: its own counters and the registry they live in.
pub struct Metrics {
    pub flips: Counter,
    pub shifts: Counter,
    rollbacks: Family<ReasonLabel, Counter>,
    probe_duration: ProbeHistograms,
    registry: Registry,
    /// The scrape being written; one at a time, so two scrapes never mix
    /// their snapshots.
    slot: Slot,
    scraping: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            data_path: "unknown".to_owned(),
        })
    }
}

impl Metrics {
    pub fn new(build: BuildInfo) -> Self {
        let rollbacks = Family::<ReasonLabel, Counter>::default();
        // Every reason from the start, so a rate() over them is defined.
        for r in RollbackReason::ALL {
            drop(rollbacks.get_or_create(&ReasonLabel {
                reason: r.as_str().to_owned(),
            }));
        }
        let flips = Counter::default();
        let shifts = Counter::default();
        let probe_duration: ProbeHistograms = Family::new_with_constructor(probe_histogram);
        let slot = Slot::default();
        // The process_* names are the client libraries' standard ones,
        // without the product's prefix.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let ours = registry.sub_registry_with_prefix("bluegreen");
        ours.register(
            "build",
            "The agent's version and the data path it loads (1 per agent)",
            Info::new(build),
        );
        ours.register(
            "flips",
            "Operator flips since the agent started",
            flips.clone(),
        );
        ours.register(
            "shifts",
            "Changes of the split between the colours since the agent started (bgctl shift, deployment steps)",
            shifts.clone(),
        );
        ours.register(
            "rollbacks",
            "Rollbacks since the agent started, by reason",
            rollbacks.clone(),
        );
        ours.register_with_unit(
            "probe_duration",
            "Health probe duration, successful or not",
            Unit::Seconds,
            probe_duration.clone(),
        );
        ours.register_collector(Box::new(StatusCollector(slot.clone())));
        Self {
            flips,
            shifts,
            rollbacks,
            probe_duration,
            registry,
            slot,
            scraping: Mutex::new(()),
        }
    }

    pub(crate) fn rollback(&self, reason: RollbackReason) {
        self.rollbacks
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    pub fn observe_probe(&self, service: &str, colour: Colour, seconds: f64) {
        self.probe_duration
            .get_or_create(&BackendLabels {
                service: service.to_owned(),
                colour: colour.to_string(),
            })
            .observe(seconds);
    }

    /// The text exposition of everything, with this scrape's snapshot.
    pub fn render(&self, scrape: Scrape) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        let put = |s: Option<Scrape>| *self.slot.0.lock().unwrap_or_else(|p| p.into_inner()) = s;
        put(Some(scrape));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        put(None);
        out
    }
}
