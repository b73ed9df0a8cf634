//! The server side: a certificate and key, and optionally a CA bundle that client certificates
//! are checked against, all re-read when they change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::TlsFileError;
use super::pem_files::{certificates, private_key, roots};
use super::rotating::Rotating;

/// Where a listener's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are checked against this bundle when set. A client without one
    /// still completes the handshake: what it may then call is the service's decision.
    pub client_ca: Option<PathBuf>,
}

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServerTls {
    config: Rotating<ServerConfig>,
    checks_clients: bool,
}

impl ServerTls {
    /// Reads the files now; `alpn` lists the protocols offered, most preferred first.
    pub fn new(files: &ServerTlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsFileError> {
        let mut paths = vec![files.cert.clone(), files.key.clone()];
        paths.extend(files.client_ca.clone());
        let owned = files.clone();
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = Rotating::new("server certificate", paths, move || {
            build(&owned, alpn.clone())
        })?;
        Ok(Self {
            config,
            checks_clients: files.client_ca.is_some(),
        })
    }

    /// Whether client certificates are checked (and so whether a verified one can be asked of
    /// a caller).
    pub fn checks_client_certificates(&self) -> bool {
        self.checks_clients
    }

    /// Completes the handshake within [`HANDSHAKE_TIMEOUT`]. The error says why in words an
    /// operator can act on (an unknown issuer, an expired certificate, a client that gave up).
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no TLS handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )),
        }
    }
}

fn build(files: &ServerTlsFiles, alpn: Vec<Vec<u8>>) -> Result<ServerConfig, TlsFileError> {
    let chain = certificates(&files.cert)?;
    let key = private_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsFileError::Rustls {
            what: "protocol versions",
            source,
        })?;
    let builder = match &files.client_ca {
        Some(path) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots(path)?), super::provider())
                .allow_unauthenticated()
                .build()?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder
            .with_single_cert(chain, key)
            .map_err(|source| TlsFileError::Rustls {
                what: "certificate and key",
                source,
            })?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// Whether the peer of an accepted connection presented a certificate the CA bundle vouched
/// for (rustls refuses the handshake for one it does not).
pub fn presented_client_certificate(stream: &TlsStream<TcpStream>) -> bool {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|chain| !chain.is_empty())
}
