//! Plain data shared by every layer: colours, protocols, flips and
//! rollbacks, backend health, deployments, history events and status
//! reports. No I/O, and nothing from the rest of the crate.
pub mod colour;
pub mod deployment;
pub mod event;
pub mod fleet;
pub mod flip;
pub mod health;
pub mod mode;
pub mod preview;
pub mod problem;
pub mod protocol;
pub mod reload;
pub mod report;
pub mod shadow;
pub mod split;

pub use colour::Colour;
pub use deployment::{Deployment, GateResult, Pause, Phase, Progressive, StepLook, UDP_EVIDENCE};
pub use event::{Actor, Entry, Event, Tail};
pub use fleet::{
    BackendOverride, DesiredState, FleetFlip, FleetStatus, NodeConvergence, NodeState, NodeView,
};
pub use flip::{FlipRecord, FlipRecordKind, RollbackReason};
pub use health::{BackendHealth, BackendState, ProbeRecord};
pub use mode::Mode;
pub use preview::Preview;
pub use problem::FieldProblem;
pub use protocol::{AppProtocol, Protocol, STEERED_PROTOCOLS};
pub use reload::ReloadReport;
pub use report::{
    AttachMode, ColourRate, DropCount, FlipReport, Impact, PerColour, ServiceReport, ShiftReport,
    StatusReport, TcpStatus, Traffic, TrafficSample,
};
pub use shadow::{ShadowCounts, ShadowLook, ShadowResult, ShadowStatus};
pub use split::{Steering, Weight};

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
