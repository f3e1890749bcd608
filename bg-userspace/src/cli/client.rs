//! The CLI side of the control socket: one request, one answer, and what
//! goes wrong on the way.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use thiserror::Error;

use crate::api::protocol::{Request, Response};

#[derive(Debug, Error)]
pub enum ClientError {
    // The I/O errors are part of the message, not a `source`: printed with
    // its chain (`{:#}`), the error would say them twice.
    #[error(
        "no agent answers on {path}: {cause}. Is `bgctl agent` running? Use --socket or BGCTL_SOCKET for another agent"
    )]
    Unreachable { path: String, cause: std::io::Error },
    #[error("talking to the agent on {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("the agent sent an unreadable answer: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and waits for its response.
pub fn request(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let path = socket.display().to_string();
    let mut stream = UnixStream::connect(socket).map_err(|cause| ClientError::Unreachable {
        path: path.clone(),
        cause,
    })?;
    let io = |cause| ClientError::Io {
        path: path.clone(),
        cause,
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if let Response::Error { message, .. } = response {
        return Err(ClientError::Refused(message));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_agent_is_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = request(&dir.path().join("none.sock"), &Request::Status).unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("Is `bgctl agent` running?"));
        // As main prints it, with the error's chain: the cause once.
        let printed = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            printed.matches("No such file or directory").count(),
            1,
            "{printed}"
        );
    }
}
