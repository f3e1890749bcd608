//! `kind = "relp"`: open a RELP session (over TLS when the service has it)
//! and close it: success when the server accepts both. imrelp logs
//! nothing for it. The default for `app = "relp"`.
use serde::Serialize;

use super::{Kind, ProbeError, Settings, Target, blocking};
use crate::{
    model::{AppProtocol, FieldProblem},
    transport::{relp, tls::TlsClient},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Relp {
    pub tls: Option<TlsClient>,
}

impl Kind for Relp {
    const NAME: &'static str = "relp";

    fn parse(s: &Settings<'_>) -> Result<Self, FieldProblem> {
        if s.speaks.app != AppProtocol::Relp {
            return Err(super::tls::not_spoken(s));
        }
        Ok(Self {
            tls: s.speaks.tls.cloned(),
        })
    }

    async fn run(&self, t: &Target<'_>) -> Result<(), ProbeError> {
        let (tls, addr, timeout) = (self.tls.clone(), t.addr, t.timeout);
        blocking(move || relp::probe(addr, tls.as_ref(), timeout)).await
    }
}
