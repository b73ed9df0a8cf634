//! Checks a provider key against its upstream with the family's cheapest authenticated call
//! (listing models, or reading one model when a model is named) and classifies the answer:
//! valid, invalid credentials, no model access, unreachable, or unexpected. The upstream's own
//! message comes back for the operator — with the key scrubbed from it — never the key.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_shared::credential_scrub::CredentialScrubber;
use sluice_shared::families::{Credential, Family};
use sluice_shared::secret::SecretString;
use sluice_shared::upstream_answer::rejects_key;
use sluice_shared::upstream_connect::{GuardedConnector, Resolve, error_chain};

use crate::store::{KeyHealth, Provider, ProviderKind};

const MAX_ANSWER: usize = 64 * 1024;
const MAX_MESSAGE: usize = 300;
const LONGEST_CHECK: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCheck {
    pub health: KeyHealth,
    /// 0 when the upstream could not be reached.
    pub upstream_status: u16,
    pub message: String,
}

type Https = hyper_rustls::HttpsConnector<GuardedConnector>;

/// The key travels only where its provider may reach, judged on each resolved address, like
/// the proxy's: one client for providers with the private-network permission, one without.
pub struct KeyChecker {
    public_only: Client<Https, Empty<Bytes>>,
    private_allowed: Client<Https, Empty<Bytes>>,
}

impl KeyChecker {
    pub fn new(resolver: Arc<dyn Resolve>) -> Self {
        let client = |allow_private_network| {
            let tcp = GuardedConnector::new(
                resolver.clone(),
                allow_private_network,
                Duration::from_secs(5),
            );
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(tcp);
            Client::builder(TokioExecutor::new()).build(https)
        };
        Self {
            public_only: client(false),
            private_allowed: client(true),
        }
    }

    pub async fn check(
        &self,
        provider: &Provider,
        secret: &SecretString,
        model: Option<&str>,
    ) -> KeyCheck {
        let request = match request(provider, secret, model) {
            Ok(request) => request,
            Err(message) => {
                return KeyCheck {
                    health: KeyHealth::Unexpected,
                    upstream_status: 0,
                    message,
                };
            }
        };
        let limit = Duration::from_millis(u64::from(provider.timeout_ms)).min(LONGEST_CHECK);
        let client = if provider.allow_private_network {
            &self.private_allowed
        } else {
            &self.public_only
        };
        let response = match tokio::time::timeout(limit, client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return KeyCheck {
                    health: KeyHealth::Unreachable,
                    upstream_status: 0,
                    message: scrub(
                        &format!(
                            "cannot reach {}: {}",
                            provider.base_url,
                            error_chain(&error)
                        ),
                        secret,
                    ),
                };
            }
            Err(_) => {
                return KeyCheck {
                    health: KeyHealth::Unreachable,
                    upstream_status: 0,
                    message: format!("{} did not answer within {limit:?}", provider.base_url),
                };
            }
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let health = match status.as_u16() {
            200..=299 => KeyHealth::Valid,
            401 => KeyHealth::InvalidCredentials,
            403 => KeyHealth::NoModelAccess,
            404 if model.is_some() => KeyHealth::NoModelAccess,
            // Google answers an unknown key 400 and names the reason in its details.
            code if rejects_key(code, &body) => KeyHealth::InvalidCredentials,
            _ => KeyHealth::Unexpected,
        };
        KeyCheck {
            health,
            upstream_status: status.as_u16(),
            message: scrub(&upstream_message(&body, status), secret),
        }
    }
}

/// The family of a provider kind, whose facts the proxy reaches it by too.
fn family(kind: ProviderKind) -> Family {
    match kind {
        ProviderKind::OpenAi => Family::OpenAi,
        ProviderKind::Vllm | ProviderKind::Custom => Family::SelfHosted,
        ProviderKind::AzureOpenAi => Family::AzureOpenAi,
        ProviderKind::Anthropic => Family::Anthropic,
        ProviderKind::Google => Family::Gemini,
    }
}

/// The family's cheapest authenticated call, with the credential, version and operator
/// headers the proxy sends on traffic.
fn request(
    provider: &Provider,
    secret: &SecretString,
    model: Option<&str>,
) -> Result<Request<Empty<Bytes>>, String> {
    let family = family(provider.kind);
    let base = provider.base_url.trim_end_matches('/');
    let mut url = url::Url::parse(base).map_err(|e| format!("base_url: {e}"))?;
    url.path_segments_mut()
        .map_err(|_| "base_url cannot take a path".to_owned())?
        .pop_if_empty()
        .extend(family.key_check_path(model));
    if let Some(name) = family.version_query() {
        url.query_pairs_mut()
            .append_pair(name, &provider.api_version);
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(url.as_str())
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("sluice/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    for (name, value) in &provider.extra_headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let names = provider.extra_headers.keys().map(String::as_str);
    if let Some((name, value)) = family.version_header_value(&provider.api_version, names) {
        let value = HeaderValue::from_str(value).map_err(|_| "bad api_version".to_owned())?;
        headers.insert(HeaderName::from_static(name), value);
    }
    let (name, value) = match family.credential() {
        Credential::Bearer => (header::AUTHORIZATION, format!("Bearer {}", secret.expose())),
        Credential::Header(name) => (HeaderName::from_static(name), secret.expose().to_owned()),
    };
    let mut value = HeaderValue::from_str(&value)
        .map_err(|_| "the key cannot travel in a header".to_owned())?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(request)
}

/// `error.message` of the family's error body (OpenAI, Anthropic and Google all use it), else
/// the status.
fn upstream_message(body: &[u8], status: http::StatusCode) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["error"]["message"].as_str().map(str::to_owned));
    match message {
        Some(message) => message,
        None if status.is_success() => "the key works".to_owned(),
        None => format!("the upstream answered {status}"),
    }
}

/// The message without the key in it (in any form the upstream echoed it), and not too
/// long to show.
fn scrub(message: &str, secret: &SecretString) -> String {
    let mut text = CredentialScrubber::new(secret.expose())
        .scrub_str(message)
        .into_owned();
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_survives_in_a_message() {
        let secret = SecretString::new("sk-live-0123456789".into());
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-live-0123456789.","type":"invalid_request_error"}}"#;
        let message = scrub(
            &upstream_message(body, http::StatusCode::UNAUTHORIZED),
            &secret,
        );
        assert_eq!(message, "Incorrect API key provided: [redacted].");
        assert_eq!(
            upstream_message(b"<html>", http::StatusCode::BAD_GATEWAY),
            "the upstream answered 502 Bad Gateway"
        );
        assert!(scrub(&"x".repeat(1000), &secret).chars().count() <= MAX_MESSAGE + 1);
    }
}
