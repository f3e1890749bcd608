//! What the agent keeps on disk in its state directory: the state file
//! (last flip, deployed backends), the event history and the API token,
//! each written so that a crash mid-write loses nothing (`durable.rs`).
pub mod durable;
pub mod history;
pub mod state;
pub mod token;
