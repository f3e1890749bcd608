//! The core's error kinds: every operation's error is refused, not found
//! or failed, and the control surfaces answer by it (HTTP 409, 404, 500).
use serde::{Deserialize, Serialize};

/// What kind of failure an error answer reports. The HTTP API answers
/// 409, 404 or 500 by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The agent declined: an unhealthy target, a deployment under way, a
    /// detached data path, a value it does not accept.
    #[default]
    Refused,
    /// What the request names does not exist: a service, a deployment.
    NotFound,
    /// The agent tried and could not: a map write, a read of the data path.
    Failed,
}

/// A control operation's error with its kind. Operations return it inside
/// anyhow; anything else that fails them is `ErrorKind::Failed`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl OpError {
    pub fn refused(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            kind: ErrorKind::Refused,
            message: message.into(),
        })
    }

    pub fn not_found(message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            kind: ErrorKind::NotFound,
            message: message.into(),
        })
    }

    /// The kind of any operation's error.
    pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
        e.downcast_ref::<OpError>()
            .map_or(ErrorKind::Failed, |o| o.kind)
    }
}
