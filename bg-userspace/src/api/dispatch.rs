//! One control request to one answer, for the socket and HTTP alike.
use super::{
    Api,
    protocol::{Request, Response},
};
use crate::core::{ErrorKind, FlipKind};

impl Api {
    pub fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Status => self
                .core
                .status(true)
                .map(|s| Response::Status(Box::new(s))),
            Request::Token => Ok(Response::Token {
                token: self.token.clone(),
            }),
            Request::Flip { colour, force } => self
                .core
                .flip(colour, FlipKind::Flip { force })
                .map(Response::Flip),
            Request::Rollback => self.core.rollback().map(Response::Flip),
            Request::History { limit } => Ok(Response::History(self.core.history().tail(limit))),
            Request::Deploy {
                colour,
                version,
                backends,
                force,
            } => self
                .deploy
                .start(colour, version, backends, force)
                .map(|d| Response::Deployment(Some(d))),
            Request::DeployStatus => Ok(Response::Deployment(self.deploy.snapshot())),
            Request::Abort => self.deploy.abort().map(|d| Response::Deployment(Some(d))),
            Request::Shutdown { iface } => Ok(Response::Shutdown {
                stopping: self.core.request_stop(&iface),
            }),
        };
        result.unwrap_or_else(|e| error(e.kind, e.message))
    }
}

pub(super) fn error(kind: ErrorKind, message: String) -> Response {
    Response::Error { message, kind }
}
