//! `[tcp]`: the flow tables' sizes, the idle timeout and the interfaces
//! whose egress rewrites replies.
use serde::Serialize;

use super::raw::RawTcp;
use crate::model::FieldProblem;

/// Accepted range of `tcp.flow_table_size`.
pub const FLOW_TABLE_SIZES: std::ops::RangeInclusive<u32> = 1024..=16_777_216;
/// Accepted range of `tcp.idle_timeout` (seconds).
pub const IDLE_TIMEOUTS: std::ops::RangeInclusive<u64> = 1..=86_400;
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 120;

/// TCP flow tracking settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcpSettings {
    /// Entries of the established-connection table (and of its reverse-NAT
    /// table).
    pub flow_table_size: u32,
    /// Entries of the table of handshakes in progress and flows on
    /// probation (and of its reverse-NAT table).
    pub pending_table_size: u32,
    /// A flow with no client segment for this long is not counted as live.
    pub idle_timeout_s: u64,
    /// More interfaces whose egress rewrites replies (asymmetric routing);
    /// the steering interface always does.
    pub reverse_nat_interfaces: Vec<String>,
}

impl Default for TcpSettings {
    fn default() -> Self {
        Self {
            flow_table_size: bg_common::DEFAULT_FLOW_TABLE_SIZE,
            pending_table_size: bg_common::DEFAULT_PENDING_TABLE_SIZE,
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            reverse_nat_interfaces: Vec::new(),
        }
    }
}

impl TcpSettings {
    /// `[tcp]`; field names in errors are relative to it.
    pub(super) fn validate(raw: RawTcp) -> Result<Self, FieldProblem> {
        let flows = |field: &str, v: i64| {
            let range = i64::from(*FLOW_TABLE_SIZES.start())..=i64::from(*FLOW_TABLE_SIZES.end());
            FieldProblem::ranged(field, v, range, "a whole number of flows").map(|v| v as u32)
        };
        let mut tcp = Self::default();
        if let Some(size) = raw.flow_table_size {
            tcp.flow_table_size = flows("flow_table_size", size)?;
        }
        if let Some(size) = raw.pending_table_size {
            tcp.pending_table_size = flows("pending_table_size", size)?;
        }
        if let Some(idle) = raw.idle_timeout {
            let range = *IDLE_TIMEOUTS.start() as i64..=*IDLE_TIMEOUTS.end() as i64;
            tcp.idle_timeout_s =
                FieldProblem::ranged("idle_timeout", idle, range, "whole seconds")? as u64;
        }
        for (i, name) in raw.reverse_nat_interfaces.iter().enumerate() {
            // IFNAMSIZ is 16 with the NUL; the agent checks existence at start.
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                return Err(FieldProblem::new(
                    format!("reverse_nat_interfaces[{i}]"),
                    name,
                    "not an interface name",
                    "1 to 15 characters without '/' or spaces",
                ));
            }
        }
        tcp.reverse_nat_interfaces = raw.reverse_nat_interfaces;
        Ok(tcp)
    }
}
