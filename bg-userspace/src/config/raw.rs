//! The configuration file as written: strings and whole numbers, checked
//! later so that errors can quote them.
use std::path::PathBuf;

use serde::Deserialize;

use crate::probe::RawHealth;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default, rename = "service")]
    pub(super) services: Vec<RawService>,
    #[serde(default)]
    pub(super) tcp: RawTcp,
    #[serde(default)]
    pub(super) health: RawHealth,
    #[serde(default)]
    pub(super) deploy: RawDeploy,
    #[serde(default)]
    pub(super) dataplane: RawDataplane,
    pub(super) fleet: Option<RawFleet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    pub(super) cluster: Option<String>,
    pub(super) node: Option<String>,
    #[serde(default)]
    pub(super) endpoints: Vec<String>,
    pub(super) ca: Option<PathBuf>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) user: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) converge_timeout_ms: Option<i64>,
    pub(super) lease_ttl_s: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDataplane {
    pub(super) attach: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeploy {
    pub(super) healthy_timeout_s: Option<i64>,
    pub(super) bake_s: Option<i64>,
    pub(super) keep_warm_s: Option<i64>,
    pub(super) validate_messages: Option<i64>,
    pub(super) validate_rate: Option<i64>,
    pub(super) min_delivered_ratio: Option<f64>,
    pub(super) max_p99_ms: Option<f64>,
    pub(super) min_throughput: Option<f64>,
    pub(super) pre_switch: Option<Vec<String>>,
    pub(super) post_switch: Option<Vec<String>>,
    pub(super) rollback: Option<Vec<String>>,
    pub(super) shadow_s: Option<i64>,
    pub(super) shadow_percent: Option<f64>,
    pub(super) shadow_count: Option<Vec<String>>,
    pub(super) shadow_max_pps: Option<i64>,
    pub(super) shadow_broadcast: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    pub(super) flow_table_size: Option<i64>,
    pub(super) pending_table_size: Option<i64>,
    pub(super) idle_timeout: Option<i64>,
    #[serde(default)]
    pub(super) reverse_nat_interfaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) protocol: String,
    pub(super) listen: String,
    pub(super) blue: String,
    pub(super) green: String,
    pub(super) health: Option<RawHealth>,
    pub(super) app: Option<String>,
    pub(super) tls: Option<RawTls>,
    pub(super) shadow_blue: Option<String>,
    pub(super) shadow_green: Option<String>,
    pub(super) mode: Option<String>,
    pub(super) mode_blue: Option<String>,
    pub(super) mode_green: Option<String>,
    pub(super) tunnel_source: Option<String>,
    pub(super) probe_service_address: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) ca: Option<PathBuf>,
    pub(super) verify: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
}
