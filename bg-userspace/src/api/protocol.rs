//! The control socket protocol: one JSON request per line, one JSON response
//! per line. The CLI and any script speak it; the socket is mode 0600.
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{
    core::ErrorKind,
    model::{
        Colour, Deployment, FleetStatus, FlipReport, Pause, Preview, ReloadReport, ShiftReport,
        StatusReport, Tail, Weight,
    },
};

/// Default control socket path; `--socket` or `BGCTL_SOCKET` overrides it.
pub const DEFAULT_SOCKET: &str = "/run/bluegreen/agent.sock";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Flip {
        colour: Colour,
        /// Flip even when the colour is not healthy (logged and recorded).
        #[serde(default)]
        force: bool,
    },
    Rollback,
    /// Give `colour` the share `weight` of new senders (`bgctl shift`).
    Shift {
        colour: Colour,
        weight: Weight,
        #[serde(default)]
        force: bool,
    },
    /// The last `limit` history entries, oldest first.
    History {
        limit: usize,
    },
    /// Start a deployment onto the idle colour.
    Deploy {
        colour: Colour,
        #[serde(default)]
        version: Option<String>,
        /// Backends to put in place first: (service name, address).
        #[serde(default)]
        backends: Vec<(String, SocketAddr)>,
        /// Deploy even though a UDP service's only health evidence is
        /// silence (a `udp` probe).
        #[serde(default)]
        force: bool,
        /// A progressive deployment: green's weight at each step before
        /// the switch (basis points); empty: all senders at once.
        #[serde(default)]
        steps: Vec<Weight>,
        /// How long each step is watched (default: `[deploy] bake_s`).
        #[serde(default)]
        pause: Option<Pause>,
    },
    /// `--dry-run`: what a flip, shift or deploy would do, with the health
    /// gate's verdict; nothing is written. Its own op, so that an agent
    /// too old to know it refuses it instead of acting.
    DryRun {
        of: Box<Request>,
    },
    /// End the pause of a progressive deployment's step.
    Promote,
    /// The current (or last) deployment.
    DeployStatus,
    /// Stop the running deployment (after the switch: roll back).
    Abort,
    /// Stop the agent if it serves `iface` (used by teardown). The data path
    /// is not touched by the agent's exit.
    Shutdown {
        iface: String,
    },
    /// The HTTP API's bearer token.
    Token,
    /// Fleet mode: every node's state as this agent sees it.
    FleetStatus,
    /// Re-read the config file; if it passes, the agent re-executes
    /// itself with it, as a restart would (the data path never stops).
    Reload,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Status(Box<StatusReport>),
    Flip(FlipReport),
    Shift(ShiftReport),
    History(Tail),
    Deployment(Option<Deployment>),
    Shutdown {
        stopping: bool,
    },
    Token {
        token: String,
    },
    Fleet(Box<FleetStatus>),
    Reload(ReloadReport),
    /// `--dry-run`: nothing was written.
    Preview(Preview),
    Error {
        message: String,
        /// Older agents send none: a refusal, as they meant.
        #[serde(default)]
        kind: ErrorKind,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    // The wire format is a contract with scripts: check it literally.
    #[test]
    fn requests_have_a_stable_wire_format() {
        let flip = serde_json::to_string(&Request::Flip {
            colour: Colour::Green,
            force: false,
        })
        .unwrap();
        assert_eq!(flip, r#"{"op":"flip","colour":"green","force":false}"#);
        let parsed: Request = serde_json::from_str(r#"{"op":"flip","colour":"blue"}"#).unwrap();
        assert!(
            matches!(
                parsed,
                Request::Flip {
                    colour: Colour::Blue,
                    force: false
                }
            ),
            "force defaults to false"
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        let parsed: Request = serde_json::from_str(r#"{"op":"rollback"}"#).unwrap();
        assert!(matches!(parsed, Request::Rollback));
        assert!(serde_json::from_str::<Request>(r#"{"op":"flip","colour":"red"}"#).is_err());
    }

    #[test]
    fn a_dry_run_wraps_the_request_it_previews() {
        let dry = Request::DryRun {
            of: Box::new(Request::Flip {
                colour: Colour::Green,
                force: true,
            }),
        };
        assert_eq!(
            serde_json::to_string(&dry).unwrap(),
            r#"{"op":"dry-run","of":{"op":"flip","colour":"green","force":true}}"#
        );
        let parsed: Request =
            serde_json::from_str(r#"{"op":"dry-run","of":{"op":"flip","colour":"blue"}}"#).unwrap();
        assert!(matches!(
            parsed,
            Request::DryRun { of } if matches!(*of, Request::Flip { colour: Colour::Blue, force: false })
        ));
        // Without the request it previews, it is not a request at all.
        assert!(serde_json::from_str::<Request>(r#"{"op":"dry-run"}"#).is_err());
    }

    #[test]
    fn flip_response_round_trips() {
        let r = Response::Flip(FlipReport {
            unrecorded: None,
            from: Colour::Blue,
            to: Colour::Green,
            changed: true,
            write_ns: 1500,
            fleet: None,
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"flip":{"from":"blue","to":"green","changed":true,"write_ns":1500}}"#
        );
    }
}
