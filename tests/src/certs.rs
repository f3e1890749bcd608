//! A CA and a server certificate made for a test (rcgen): what TLS
//! backends present and what bluegreen's probes verify.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

pub struct TestPki {
    /// PEM of the CA certificate.
    pub ca: PathBuf,
    /// PEM of the server certificate, signed by the CA, and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// Writes `ca.pem`, `server.pem` and `server.key` under `dir`; the
    /// server certificate names `dns` and `ips`.
    pub fn new(dir: &Path, dns: &[&str], ips: &[IpAddr]) -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bluegreen test CA");
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            dns.first().copied().unwrap_or("server"),
        );
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        let pki = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&pki.ca, ca.pem())?;
        std::fs::write(&pki.cert, cert.pem())?;
        std::fs::write(&pki.key, key.serialize_pem())?;
        Ok(pki)
    }
}
