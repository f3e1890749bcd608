//! This host's processes and limits: commands run in their own process
//! group, the open-file limit, the service manager's notifications and
//! the agent's re-execution.
pub mod command;
pub mod reexec;
pub mod resources;
pub mod systemd;
