//! This host's processes and limits: commands run in their own process
//! group, the open-file limit, the service manager's notifications and
//! the agent's re-execution, and its own footprint (CPU, memory, fds).
pub mod command;
pub mod logging;
pub mod process;
pub mod reexec;
pub mod resources;
pub mod systemd;
