//! `kind = "http"`: GET `http://<backend address>:<port><path>`; success on
//! 2xx (and the body containing `expect_body`, when set). The health
//! endpoints of collectors (Vector, Fluent Bit) answer plain HTTP on a
//! local port, so a minimal HTTP/1.0 client does.
use std::net::SocketAddr;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Kind, ProbeError, Settings, Target};
use crate::model::FieldProblem;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Http {
    pub port: u16,
    pub path: String,
    pub expect_body: Option<String>,
}

/// Health answers are small; a probe reads at most this much.
const MAX_ANSWER: u64 = 64 * 1024;

impl Kind for Http {
    const NAME: &'static str = "http";
    const FIELDS: &'static [&'static str] = &["port", "path", "expect_body"];

    fn parse(s: &Settings<'_>) -> Result<Self, FieldProblem> {
        let port = s.raw.port.ok_or_else(|| {
            FieldProblem::new(
                s.field("port"),
                "",
                "missing for an http probe",
                "the port of the backend's health endpoint",
            )
        })?;
        let port = FieldProblem::ranged(&s.field("port"), port, 1..=65535, "a port")? as u16;
        let path = s.raw.path.clone().unwrap_or_else(|| "/".into());
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(FieldProblem::new(
                s.field("path"),
                &path,
                "not a URL path",
                "a path starting with '/', without spaces",
            ));
        }
        Ok(Self {
            port,
            path,
            expect_body: s.raw.expect_body.clone(),
        })
    }

    async fn run(&self, t: &Target<'_>) -> Result<(), ProbeError> {
        let addr = SocketAddr::new(t.addr.ip(), self.port);
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ProbeError::io(e, |e| format!("{addr}: {e}")))?;
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let request = format!(
            "GET {} HTTP/1.0\r\nHost: {host}:{}\r\nUser-Agent: bluegreen\r\nConnection: close\r\n\r\n",
            self.path,
            addr.port()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response);
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "no HTTP status line in the answer".to_string())?;
        if !(200..300).contains(&status) {
            return Err(format!("HTTP {status}").into());
        }
        if let Some(needle) = &self.expect_body {
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            if !body.contains(needle.as_str()) {
                return Err(format!("HTTP {status} but the body lacks {needle:?}").into());
            }
        }
        Ok(())
    }
}
