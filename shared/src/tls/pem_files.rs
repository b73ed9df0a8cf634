//! Reading certificates, keys and CA bundles from PEM files, with errors that name the file.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{what}: {source}")]
    Rustls {
        what: &'static str,
        source: rustls::Error,
    },
    #[error("client certificate check: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(path: &Path, error: impl std::fmt::Display) -> TlsFileError {
    TlsFileError::File {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// A certificate chain, leaf first.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, error))?;
    if chain.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// A private key (PKCS#8, PKCS#1 or SEC1). Its bytes never reach an error message.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| file_error(path, error))
}

/// Trust anchors from a CA bundle; every certificate in it must parse.
pub fn roots(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(path, error))?;
    }
    Ok(roots)
}
