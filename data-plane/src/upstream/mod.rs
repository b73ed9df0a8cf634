//! Calls upstream providers over rustls (HTTP/1.1 and HTTP/2 by ALPN, webpki roots and any
//! extra ones). Redirects are never followed. The URL comes only from the provider record, and
//! every connection goes only where that provider may reach, judged on the address it resolves
//! to (`sluice_shared::upstream_connect`); headers are an allowlist; the credential header is
//! marked sensitive. Connections are pooled per thread ([`pool`]) and an HTTP/1.1 one is
//! driven by the request using it.

mod body;
mod http1;
mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sluice_shared::secret::SecretString;
use sluice_shared::upstream_connect::{
    ConnectError, GuardedConnector, Resolve, SystemResolver, error_chain,
};
use tower_service::Service as _;

pub use body::UpstreamBody;
use http1::{Http1Body, Http1Connection};
use pool::{Http2Sender, PoolKey, Pooled};

use crate::resilience::timeout_policy::{Deadlines, Expiry, TimeoutKind};
use crate::routing::tables::{CredentialHeader, ProviderEntry};

type Connector = hyper_rustls::HttpsConnector<GuardedConnector>;

/// Each address tried gets this long at most; the attempt's connect timeout bounds them all.
const ADDRESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error("the {} timeout ({:?}) ran out", .0.kind.setting(), .0.after)]
    TimedOut(Expiry),
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

/// How one attempt on one connection went.
enum Attempt {
    Answered(Response<UpstreamBody>),
    /// The connection had closed before the request went out: it can go on another.
    Unsent,
    Failed(String),
}

/// A request as it goes out, over either protocol: its headers are read straight from the
/// provider record, never gathered into a map for HTTP/1.1.
struct Outgoing<'a> {
    uri: &'a Uri,
    provider: &'a ProviderEntry,
    accept: HeaderValue,
    /// The credential header, its value marked sensitive.
    credential: Option<(HeaderName, HeaderValue)>,
    /// `traceparent` (naming the attempt's span) and `tracestate`, for a traced request.
    trace: Option<&'a TraceHeaders>,
    body: Bytes,
}

/// What an attempt sends: its JSON body, the answer it accepts, and its trace headers.
pub struct JsonPost<'a> {
    pub accept: &'static str,
    pub body: Bytes,
    pub trace: Option<&'a TraceHeaders>,
}

/// What a traced attempt tells its upstream of the trace (W3C Trace Context).
pub struct TraceHeaders {
    pub traceparent: HeaderValue,
    pub tracestate: Option<HeaderValue>,
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

static CONTENT_TYPE: HeaderName = header::CONTENT_TYPE;
static ACCEPT: HeaderName = header::ACCEPT;
static USER_AGENT: HeaderName = header::USER_AGENT;
static HOST: HeaderName = header::HOST;
static JSON: HeaderValue = HeaderValue::from_static("application/json");
static SLUICE: HeaderValue =
    HeaderValue::from_static(concat!("sluice/", env!("CARGO_PKG_VERSION")));

impl Outgoing<'_> {
    /// Every header the request carries, each name once: the provider's extra headers (the
    /// last of a repeated name), then Sluice's own, which replace an extra header of their
    /// name.
    fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let own = [
            (&CONTENT_TYPE, &JSON),
            (&ACCEPT, &self.accept),
            (&USER_AGENT, &SLUICE),
            (&HOST, &self.provider.host_header),
        ]
        .into_iter()
        .chain(self.credential.as_ref().map(|(name, value)| (name, value)))
        .chain(self.trace.map(|trace| (&TRACEPARENT, &trace.traceparent)))
        .chain(
            self.trace
                .and_then(|trace| trace.tracestate.as_ref())
                .map(|value| (&TRACESTATE, value)),
        );
        let extra = &self.provider.extra_headers;
        let kept = extra.iter().enumerate().filter(move |(index, (name, _))| {
            let repeated = extra[index + 1..].iter().any(|(later, _)| later == name);
            let replaced = [&CONTENT_TYPE, &ACCEPT, &USER_AGENT, &HOST]
                .into_iter()
                .chain(self.credential.as_ref().map(|(own, _)| own))
                .chain(self.trace.map(|_| &TRACEPARENT))
                .chain(self.trace.map(|_| &TRACESTATE))
                .any(|own| own == name);
            !repeated && !replaced
        });
        kept.map(|(_, (name, value))| (name, value)).chain(own)
    }
}

