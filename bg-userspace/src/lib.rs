//! bluegreen: blue/green steering of syslog traffic in XDP, and `bgctl`, its
//! agent and CLI.
pub mod agent;
pub mod attach;
pub mod backend_path;
pub mod bpffs;
pub mod cli;
pub mod client;
pub mod colour;
pub mod config;
pub mod control;
mod controller;
pub mod dataplane;
pub mod deploy;
pub mod durable;
mod ebpf_log;
pub mod health;
pub mod health_check;
pub mod history;
mod http;
mod http_guard;
pub mod kernel_btf;
pub mod metrics;
pub mod pin_lock;
pub mod relp;
pub mod resources;
pub mod state;
pub mod tls;
pub mod token;
