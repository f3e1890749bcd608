//! `kind = "tcp"`: connect; success when the handshake completes.
use serde::Serialize;

use super::{Kind, ProbeError, Settings, Target};
use crate::model::FieldProblem;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tcp;

impl Kind for Tcp {
    const NAME: &'static str = "tcp";

    fn parse(_: &Settings<'_>) -> Result<Self, FieldProblem> {
        Ok(Self)
    }

    async fn run(&self, t: &Target<'_>) -> Result<(), ProbeError> {
        tokio::net::TcpStream::connect(t.addr)
            .await
            .map(drop)
            .map_err(ProbeError::from)
    }
}
