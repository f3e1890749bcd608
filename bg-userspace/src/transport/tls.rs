//! TLS to backends of syslog-over-TLS services (RFC 5425, `app = "tls"`):
//! how probes and the deployment gate speak to them, with the operator's
//! CA and verification settings. The data path never decrypts: it steers
//! TLS at L4 like any TCP.
use std::{
    io,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
};
use serde::Serialize;

/// How much of a backend's certificate is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Signed by the CA and valid for the backend's name (`server_name`,
    /// or its IP address).
    #[default]
    Full,
    /// Signed by the CA, whatever name it carries (rsyslog's `x509/certvalid`).
    Ca,
    /// Nothing checked: encryption only (rsyslog's `anon`). Not for
    /// production: anyone in the path can pose as the backend.
    None,
}

impl Verify {
    pub const ACCEPTED: &str = "\"full\", \"ca\" or \"none\"";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "full" => Some(Self::Full),
            "ca" => Some(Self::Ca),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// `[service.tls]` as validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TlsSettings {
    /// PEM file of the CA certificates that sign the backends'.
    pub ca: Option<PathBuf>,
    pub verify: Verify,
    /// The name the backends' certificates carry; default: their address.
    pub server_name: Option<String>,
    /// A client certificate and its key (PEM), for backends that require
    /// one (rsyslog's gtls with `x509/name` or `x509/certvalid`).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A TLS client built from `TlsSettings`, shared by probes and the gate.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    pub settings: TlsSettings,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("settings", &self.settings)
            .finish()
    }
}

impl PartialEq for TlsClient {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for TlsClient {}

impl Serialize for TlsClient {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.settings.serialize(s)
    }
}

/// Which field was wrong and why, for the config's error.
#[derive(Debug)]
pub struct TlsProblem {
    pub field: &'static str,
    pub value: String,
    pub reason: String,
}

fn problem(field: &'static str, path: &Path, reason: impl ToString) -> TlsProblem {
    TlsProblem {
        field,
        value: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsClient {
    /// Reads the CA and client certificate files and builds the client.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsProblem> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsProblem {
                field: "verify",
                value: String::new(),
                reason: e.to_string(),
            })?;
        let verifier: Arc<dyn ServerCertVerifier> = match (settings.verify, &settings.ca) {
            (Verify::None, _) => Arc::new(AcceptAny(provider())),
            (_, None) => {
                return Err(TlsProblem {
                    field: "ca",
                    value: String::new(),
                    reason: format!(
                        "missing: with verify = {:?} the backends' certificates are checked against a CA",
                        format!("{:?}", settings.verify).to_lowercase()
                    ),
                });
            }
            (verify, Some(ca)) => {
                let mut roots = RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                    .map_err(|e| problem("ca", ca, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| problem("ca", ca, e))?;
                if certs.is_empty() {
                    return Err(problem("ca", ca, "no PEM certificate in it"));
                }
                for c in certs {
                    roots.add(c).map_err(|e| problem("ca", ca, e))?;
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
                    .build()
                    .map_err(|e| problem("ca", ca, e))?;
                if verify == Verify::Ca {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| problem("cert", cert, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| problem("cert", cert, e))?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| problem("key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| problem("cert", cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), None) => {
                return Err(problem("key", cert, "missing: a client cert needs its key"));
            }
            (None, Some(key)) => {
                return Err(problem("cert", key, "missing: a client key needs its cert"));
            }
        };
        Ok(Self {
            config: Arc::new(config),
            settings,
        })
    }

    fn server_name(&self, addr: SocketAddr) -> io::Result<ServerName<'static>> {
        match &self.settings.server_name {
            Some(name) => ServerName::try_from(name.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)),
            None => Ok(ServerName::IpAddress(addr.ip().into())),
        }
    }

    /// Connects to `addr` and completes the handshake, each step within
    /// `timeout`. The stream then reads and writes plaintext.
    pub fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        sock.set_nodelay(true)?;
        self.handshake(sock, addr)
    }

    /// The handshake over an already connected socket (or a wrapper of
    /// one).
    pub fn handshake<S: io::Read + io::Write>(
        &self,
        mut sock: S,
        addr: SocketAddr,
    ) -> io::Result<StreamOwned<ClientConnection, S>> {
        let mut conn = ClientConnection::new(self.config.clone(), self.server_name(addr)?)
            .map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(|e| {
                // Say what failed: a certificate, an alert, a closed socket.
                io::Error::new(e.kind(), format!("TLS handshake with {addr}: {e}"))
            })?;
        }
        Ok(StreamOwned::new(conn, sock))
    }
}

/// A TLS health probe: connect, complete the handshake as the settings
/// verify it, and close with close_notify.
pub fn probe(tls: &TlsClient, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    use std::io::Write as _;
    let mut stream = tls.connect(addr, timeout)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// `verify = "ca"`: the chain must reach the CA; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `verify = "none"`: any certificate; the handshake's signatures are
/// still checked, so the session is encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
