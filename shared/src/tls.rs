//! TLS from PEM files that rotate: certificates replaced on disk are used for the next
//! connection, without a restart, while connections already made keep the certificate they
//! were made with. Both halves use it: the control plane's listener (and the proxies'
//! certificates it checks), the proxy's client listener, and every client of the control plane.

pub mod accepted;
pub mod client;
mod pem_files;
mod rotating;
pub mod server;

pub use pem_files::TlsFileError;

/// The one crypto provider both halves build with.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
