//! This host's processes and limits: commands run in their own process
//! group, and the open-file limit.
pub mod command;
pub mod resources;
