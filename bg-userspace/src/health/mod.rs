//! Backend health: the board that records every backend's state, and the
//! runner whose probe tasks feed it. What a probe does is `probe/`'s.
pub mod board;
pub mod runner;

pub use board::HealthBoard;
pub use runner::{PathCheck, spawn_probes};
