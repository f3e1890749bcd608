//! The core's error kinds: every operation's error is refused, not found
//! or failed, and the control surfaces answer by it (HTTP 409, 404, 500).
use serde::{Deserialize, Serialize};

use crate::dataplane::DataplaneError;

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

/// A control operation's error: its kind and what to tell the operator.
/// The core's and the deployment controller's operations return it; a
/// failure of the data path or the disk is `ErrorKind::Failed`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type OpResult<T> = Result<T, OpError>;

impl OpError {
    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<DataplaneError> for OpError {
    fn from(e: DataplaneError) -> Self {
        Self::failed(e.to_string())
    }
}

/// The state directory could not be written or read.
impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        Self::failed(format!("the state directory: {e}"))
    }
}
