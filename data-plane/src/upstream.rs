//! Calls upstream providers: pooled hyper clients over rustls (HTTP/1.1 and HTTP/2 by ALPN,
//! webpki roots). Redirects are never followed. The URL comes only from the provider record,
//! and every connection goes only where that provider may reach, judged on the address it
//! resolves to (`sluice_shared::upstream_connect`); headers are an allowlist; the credential
//! header is marked sensitive.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sluice_shared::secret::SecretString;
use sluice_shared::upstream_connect::{
    ConnectError, GuardedConnector, Resolve, SystemResolver, error_chain,
};

use crate::http_body::{Body, full};
use crate::routing::tables::{CredentialHeader, ProviderEntry};

type Connector = hyper_rustls::HttpsConnector<GuardedConnector>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The connection broke after the request may have gone out.
    #[error("the connection to the provider broke: {0}")]
    Reset(String),
    /// The provider's host resolved only to addresses it may not reach.
    #[error("{0}")]
    Refused(String),
    #[error("bad upstream URL: {0}")]
    BadUrl(String),
}

thread_local! {
    static SERVING_THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks this thread as serving thread `index`: the requests it runs use that thread's pools.
pub fn serve_on_this_thread(index: usize) {
    SERVING_THREAD.with(|thread| thread.set(Some(index)));
}

/// One connection pool per serving thread ([`serve_on_this_thread`]) and one for every other
/// thread: a pooled connection is driven by a task on the runtime that opened it, so a pool
/// shared between serving threads would wake another thread for every request. Each comes
/// twice, for providers with and without the private-network permission: a pool is keyed by
/// host, so a connection one provider may make must never be reused by another that may not.
#[derive(Clone)]
pub struct UpstreamClient {
    pools: Arc<[Pools]>,
}

struct Pools {
    public_only: Client<Connector, Body>,
    private_allowed: Client<Connector, Body>,
}

impl UpstreamClient {
    pub fn new() -> Self {
        Self::with_extra_roots(Vec::new(), 1)
    }

    /// A client for `workers` serving threads that also trusts `extra_roots` (beside the
    /// bundled web PKI roots).
    pub fn with_extra_roots(extra_roots: Vec<CertificateDer<'static>>, workers: usize) -> Self {
        Self::with_resolver(extra_roots, workers, Arc::new(SystemResolver))
    }

    /// [`Self::with_extra_roots`], names resolved by `resolver`.
    pub fn with_resolver(
        extra_roots: Vec<CertificateDer<'static>>,
        workers: usize,
        resolver: Arc<dyn Resolve>,
    ) -> Self {
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
        let https = |allow_private_network| {
            let tcp =
                GuardedConnector::new(resolver.clone(), allow_private_network, CONNECT_TIMEOUT);
            match &tls {
                Ok(config) => hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config.clone())
                    .https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .wrap_connector(tcp),
                // The ring provider always supports the safe defaults; fall back to plain roots.
                Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_http1()
                    .enable_http2()
                    .wrap_connector(tcp),
            }
        };
        let pool = |allow_private_network| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(1024)
                .build(https(allow_private_network))
        };
        let pools = (0..=workers)
            .map(|_| Pools {
                public_only: pool(false),
                private_allowed: pool(true),
            })
            .collect();
        Self { pools }
    }

    fn client(&self, provider: &ProviderEntry) -> &Client<Connector, Body> {
        let last = self.pools.len() - 1;
        let index = SERVING_THREAD
            .with(Cell::get)
            .map_or(last, |thread| thread.min(last));
        let pools = &self.pools[index];
        if provider.allow_private_network {
            &pools.private_allowed
        } else {
            &pools.public_only
        }
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
        match tokio::time::timeout(provider.timeout, self.client(provider).request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(match refusal(&error) {
                Some(refused) => UpstreamError::Refused(refused.to_string()),
                None if error.is_connect() => UpstreamError::Connect(error_chain(&error)),
                None => UpstreamError::Reset(error_chain(&error)),
            }),
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

/// The connector's refusal to go where the provider may not, if that is why the call failed.
fn refusal(error: &hyper_util::client::legacy::Error) -> Option<&ConnectError> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<ConnectError>() {
            return matches!(refused, ConnectError::Refused { .. }).then_some(refused);
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, SocketAddr};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use sluice_proto::config::v1 as pb;
    use sluice_shared::sealing::{SealingKeyPair, SecretSealer};

    use super::*;
    use crate::routing::tables::RoutingTables;

    /// A DNS answer that turned hostile after the provider was accepted (rebinding).
    struct Rebound(HashMap<String, IpAddr>);

    impl Resolve for Rebound {
        fn resolve(
            &self,
            host: String,
            port: u16,
        ) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        {
            let found = self.0.get(&host).map(|ip| vec![SocketAddr::new(*ip, port)]);
            Box::pin(async move { found.ok_or_else(|| std::io::ErrorKind::NotFound.into()) })
        }
    }

    fn tables(base_url: &str, allow_private_network: bool) -> RoutingTables {
        let sealing = SealingKeyPair::generate();
        let sealer = SecretSealer::for_recipient(&sealing.public_bytes()).unwrap();
        let snapshot = pb::Snapshot {
            version: 1,
            generated_at_us: 1,
            sealing_public_key: sealer.sender_public().to_vec(),
            providers: vec![pb::ProviderConfig {
                id: "p1".into(),
                organization_id: "o1".into(),
                name: "local".into(),
                r#type: sluice_proto::common::v1::ProviderType::Vllm as i32,
                base_url: base_url.into(),
                timeout_ms: 2_000,
                allow_private_network,
                ..Default::default()
            }],
            ..Default::default()
        };
        RoutingTables::build(&snapshot, &sealing, &[]).unwrap()
    }

    #[tokio::test]
    async fn a_provider_reaches_a_private_address_only_with_leave_whatever_its_name_resolves_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counting = accepted.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counting.fetch_add(1, Ordering::SeqCst);
            }
        });
        let resolver = Arc::new(Rebound(HashMap::from([
            ("api.example.com".to_owned(), "127.0.0.1".parse().unwrap()),
            (
                "meta.example.com".to_owned(),
                "169.254.169.254".parse().unwrap(),
            ),
        ])));
        let client = UpstreamClient::with_resolver(Vec::new(), 1, resolver);
        let call = |base: String, allow: bool| {
            let client = client.clone();
            async move {
                let tables = tables(&base, allow);
                let uri: http::Uri = format!("{base}/chat/completions").parse().unwrap();
                client
                    .post_json(
                        &tables.providers[0],
                        &uri,
                        None,
                        "application/json",
                        Bytes::new(),
                    )
                    .await
            }
        };
        for base in [
            format!("http://api.example.com:{port}/v1"),
            format!("http://2130706433:{port}/v1"),
            format!("http://[::ffff:127.0.0.1]:{port}/v1"),
            format!("http://0.0.0.0:{port}/v1"),
        ] {
            let refused = call(base.clone(), false).await;
            assert!(
                matches!(refused, Err(UpstreamError::Refused(_))),
                "{base}: {refused:?}"
            );
        }
        let metadata = call(format!("http://meta.example.com:{port}/v1"), true).await;
        assert!(
            matches!(metadata, Err(UpstreamError::Refused(_))),
            "{metadata:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        // The same name, with leave: the connection is made (the listener hangs up at once, so
        // the call fails after connecting: a reset, not a connect error).
        let allowed = call(format!("http://api.example.com:{port}/v1"), true).await;
        assert!(
            matches!(allowed, Err(UpstreamError::Reset(_))),
            "{allowed:?}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
