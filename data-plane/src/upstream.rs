//! Calls upstream providers: one pooled hyper client over rustls (HTTP/1.1 and HTTP/2 by
//! ALPN, webpki roots). Redirects are never followed. The URL comes only from the provider
//! record; headers are an allowlist; the credential header is marked sensitive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sluice_shared::secret::SecretString;

use crate::http_body::{Body, full};
use crate::routing_tables::{CredentialHeader, ProviderEntry};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Reads a PEM bundle of extra trusted roots.
pub fn load_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if roots.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(roots)
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no response headers within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the provider: {0}")]
    Connect(String),
    #[error("bad upstream URL: {0}")]
    BadUrl(String),
}

/// One connection pool per serving thread (`server::current_worker`) and one for every other
/// thread: a pooled connection is driven by a task on the runtime that opened it, so a pool
/// shared between serving threads would wake another thread for every request.
#[derive(Clone)]
pub struct UpstreamClient {
    pools: Arc<[Client<Connector, Body>]>,
}

impl UpstreamClient {
    pub fn new() -> Self {
        Self::with_extra_roots(Vec::new(), 1)
    }

    /// A client for `workers` serving threads that also trusts `extra_roots` (beside the
    /// bundled web PKI roots).
    pub fn with_extra_roots(extra_roots: Vec<CertificateDer<'static>>, workers: usize) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let (added, ignored) = roots.add_parsable_certificates(extra_roots);
        if ignored > 0 {
            tracing::warn!(
                added,
                ignored,
                "some extra upstream roots could not be used"
            );
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        let https = match tls {
            Ok(config) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http),
            // The ring provider always supports the safe defaults; fall back to plain roots.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http),
        };
        let pools = (0..=workers)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(1024)
                    .build(https.clone())
            })
            .collect();
        Self { pools }
    }

    fn client(&self) -> &Client<Connector, Body> {
        let last = self.pools.len() - 1;
        let index = crate::server::current_worker().map_or(last, |worker| worker.min(last));
        &self.pools[index]
    }

    /// POSTs `body` to `uri` (one of the provider's precomputed URIs) and returns once response
    /// headers arrive.
    pub async fn post_json(
        &self,
        provider: &ProviderEntry,
        uri: &http::Uri,
        credential: Option<&SecretString>,
        accept: &'static str,
        body: Bytes,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .body(full(body))
            .map_err(|e| UpstreamError::BadUrl(e.to_string()))?;
        let headers = request.headers_mut();
        for (name, value) in &provider.extra_headers {
            headers.insert(name.clone(), value.clone());
        }
        set_fixed_headers(headers, accept);
        headers.insert(header::HOST, provider.host_header.clone());
        if let Some(credential) = credential {
            let (name, prefix): (HeaderName, &[u8]) = match &provider.credential_header {
                CredentialHeader::Bearer => (header::AUTHORIZATION, b"Bearer "),
                CredentialHeader::Named(name) => (name.clone(), b""),
            };
            let mut value = Vec::with_capacity(prefix.len() + credential.expose().len());
            value.extend_from_slice(prefix);
            value.extend_from_slice(credential.expose().as_bytes());
            let mut value = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
                UpstreamError::BadUrl("provider key cannot travel in a header".to_owned())
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        match tokio::time::timeout(provider.timeout, self.client().request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(UpstreamError::Connect(describe(&error))),
            Err(_) => Err(UpstreamError::Timeout(provider.timeout)),
        }
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

fn set_fixed_headers(headers: &mut HeaderMap, accept: &'static str) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION"))),
    );
}

/// The error chain without URLs' query strings or credentials (hyper's errors hold neither).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
