//! bluegreen: blue/green steering of syslog traffic in XDP, and `bgctl`, its
//! agent and CLI.
//!
//! Layers, lowest first; a module imports only from layers below it
//! (`tests/layers.rs` checks it):
//! - `model`: plain data, no I/O;
//! - `host`, `transport`: this host's processes and limits; TLS, RELP, UDP;
//! - `probe`: one file per probe kind (its settings and its run);
//! - `config`: the TOML file, validated;
//! - `store`, `metrics`: the state directory's files; Prometheus counters;
//! - `dataplane`: the only module that uses aya;
//! - `health`: the board of backend states and the probe tasks;
//! - `core`: the agent's state and every decision (flip, status);
//! - `deploy`: deployments (controller, gate, bake, hooks), acting on one
//!   node or, through its `FleetScope`, on a fleet;
//! - `fleet`: fleet mode (etcd's desired state followed, fleet flips, the
//!   fleet's deployment record and its controller lease);
//! - `api`: the control socket, HTTP, the dashboard;
//! - `cli`: `bgctl`'s arguments and client;
//! - `agent`: wires them together at start.
pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod core;
pub mod dataplane;
pub mod deploy;
pub mod fleet;
pub mod health;
pub mod host;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod store;
pub mod transport;
