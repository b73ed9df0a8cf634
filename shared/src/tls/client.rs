//! The client side: how a proxy and `sluicectl` reach the control plane. An `https://` address
//! is checked against a CA file (or the bundled web roots) and may present a client
//! certificate; all of it is re-read when it changes, for the next connection.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::TlsFileError;
use super::pem_files::{certificates, private_key, roots};
use super::rotating::Rotating;

/// A client's TLS material; every part optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA the server's certificate must chain to; the bundled web roots when unset.
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, presented when the server asks.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// Whether these files fit `address` (read nothing yet): both halves of a client
    /// certificate or neither, and TLS files only for an `https://` address. Whether the
    /// address is TLS.
    pub fn check_for(&self, address: &str) -> Result<bool, ClientTlsError> {
        let uri: Uri = address
            .parse()
            .map_err(|_| ClientTlsError::Address(address.to_owned()))?;
        if self.cert.is_some() != self.key.is_some() {
            return Err(ClientTlsError::HalfAPair);
        }
        match uri.scheme_str() {
            Some("https") => Ok(true),
            Some("http") if self.is_empty() => Ok(false),
            Some("http") => Err(ClientTlsError::FilesWithoutTls(address.to_owned())),
            _ => Err(ClientTlsError::Address(address.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("'{0}' is not an address: expected http://host:port or https://host:port")]
    Address(String),
    #[error(
        "TLS files are set for the control plane but '{0}' is plain http://: use https:// (or \
         drop the CA and client certificate settings)"
    )]
    FilesWithoutTls(String),
    #[error("a client certificate needs both its certificate and its key file")]
    HalfAPair,
    #[error(transparent)]
    Files(#[from] TlsFileError),
}

/// Opens connections to one control plane, plain or TLS as its address says.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<Rotating<ClientConfig>>>,
}

impl Connector {
    /// Checks the address and reads the TLS files now, so a mistake stops the process at start.
    pub fn new(address: &str, files: &ClientTlsFiles) -> Result<Self, ClientTlsError> {
        if !files.check_for(address)? {
            return Ok(Self { tls: None });
        }
        let mut paths: Vec<PathBuf> = Vec::new();
        paths.extend(
            files
                .ca
                .iter()
                .chain(&files.cert)
                .chain(&files.key)
                .cloned(),
        );
        let owned = files.clone();
        let config = Rotating::new("client certificate", paths, move || build(&owned))?;
        Ok(Self {
            tls: Some(Arc::new(config)),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

fn build(files: &ClientTlsFiles) -> Result<ClientConfig, TlsFileError> {
    let roots = match &files.ca {
        Some(path) => roots(path)?,
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsFileError::Rustls {
            what: "protocol versions",
            source,
        })?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(certificates(cert)?, private_key(key)?)
            .map_err(|source| TlsFileError::Rustls {
                what: "client certificate and key",
                source,
            })?,
        _ => builder.with_no_client_auth(),
    };
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A plain or TLS connection, as one type for tonic.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.tls.as_ref().map(|tls| tls.current());
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .unwrap_or(if config.is_some() { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let Some(config) = config else {
                return Ok(TokioIo::new(Box::new(tcp) as Box<dyn Io>));
            };
            let name = ServerName::try_from(host.clone()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("'{host}' is not a name a certificate can carry"),
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("TLS handshake with {host}:{port} failed: {error}"),
                    )
                })?;
            Ok(TokioIo::new(Box::new(stream) as Box<dyn Io>))
        })
    }
}

/// What an operator should do about a connection the control plane refused at the TLS layer,
/// read from the error's causes. With TLS 1.3 a client learns its certificate was refused only
/// after its handshake, from the alert on its first read, so this is asked of stream errors.
/// The alert reaches here as text (the I/O layers keep rustls's message, not its type).
pub fn explain_refusal(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    const EXPLAINED: &[(&[&str], &str)] = &[
        (
            &["received fatal alert: CertificateExpired"],
            "the control plane refused this proxy's client certificate as expired: renew the \
             file SLUICE_PROXY_CONTROL_PLANE_CERT_FILE names",
        ),
        (
            &["received fatal alert: CertificateRequired"],
            "the control plane requires a client certificate: set \
             SLUICE_PROXY_CONTROL_PLANE_CERT_FILE and _KEY_FILE",
        ),
        (
            &[
                "received fatal alert: UnknownCA",
                "received fatal alert: BadCertificate",
                "received fatal alert: CertificateUnknown",
                "received fatal alert: CertificateRevoked",
                "received fatal alert: UnsupportedCertificate",
                "received fatal alert: AccessDenied",
            ],
            "the control plane refused this proxy's client certificate: it must be issued by \
             the CA the control plane trusts for proxies (its tls_client_ca_file)",
        ),
        (
            &["invalid peer certificate"],
            "this proxy does not trust the control plane's certificate: check \
             SLUICE_PROXY_CONTROL_PLANE_CA_FILE",
        ),
    ];
    let mut cause = Some(error);
    while let Some(inner) = cause {
        let text = inner.to_string();
        for (signs, explanation) in EXPLAINED {
            if signs.iter().any(|sign| text.contains(sign)) {
                return Some(explanation);
            }
        }
        cause = inner.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_must_fit_the_address() {
        let none = ClientTlsFiles::default();
        let ca = ClientTlsFiles {
            ca: Some("/ca.pem".into()),
            ..ClientTlsFiles::default()
        };
        let half = ClientTlsFiles {
            cert: Some("/c.pem".into()),
            ..ClientTlsFiles::default()
        };
        assert!(!none.check_for("http://127.0.0.1:7070").unwrap());
        assert!(none.check_for("https://cp:7071").unwrap());
        assert!(ca.check_for("https://cp:7071").unwrap());
        assert!(matches!(
            ca.check_for("http://cp:7070"),
            Err(ClientTlsError::FilesWithoutTls(_))
        ));
        assert!(matches!(
            half.check_for("https://cp:7071"),
            Err(ClientTlsError::HalfAPair)
        ));
        assert!(matches!(
            none.check_for("ftp://cp"),
            Err(ClientTlsError::Address(_))
        ));
    }
}
