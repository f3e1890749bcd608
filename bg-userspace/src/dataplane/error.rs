//! The data path's one error type.
use std::{io, path::PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(
        "--iface = {0:?}: no such network interface in this network namespace; accepted: one of {1}"
    )]
    UnknownInterface(String, String),
    #[error(
        "tcp.reverse_nat_interfaces: {0:?} is no network interface in this network namespace; accepted: one of {1}"
    )]
    UnknownReverseNatInterface(String, String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "loading the eBPF object failed: {0}; if the pinned maps under {1} come from an incompatible bgctl version, run `bgctl teardown --iface <IF>` first"
    )]
    Load(Box<aya::EbpfError>, PathBuf),
    #[error("loading the bench eBPF object failed: {0}")]
    LoadBench(Box<aya::EbpfError>),
    #[error("program {0}: {1}")]
    Program(&'static str, aya::programs::ProgramError),
    #[error("attaching XDP to {iface} failed: {source}{hint}")]
    Attach {
        iface: String,
        source: aya::programs::ProgramError,
        hint: &'static str,
    },
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("map {0}: {1}")]
    XdpMap(&'static str, aya::maps::xdp::XdpMapError),
    #[error("pinning {0}: {1}")]
    Pin(PathBuf, aya::pin::PinError),
    #[error("pinned link {0}: {1}")]
    Link(PathBuf, String),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("no free service slot; at most {} services", bg_common::MAX_SERVICES)]
    NoFreeSlot,
    #[error(transparent)]
    Bpffs(#[from] super::bpffs::BpffsError),
}

pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;