/// Tells the pools of different clients apart (a process normally has one).
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
pub struct UpstreamClient {
    id: u64,
    /// For providers without and with the private-network permission.
    connectors: Arc<[Connector; 2]>,
}

impl UpstreamClient {
    pub fn new() -> Self {
        Self::with_extra_roots(Vec::new())
    }

    /// A client that also trusts `extra_roots` (beside the bundled web PKI roots).
    pub fn with_extra_roots(extra_roots: Vec<CertificateDer<'static>>) -> Self {
        Self::with_resolver(extra_roots, Arc::new(SystemResolver))
    }

    /// [`Self::with_extra_roots`], names resolved by `resolver`.
    pub fn with_resolver(
        extra_roots: Vec<CertificateDer<'static>>,
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
            let tcp = GuardedConnector::new(
                resolver.clone(),
                allow_private_network,
                ADDRESS_CONNECT_TIMEOUT,
            );
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
        Self {
            id: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            connectors: Arc::new([https(false), https(true)]),
        }
    }

    /// POSTs `body` to `uri` (one of the provider's precomputed URIs) and returns once response
    /// headers arrive, connecting and then waiting for them within the attempt's `deadlines`.
    pub async fn post_json(
        &self,
        provider: &ProviderEntry,
        uri: &Uri,
        credential: Option<&SecretString>,
        post: JsonPost<'_>,
        deadlines: &Deadlines,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let JsonPost {
            accept,
            body,
            trace,
        } = post;
        let credential = match credential {
            None => None,
            Some(credential) => {
                let (name, prefix): (HeaderName, &[u8]) = match &provider.credential_header {
                    CredentialHeader::Bearer => (header::AUTHORIZATION, b"Bearer "),
                    CredentialHeader::Named(name) => (name.clone(), b""),
                };
                let mut value = Vec::with_capacity(prefix.len() + credential.expose().len());
                value.extend_from_slice(prefix);
                value.extend_from_slice(credential.expose().as_bytes());
                let mut value =
                    HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
                        UpstreamError::BadUrl("provider key cannot travel in a header".to_owned())
                    })?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        let key = PoolKey {
            client: self.id,
            tls: match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => return Err(UpstreamError::BadUrl(format!("{uri} is not http(s)"))),
            },
            allow_private_network: provider.allow_private_network,
            authority: uri
                .authority()
                .cloned()
                .ok_or_else(|| UpstreamError::BadUrl(format!("{uri} names no host")))?,
        };
        let outgoing = Outgoing {
            uri,
            provider,
            accept: HeaderValue::from_static(accept),
            credential,
            trace,
            body,
        };
        self.send(key, &outgoing, deadlines).await
    }

    /// Sends on this thread's idle connections while they turn out closed, then on a new one.
    async fn send(
        &self,
        key: PoolKey,
        outgoing: &Outgoing<'_>,
        deadlines: &Deadlines,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let started = deadlines.attempt_started();
        let (connect_by, connect_kind) = deadlines.bound(TimeoutKind::Connect, started);
        let (first_byte_by, first_byte_kind) = deadlines.bound(TimeoutKind::FirstByte, started);
        // Whichever comes first bounds connecting; nothing has gone out yet.
        let (connect_by, connect_kind) = if first_byte_by < connect_by {
            (first_byte_by, first_byte_kind)
        } else {
            (connect_by, connect_kind)
        };
        let timed_out = |kind, sent| UpstreamError::TimedOut(deadlines.expired(kind, sent));
        loop {
            let (pooled, reused) = match pool::checkout(&key) {
                Some(pooled) => (pooled, true),
                // Connecting happens once per connection and its future is the largest of a
                // request's: boxed, it takes no room in every request's state.
                None => {
                    let connect = Box::pin(self.connect(&key, outgoing.uri));
                    match tokio::time::timeout_at(connect_by, connect).await {
                        Ok(connected) => (connected?, false),
                        Err(_) => return Err(timed_out(connect_kind, false)),
                    }
                }
            };
            let sending = async {
                match pooled {
                    Pooled::Http1(mut connection) => {
                        if reused && !connection.still_open().await {
                            return Attempt::Unsent;
                        }
                        send_http1(&key, connection, reused, outgoing).await
                    }
                    Pooled::Http2(sender) => {
                        let sent = send_http2(sender, outgoing).await;
                        if reused && matches!(sent, Attempt::Unsent) {
                            pool::forget_http2(&key);
                        }
                        sent
                    }
                }
            };
            let Ok(sent) = tokio::time::timeout_at(first_byte_by, sending).await else {
                return Err(timed_out(first_byte_kind, true));
            };
            match sent {
                Attempt::Answered(response) => return Ok(response),
                Attempt::Unsent if reused => {}
                Attempt::Unsent => {
                    return Err(UpstreamError::Reset(
                        "the provider closed a new connection before the request went out"
                            .to_owned(),
                    ));
                }
                Attempt::Failed(why) => return Err(UpstreamError::Reset(why)),
            }
        }
    }

    /// A new connection to `uri`'s host, HTTP/2 if the server chose it by ALPN.
    async fn connect(&self, key: &PoolKey, uri: &Uri) -> Result<Pooled, UpstreamError> {
        let mut connector = self.connectors[usize::from(key.allow_private_network)].clone();
        let io = match std::future::poll_fn(|cx| connector.poll_ready(cx)).await {
            Ok(()) => connector.call(uri.clone()).await,
            Err(error) => Err(error),
        }
        .map_err(|error| match refusal(&*error) {
            Some(refused) => UpstreamError::Refused(refused.to_string()),
            None => UpstreamError::Connect(error_chain(&*error)),
        })?;
        let handshake_failed = |error: hyper::Error| UpstreamError::Connect(error_chain(&error));
        if io.connected().is_negotiated_h2() {
            let (sender, driver) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(handshake_failed)?;
            tokio::spawn(driver);
            pool::share_http2(key.clone(), &sender);
            Ok(Pooled::Http2(sender))
        } else {
            Ok(Pooled::Http1(Http1Connection::new(io)))
        }
    }
}

