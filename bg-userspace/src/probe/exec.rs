//! `kind = "exec"`: run a command; success on exit code 0. It gets the
//! backend in its environment: BG_SERVICE, BG_COLOUR, BG_BACKEND_ADDR,
//! BG_BACKEND_PORT. It runs in its own process group, killed whole when
//! the probe times out.
use serde::Serialize;

use super::{Kind, ProbeError, Settings, Target};
use crate::{
    host::{command, resources},
    model::FieldProblem,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exec {
    pub command: Vec<String>,
}

impl Kind for Exec {
    const NAME: &'static str = "exec";
    const FIELDS: &'static [&'static str] = &["command"];
    // A command's success says nothing about packets from this host.
    const SENDS_TO_BACKEND: bool = false;

    fn parse(s: &Settings<'_>) -> Result<Self, FieldProblem> {
        let command = s.raw.command.clone().unwrap_or_default();
        if command.first().is_none_or(|c| c.is_empty()) {
            return Err(FieldProblem::new(
                s.field("command"),
                format!("{command:?}"),
                "no program to run",
                "a list: the program, then its arguments",
            ));
        }
        Ok(Self { command })
    }

    async fn run(&self, t: &Target<'_>) -> Result<(), ProbeError> {
        let env = [
            ("BG_SERVICE", t.service.to_owned()),
            ("BG_COLOUR", t.colour.to_string()),
            ("BG_BACKEND_ADDR", t.addr.ip().to_string()),
            ("BG_BACKEND_PORT", t.addr.port().to_string()),
        ];
        command::run(&self.command, &env, t.timeout, command::Output::Discard)
            .await
            .map_err(|e| match e.io() {
                // Fork or exec failing for want of resources is this host's doing.
                Some(io) if resources::is_local_exhaustion(io) => ProbeError::Local(e.to_string()),
                _ => ProbeError::Backend(e.to_string()),
            })
    }
}
