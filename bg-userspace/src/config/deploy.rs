//! `[deploy]`: how a deployment waits, validates, bakes and which hooks it
//! runs.
use serde::Serialize;

use super::raw::RawDeploy;
use crate::model::FieldProblem;

/// `[deploy]` settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeploySettings {
    pub healthy_timeout_s: u64,
    pub bake_s: u64,
    pub keep_warm_s: u64,
    /// Synthetic messages sent to each backend of the new colour.
    pub validate_messages: u32,
    /// Their rate, messages per second.
    pub validate_rate: u32,
    pub min_delivered_ratio: f64,
    pub max_p99_ms: f64,
    /// Delivered messages per second; 0 disables the check.
    pub min_throughput: f64,
    pub pre_switch: Option<Vec<String>>,
    pub post_switch: Option<Vec<String>>,
    pub rollback: Option<Vec<String>>,
    /// The shadow phase's length: live UDP copied to the new colour while
    /// the old one serves it all. 0: no shadow phase.
    pub shadow_s: u64,
    /// The share of senders copied, in basis points (`shadow_percent`).
    pub shadow_bp: u32,
    /// Run at the shadow's start and end; prints the new colour's count of
    /// accepted messages (impstats, Vector's metrics). Its growth against
    /// the copies sent is held to `min_delivered_ratio`.
    pub shadow_count: Option<Vec<String>>,
    /// XDP steering: most sampled datagrams per second copied, by either
    /// copier (0: no bound). Past it, datagrams go on by XDP without a
    /// copy: beyond what a copier carries it would drop originals (the
    /// bench's unbounded rows).
    pub shadow_max_pps: u32,
    /// XDP: copy by devmap broadcast where the topology allows. Off by
    /// default: a broadcast whose copy cannot be allocated drops the
    /// original too, where the kernel's path only loses the copy.
    pub shadow_broadcast: bool,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            healthy_timeout_s: 60,
            bake_s: 30,
            keep_warm_s: 60,
            validate_messages: 1000,
            validate_rate: 5000,
            min_delivered_ratio: 1.0,
            max_p99_ms: 200.0,
            min_throughput: 0.0,
            pre_switch: None,
            post_switch: None,
            rollback: None,
            shadow_s: 0,
            shadow_bp: 10_000,
            shadow_count: None,
            shadow_max_pps: 100_000,
            shadow_broadcast: false,
        }
    }
}

impl DeploySettings {
    /// `[deploy]`; field names in errors are relative to it.
    pub(super) fn validate(raw: &RawDeploy) -> Result<Self, FieldProblem> {
        let p =
            |f: &str, v: String, reason: &str, acc: String| FieldProblem::new(f, v, reason, acc);
        let int = |f: &str, v: Option<i64>, default: u64, lo: i64, hi: i64, unit: &str| match v {
            None => Ok(default),
            Some(v) => FieldProblem::ranged(f, v, lo..=hi, unit).map(|v| v as u64),
        };
        let d = DeploySettings::default();
        let ratio = raw.min_delivered_ratio.unwrap_or(d.min_delivered_ratio);
        if !(0.0..=1.0).contains(&ratio) {
            return Err(p(
                "min_delivered_ratio",
                ratio.to_string(),
                "out of range",
                "a fraction from 0.0 to 1.0".into(),
            ));
        }
        let p99 = raw.max_p99_ms.unwrap_or(d.max_p99_ms);
        if p99.is_nan() || p99 <= 0.0 {
            return Err(p(
                "max_p99_ms",
                p99.to_string(),
                "not positive",
                "milliseconds above 0".into(),
            ));
        }
        let tput = raw.min_throughput.unwrap_or(d.min_throughput);
        if tput.is_nan() || tput < 0.0 {
            return Err(p(
                "min_throughput",
                tput.to_string(),
                "negative",
                "messages per second, 0 to disable".into(),
            ));
        }
        let percent = raw.shadow_percent.unwrap_or(100.0);
        if !(0.01..=100.0).contains(&percent) {
            return Err(p(
                "shadow_percent",
                percent.to_string(),
                "out of range",
                "a percentage of senders from 0.01 to 100".into(),
            ));
        }
        let hook = |f: &str, v: &Option<Vec<String>>| match v {
            Some(c) if c.first().is_none_or(|x| x.is_empty()) => Err(p(
                f,
                format!("{c:?}"),
                "no program to run",
                "a list: the program, then its arguments".into(),
            )),
            other => Ok(other.clone()),
        };
        Ok(Self {
            healthy_timeout_s: int(
                "healthy_timeout_s",
                raw.healthy_timeout_s,
                d.healthy_timeout_s,
                1,
                3600,
                "seconds",
            )?,
            bake_s: int("bake_s", raw.bake_s, d.bake_s, 0, 86_400, "seconds")?,
            keep_warm_s: int(
                "keep_warm_s",
                raw.keep_warm_s,
                d.keep_warm_s,
                0,
                86_400,
                "seconds",
            )?,
            validate_messages: int(
                "validate_messages",
                raw.validate_messages,
                d.validate_messages.into(),
                0,
                1_000_000,
                "messages",
            )? as u32,
            validate_rate: int(
                "validate_rate",
                raw.validate_rate,
                d.validate_rate.into(),
                1,
                1_000_000,
                "messages per second",
            )? as u32,
            min_delivered_ratio: ratio,
            max_p99_ms: p99,
            min_throughput: tput,
            pre_switch: hook("pre_switch", &raw.pre_switch)?,
            post_switch: hook("post_switch", &raw.post_switch)?,
            rollback: hook("rollback", &raw.rollback)?,
            shadow_s: int("shadow_s", raw.shadow_s, d.shadow_s, 0, 86_400, "seconds")?,
            shadow_bp: (percent * 100.0).round() as u32,
            shadow_count: hook("shadow_count", &raw.shadow_count)?,
            shadow_max_pps: int(
                "shadow_max_pps",
                raw.shadow_max_pps,
                d.shadow_max_pps.into(),
                0,
                100_000_000,
                "datagrams per second (0: no bound)",
            )? as u32,
            shadow_broadcast: raw.shadow_broadcast.unwrap_or(d.shadow_broadcast),
        })
    }
}