/// Sends on an HTTP/1.1 connection and reads the answer's head in this task; the body is read
/// from the connection as the answer is.
async fn send_http1(
    key: &PoolKey,
    mut connection: Http1Connection,
    reused: bool,
    outgoing: &Outgoing<'_>,
) -> Attempt {
    let path = outgoing
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let head = http1::encode_head(path, outgoing.headers(), outgoing.body.len());
    if let Err(error) = connection.send(head, &outgoing.body).await {
        // A pooled connection that the provider had closed refuses the write outright: the
        // request never reached it and can go on another connection.
        return if reused {
            Attempt::Unsent
        } else {
            Attempt::Failed(error.to_string())
        };
    }
    match connection.read_head().await {
        Ok(head) => {
            let body = Http1Body::new(connection, &head, key.clone());
            let mut response = Response::new(UpstreamBody::http1(body));
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
            Attempt::Answered(response)
        }
        Err(error) => Attempt::Failed(error.to_string()),
    }
}

async fn send_http2(mut sender: Http2Sender, outgoing: &Outgoing<'_>) -> Attempt {
    let mut request = Request::new(Full::new(outgoing.body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = outgoing.uri.clone();
    let headers = request.headers_mut();
    for (name, value) in outgoing.headers() {
        // HTTP/2 names the authority in its own pseudo-header.
        if name != header::HOST {
            headers.insert(name.clone(), value.clone());
        }
    }
    match sender.try_send_request(request).await {
        Ok(response) => Attempt::Answered(response.map(UpstreamBody::http2)),
        Err(mut error) => match error.take_message() {
            Some(_) => Attempt::Unsent,
            None => Attempt::Failed(error_chain(&error.into_error())),
        },
    }
}

impl Default for UpstreamClient {
    fn default() -> Self {
        Self::new()
    }
}

/// The connector's refusal to go where the provider may not, if that is why the call failed.
fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused) = error.downcast_ref::<ConnectError>() {
            return matches!(refused, ConnectError::Refused { .. }).then_some(refused);
        }
        cause = error.source();
    }
    None
}

#[cfg(test)]
mod tests;
