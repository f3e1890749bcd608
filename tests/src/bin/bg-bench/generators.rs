//! The two generators beside live frames, on the same topology and sinks:
//! the paced AF_PACKET sender (one frame per slot, for rates a slow path
//! must see without bursts) and trafgen (someone else's frames, as a
//! cross-check of ours).
use anyhow::{Context as _, Result};
use bg_tests::{lab::service_addr, paced::Paced, trafgen};

use crate::{
    throughput::{Bench, Outcome},
    topology::{Gen, Traffic, client_addr, mac, syslog_flows, syslog_payload},
};

/// Asked of the paced sender for its maximum: far past what it can do, so
/// every frame after the first is late and the run shows its ceiling.
const PACED_FLAT_OUT: u32 = 50_000_000;

impl Bench {
    fn paced(&self, traffic: Traffic) -> Result<Paced> {
        let flows = syslog_flows(
            traffic,
            mac(&self.lab.lb, &self.lab.lb_if)?,
            mac(&self.lab.client, "c0")?,
        );
        Paced::open(&self.lab.client, "c0", flows)
    }

    /// `total` frames from the paced sender at `rate`, or as fast as it
    /// goes. The burst reported is the longest run it sent back to back.
    pub fn measure_paced(
        &self,
        traffic: Traffic,
        total: u32,
        rate: Option<u32>,
    ) -> Result<Outcome> {
        let paced = self.paced(traffic)?;
        self.counted(Gen::Paced, traffic, rate, || {
            let run = paced.send(total, rate.unwrap_or(PACED_FLAT_OUT))?;
            Ok((run.sent, run.seconds, u64::from(run.max_burst)))
        })
    }

    /// `total` frames from trafgen at its maximum on one CPU. trafgen's
    /// TX ring hands the kernel frames in batches, so its burst is unknown
    /// and reported as the whole run.
    pub fn measure_trafgen(&self, traffic: Traffic, total: u32) -> Result<Outcome> {
        trafgen::prepare(&self.lab.client, "c0")?;
        let target = service_addr(traffic.family);
        let flow = trafgen::Flow {
            dst_mac: mac(&self.lab.lb, &self.lab.lb_if)?,
            src_mac: mac(&self.lab.client, "c0")?,
            src: client_addr(traffic.family).parse().context("source")?,
            dst: target.ip(),
            source_ports: (10000, 10063),
            dst_port: target.port(),
            payload: syslog_payload(traffic),
        };
        let path = self
            .lab
            .path(&format!("trafgen-{}.cfg", traffic.label().replace(' ', "")));
        std::fs::write(&path, trafgen::config(&flow)?)?;
        // trafgen aborts when its socket buffer fills (EAGAIN while it
        // flushes its ring: a namespace may not raise wmem_max for it).
        // That run's frames are lost to the count, so the run is made
        // again, counted afresh, a few times at most.
        let mut attempt = 1;
        loop {
            let outcome = self.counted(Gen::Trafgen, traffic, None, || {
                let run = trafgen::run(&self.lab.client, "c0", &path, total, None)?;
                Ok((run.sent, run.seconds, run.sent))
            });
            match outcome {
                Err(e)
                    if attempt < 3
                        && e.to_string().contains("Resource temporarily unavailable") =>
                {
                    println!("  trafgen aborted with EAGAIN (attempt {attempt}); running it again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
