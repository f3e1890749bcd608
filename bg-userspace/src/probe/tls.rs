//! `kind = "tls"`: complete a TLS handshake, as the service's TLS
//! settings verify it, then close with close_notify. The default for
//! `app = "tls"`.
use serde::Serialize;

use super::{Kind, ProbeError, Settings, Target, blocking};
use crate::{
    model::FieldProblem,
    transport::tls::{self, TlsClient},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tls {
    pub tls: TlsClient,
}

impl Kind for Tls {
    const NAME: &'static str = "tls";

    fn parse(s: &Settings<'_>) -> Result<Self, FieldProblem> {
        let tls = s.speaks.tls.cloned().ok_or_else(|| not_spoken(s))?;
        Ok(Self { tls })
    }

    async fn run(&self, t: &Target<'_>) -> Result<(), ProbeError> {
        let (client, addr, timeout) = (self.tls.clone(), t.addr, t.timeout);
        blocking(move || tls::probe(&client, addr, timeout)).await
    }
}

/// A `relp` or `tls` probe asked of a service that does not speak it.
pub(super) fn not_spoken(s: &Settings<'_>) -> FieldProblem {
    FieldProblem::new(
        s.field("kind"),
        s.raw.kind.as_deref().unwrap_or_default(),
        "the service does not speak it",
        "relp for app = \"relp\"; tls for a service with [service.tls] (app = \"tls\", or RELP over TLS)",
    )
}
