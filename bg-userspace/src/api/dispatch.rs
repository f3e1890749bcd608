//! One control request to one answer, for the socket and HTTP alike.
use super::{
    Api,
    protocol::{Request, Response},
};
use crate::{
    core::{ErrorKind, FlipKind, OpError, ShiftBy},
    deploy::steps,
    model::Actor,
    store::history::acting_as,
};

impl Api {
    /// Answers one request from `by`, to whom every history entry it
    /// causes is attributed.
    pub fn handle(&self, by: Option<Actor>, req: Request) -> Response {
        acting_as(by, || self.answer(req))
    }

    fn answer(&self, req: Request) -> Response {
        let result = match req {
            Request::Status => self
                .core
                .status(true)
                .map(|s| Response::Status(Box::new(s))),
            Request::Token => Ok(Response::Token {
                token: self.token.clone(),
            }),
            Request::Flip { colour, force } => match &self.fleet {
                Some(fleet) => block_on(fleet.flip(colour, force)),
                None => self.core.flip(colour, FlipKind::Flip { force }),
            }
            .map(Response::Flip),
            Request::Rollback => match &self.fleet {
                Some(fleet) => block_on(fleet.rollback()),
                None => self.core.rollback(),
            }
            .map(Response::Flip),
            Request::Shift {
                colour,
                weight,
                force,
            } => self
                .no_deployment_in_progress()
                .and_then(|()| match &self.fleet {
                    Some(fleet) => block_on(fleet.shift(colour, weight, force)),
                    None => self.core.shift(colour, weight, ShiftBy::Operator { force }),
                })
                .map(Response::Shift),
            Request::FleetStatus => match &self.fleet {
                Some(fleet) => Ok(Response::Fleet(Box::new(fleet.status()))),
                None => Err(OpError::not_found(
                    "this agent runs alone: its config has no [fleet] section",
                )),
            },
            Request::History { limit } => Ok(Response::History(self.core.history().tail(limit))),
            Request::Deploy {
                colour,
                version,
                backends,
                force,
                steps,
                pause,
            } => steps::plan(steps, pause, self.core.config().deploy.bake_s)
                .map_err(OpError::refused)
                .and_then(|plan| self.deploy.start(colour, version, backends, force, plan))
                .map(|d| Response::Deployment(Some(d))),
            Request::Promote => self.deploy.promote().map(|d| Response::Deployment(Some(d))),
            Request::DeployStatus => Ok(Response::Deployment(self.deploy.snapshot())),
            Request::Abort => self.deploy.abort().map(|d| Response::Deployment(Some(d))),
            Request::DryRun { of } => self.dry_run(*of),
            Request::Reload => self
                .reloader
                .reload(&self.core, &self.deploy, "bgctl reload")
                .map(Response::Reload),
            Request::Shutdown { iface } => Ok(Response::Shutdown {
                stopping: self.core.request_stop(&iface),
            }),
        };
        result.unwrap_or_else(|e| error(e.kind, e.message))
    }
}

impl Api {
    /// The checks of a flip, shift or deploy, without its writes. In fleet
    /// mode this node's view: the real command also asks the other nodes.
    fn dry_run(&self, of: Request) -> Result<Response, OpError> {
        match of {
            Request::Flip { colour, force } => self.core.preview_flip(colour, force),
            Request::Shift {
                colour,
                weight,
                force,
            } => self
                .no_deployment_in_progress()
                .and_then(|()| self.core.preview_shift(colour, weight, force)),
            Request::Deploy {
                colour,
                version,
                backends,
                force,
                steps,
                pause,
            } => steps::plan(steps, pause, self.core.config().deploy.bake_s)
                .map_err(OpError::refused)
                .and_then(|plan| {
                    self.deploy
                        .preview(colour, version.as_deref(), &backends, force, plan.as_ref())
                }),
            _ => Err(OpError::refused(
                "--dry-run covers flip, shift and deploy".to_owned(),
            )),
        }
        .map(Response::Preview)
        // Every refusal says it came from a dry run, so nobody reads it as
        // a real command's failure.
        .map_err(|e| OpError {
            message: format!("dry run: {}", e.message),
            ..e
        })
    }
}

impl Api {
    /// A shift is refused while a deployment runs: it sets the split itself.
    fn no_deployment_in_progress(&self) -> Result<(), OpError> {
        match self.deploy.snapshot().filter(|d| !d.phase.is_terminal()) {
            None => Ok(()),
            Some(d) => Err(OpError::refused(format!(
                "deployment {} to {} is in phase {}: it sets the split itself; `bgctl promote` moves it on, `bgctl abort` takes every sender back",
                d.id,
                d.colour,
                d.phase.as_str()
            ))),
        }
    }
}

pub(super) fn error(kind: ErrorKind, message: String) -> Response {
    Response::Error { message, kind }
}

/// Runs a fleet operation to its end from a control request, which runs
/// on a blocking-permitted worker (`block_in_place`).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Handle::current().block_on(f)
}
