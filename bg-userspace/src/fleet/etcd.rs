//! Talking to etcd: the connection (TLS, authentication, timeouts that make
//! a lost leader an error in seconds, not a hang) and the fleet's keys.
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions};

use crate::config::FleetSettings;

/// How long one request to etcd may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) fn desired_key(s: &FleetSettings) -> String {
    format!("{}desired", s.prefix())
}

/// The fleet's deployment, the node whose agent runs it (on that agent's
/// lease), and a request to abort it (its id).
pub(super) fn deployment_key(s: &FleetSettings) -> String {
    format!("{}deployment", s.prefix())
}

pub(super) fn controller_key(s: &FleetSettings) -> String {
    format!("{}controller", s.prefix())
}

pub(super) fn abort_key(s: &FleetSettings) -> String {
    format!("{}abort", s.prefix())
}

/// `<deployment id>:<step>`: promote that step of that deployment.
pub(super) fn promote_key(s: &FleetSettings) -> String {
    format!("{}promote", s.prefix())
}

pub(super) fn nodes_prefix(s: &FleetSettings) -> String {
    format!("{}nodes/", s.prefix())
}

pub(super) fn node_key(s: &FleetSettings) -> String {
    format!("{}{}", nodes_prefix(s), s.node)
}

/// Connects to the fleet's etcd, with the client certificate and the user
/// the config names.
pub(super) async fn connect(s: &FleetSettings) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        // A member that lost its leader fails requests and watches in
        // seconds instead of holding them.
        .with_require_leader(true);
    if let Some(ca) = &s.ca {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| format!("fleet: reading {}: {e}", p.display()))
        };
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&s.cert, &s.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(file)) = (&s.user, &s.password_file) {
        let password = std::fs::read_to_string(file)
            .map_err(|e| format!("fleet: reading {}: {e}", file.display()))?;
        options = options.with_user(user.clone(), password.trim_end().to_owned());
    }
    // One member at a time, the first that answers with a leader: a
    // client over all endpoints would send some requests to a dead one.
    let mut errors = Vec::new();
    for endpoint in &s.endpoints {
        let attempt = async {
            let mut client = Client::connect([endpoint.as_str()], Some(options.clone())).await?;
            client
                .get(desired_key(s), Some(GetOptions::new().with_keys_only()))
                .await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match attempt.await {
            Ok(client) => return Ok(client),
            Err(e) => errors.push(format!("{endpoint}: {}", short(&e))),
        }
    }
    Err(format!("no etcd member answers ({})", errors.join("; ")))
}

/// An etcd client error with its causes (tonic says only "transport
/// error" at the top; the TLS or socket reason is below it).
fn short(e: &etcd_client::Error) -> String {
    let (mut text, mut cause) = match e {
        etcd_client::Error::GRpcStatus(status) => (
            status.message().to_owned(),
            std::error::Error::source(status),
        ),
        other => (other.to_string(), std::error::Error::source(other)),
    };
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        cause = c.source();
    }
    text
}
