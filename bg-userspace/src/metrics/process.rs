//! The standard `process_*` metrics of Prometheus's client libraries, read
//! from `/proc/self` at scrape time, so that a leak in the agent (memory,
//! descriptors, threads) shows as growth.
use std::fmt;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::emit::{counter, gauge};
use crate::host::process;

#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let p = process::read_self();
        if let Some(cpu) = p.cpu_seconds {
            counter(
                &mut enc,
                "process_cpu_seconds",
                "User and system CPU time the agent spent, in seconds",
                cpu,
            )?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "The agent's resident memory, in bytes",
                p.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "The agent's virtual memory, in bytes",
                p.virtual_bytes,
            ),
            (
                "process_open_fds",
                "File descriptors the agent holds open",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "The agent's limit on open file descriptors (its soft RLIMIT_NOFILE)",
                p.max_fds,
            ),
            ("process_threads", "The agent's threads", p.threads),
        ] {
            if let Some(v) = value {
                gauge(&mut enc, name, help, v as i64)?;
            }
        }
        if let Some(t) = p.start_time_seconds {
            gauge(
                &mut enc,
                "process_start_time_seconds",
                "When the agent started, in seconds since the Unix epoch",
                t,
            )?;
        }
        Ok(())
    }
}
