//! Forwarding to a deployment: deployments in priority order (weighted within a priority),
//! each provider's keys in turn when one is refused, falling back on failures that happen
//! before the answer starts; the answer streamed back as it arrives, or read whole, metered,
//! and translated back where the family speaks another format.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use rand::Rng;
use serde_json::Value;
use sluice_proto::usage::v1 as pb;
use sluice_shared::credential_scrub::CredentialScrubber;
use sluice_shared::error_code::ErrorCode;
use sluice_shared::upstream_answer::rejects_key;

use crate::error_response::GatewayError;
use crate::families::translation::{ChatChunks, ChatTranslation, ChunkIdentity, TranslatedStream};
use crate::gateway::Gateway;
use crate::http_body::{Body, BoxError, full};
use crate::metering::draft::UsageDraft;
use crate::metering::metered_body::MeteredBody;
use crate::operation::Operation;
use crate::request::fields::ChatRequest;
use crate::routing::tables::{
    DeploymentEntry, ModelEntry, ProviderEntry, ProviderKeyEntry, RoutingTables,
};
use crate::sse::Usage;
use crate::upstream::UpstreamError;

/// Largest non-streamed upstream answer read into memory.
const MAX_UPSTREAM_BODY: usize = 32 * 1024 * 1024;
/// Longest upstream message Sluice quotes in an error of its own.
const MAX_QUOTED_MESSAGE: usize = 1024;
const MAX_ATTEMPTS: usize = 3;

/// Deployments in the order to try them: by priority, weighted-random within a priority,
/// skipping those whose provider has no usable key.
fn attempt_order<'t>(tables: &'t RoutingTables, model: &'t ModelEntry) -> Vec<&'t DeploymentEntry> {
    // The common case: one deployment, nothing to order.
    if let [only] = model.deployments.as_slice() {
        let usable = tables
            .providers
            .get(only.provider)
            .is_some_and(|p| p.keyless || !p.keys.is_empty());
        return if usable { vec![only] } else { Vec::new() };
    }
    let mut usable: Vec<&DeploymentEntry> = model
        .deployments
        .iter()
        .filter(|d| {
            tables
                .providers
                .get(d.provider)
                .is_some_and(|p| p.keyless || !p.keys.is_empty())
        })
        .collect();
    let mut rng = rand::rng();
    let mut ordered = Vec::with_capacity(usable.len());
    while !usable.is_empty() {
        let priority = usable[0].priority;
        let group_end = usable
            .iter()
            .position(|d| d.priority != priority)
            .unwrap_or(usable.len());
        let mut group: Vec<&DeploymentEntry> = usable.drain(..group_end).collect();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|d| u64::from(d.weight)).sum();
            let mut pick = rng.random_range(0..total.max(1));
            let index = group
                .iter()
                .position(|d| {
                    let weight = u64::from(d.weight);
                    if pick < weight {
                        true
                    } else {
                        pick -= weight;
                        false
                    }
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

pub async fn forward(
    gateway: &Arc<Gateway>,
    tables: &Arc<RoutingTables>,
    model: &ModelEntry,
    chat: &ChatRequest<'_>,
    mut draft: UsageDraft,
    operation: Operation,
) -> Result<Response<Body>, GatewayError> {
    if gateway.spool.refusing() {
        return Err(GatewayError::new(
            ErrorCode::UsageSpoolFull,
            "the usage spool is full because the control plane has not acknowledged usage for a while; live requests are refused until it drains, so that no cost goes unmetered",
        ));
    }
    let stream = chat.stream;
    let order = attempt_order(tables, model);
    if order.is_empty() {
        return Err(GatewayError::new(
            ErrorCode::ProviderNotReady,
            format!(
                "model '{}' has no deployment with a usable provider key: add a key with `sluicectl provider-key add`",
                model.name
            ),
        ));
    }
    let mut last_error = None;
    // Each attempt is a deployment and which of its provider's keys to use: a key the
    // upstream refuses is followed by the provider's next one before the next deployment.
    let mut attempts: std::collections::VecDeque<(&DeploymentEntry, usize)> = order
        .into_iter()
        .map(|deployment| (deployment, 0))
        .collect();
    let mut tried = 0;
    // Whether any attempt reached an upstream (so the request must leave a usage record),
    // and whether one went unanswered in time.
    let (mut reached, mut timed_out) = (false, false);
    draft.prompt = chat.messages_bytes();
    while let Some((deployment, key_index)) = attempts.pop_front() {
        if tried == MAX_ATTEMPTS {
            break;
        }
        tried += 1;
        let Some(provider) = tables.providers.get(deployment.provider) else {
            continue;
        };
        // A deployment whose family offers no such operation is passed over.
        let translation = match operation {
            Operation::ChatCompletions if deployment.uri(operation).is_none() => {
                provider.family.chat_translation()
            }
            _ => None,
        };
        let uri = match translation {
            Some(translation) => deployment.uri(translation.operation(stream)),
            None => deployment.uri(operation),
        };
        let Some(uri) = uri else {
            last_error = Some(GatewayError::new(
                ErrorCode::ProviderNotReady,
                format!(
                    "provider '{}' is {:?}, which offers no {}: serve model '{}' from a provider that does",
                    provider.name,
                    provider.provider_type,
                    operation.path(),
                    model.name
                ),
            ));
            continue;
        };
        let key = provider.keys.get(key_index);
        let credential = match key {
            Some(key) => Some(tables.open_key(key).map_err(|_| {
                GatewayError::new(ErrorCode::Internal, "a provider key could not be opened")
            })?),
            None if provider.keyless => None,
            None => continue,
        };
        let payload = match translation {
            Some(translation) => {
                let translated = translation.request(
                    &chat.json(),
                    &deployment.upstream_model,
                    gateway.default_max_output_tokens,
                )?;
                Bytes::from(translated.to_string())
            }
            None => chat.upstream_body(
                (!operation.is_gemini()).then_some(deployment.upstream_model.as_str()),
                operation == Operation::ChatCompletions,
            )?,
        };
        draft.record.provider_id = provider.id.clone();
        gateway
            .metrics
            .upstream_requests_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let sent = gateway
            .upstream
            .post_json(provider, uri, credential.as_ref(), accept, payload)
            .await;
        // Everything the upstream sends back may echo the key: it is looked for in every byte
        // that leaves the proxy (headers always; bodies and messages of errors).
        let scrubber = credential
            .as_ref()
            .map(|credential| CredentialScrubber::new(credential.expose()))
            .unwrap_or_default();
        drop(credential);
        let response = match sent {
            Ok(response) => {
                reached = true;
                response
            }
            Err(UpstreamError::Timeout(after)) => {
                // Sent, unanswered: the upstream may be working on (and billing) the prompt.
                reached = true;
                timed_out = true;
                last_error = Some(GatewayError::new(
                    ErrorCode::UpstreamTimeout,
                    format!(
                        "provider '{}' sent no answer within {after:?}",
                        provider.name
                    ),
                ));
                continue;
            }
            Err(UpstreamError::Refused(why)) => {
                // Configuration, not trouble upstream: the operator must fix where it points.
                last_error = Some(GatewayError::new(
                    ErrorCode::ProviderNotReady,
                    format!(
                        "provider '{}' points where it may not connect: {why}; fix its base_url (or its allow_private_network) with `sluicectl provider update`",
                        provider.name
                    ),
                ));
                continue;
            }
            Err(error) => {
                let message = format!("provider '{}': {error}", provider.name);
                last_error = Some(GatewayError::new(
                    ErrorCode::UpstreamUnavailable,
                    scrubber.scrub_str(&message),
                ));
                continue;
            }
        };
        let status = response.status();
        if status.is_server_error() {
            last_error = Some(GatewayError::new(
                ErrorCode::UpstreamUnavailable,
                format!("provider '{}' answered {status}", provider.name),
            ));
            continue;
        }
        if status.is_redirection() {
            last_error = Some(GatewayError::new(
                ErrorCode::UpstreamUnavailable,
                format!(
                    "provider '{}' answered a redirect, which is never followed",
                    provider.name
                ),
            ));
            continue;
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            last_error = Some(GatewayError::new(
                ErrorCode::UpstreamRateLimited,
                format!("provider '{}' is rate limiting (429)", provider.name),
            ));
            continue;
        }
        draft.record.http_status = u32::from(status.as_u16());
        if stream && status.is_success() {
            return Ok(match translation {
                Some(translation) => translated_stream_back(
                    gateway,
                    response,
                    draft,
                    provider.timeout,
                    translation,
                    &model.name,
                    chat.asks_stream_usage(),
                    scrubber,
                ),
                None => stream_back(gateway, response, draft, provider.timeout, scrubber),
            });
        }
        let (parts, incoming) = response.into_parts();
        let answer = match read_answer(incoming, provider.timeout).await {
            Ok(answer) => answer,
            Err(error) => {
                // The upstream was reached and may have billed the prompt: the request still
                // leaves its one usage record, an estimate.
                let usage = Usage {
                    input_tokens: draft.prompt_estimate(),
                    ..Usage::default()
                };
                draft.finish(
                    gateway,
                    error.code.http_status(),
                    usage,
                    pb::UsageSource::Estimated,
                );
                return Err(error);
            }
        };
        let answer = match scrubber.scrub(&answer) {
            std::borrow::Cow::Borrowed(_) => answer,
            std::borrow::Cow::Owned(clean) => Bytes::from(clean),
        };
        // Read first: some families refuse a key with a status that also means other things
        // (Google: 400, named in the body).
        if rejects_key(status.as_u16(), &answer) {
            if let Some(next) = next_key(provider, key_index) {
                last_error = Some(note_rejected(&mut draft, key, provider, status));
                attempts.push_front((deployment, next));
                continue;
            }
            return Err(key_rejected(gateway, draft, key, provider, status));
        }
        return match translation {
            Some(translation) => translated_back(
                gateway,
                &parts,
                &answer,
                draft,
                translation,
                &model.name,
                &scrubber,
            ),
            None => Ok(whole_back(
                gateway, parts, answer, draft, operation, &scrubber,
            )),
        };
    }
    let error = last_error.unwrap_or_else(|| {
        GatewayError::new(ErrorCode::ProviderNotReady, "no deployment could be tried")
    });
    // A request that reached an upstream leaves its one record whatever the outcome — and a
    // key refused on the way reaches the control plane with it.
    let rejected = !draft.record.rejected_key_id.is_empty();
    if reached || rejected {
        let (usage, source) = if timed_out {
            let usage = Usage {
                input_tokens: draft.prompt_estimate(),
                ..Usage::default()
            };
            (usage, pb::UsageSource::Estimated)
        } else if rejected {
            (Usage::default(), pb::UsageSource::ProviderReported)
        } else {
            // 5xx and 429 answers generate nothing.
            (Usage::default(), pb::UsageSource::Estimated)
        };
        draft.finish(gateway, error.code.http_status(), usage, source);
    }
    Err(error)
}

fn stream_back(
    gateway: &Arc<Gateway>,
    response: Response<Incoming>,
    mut draft: UsageDraft,
    idle: std::time::Duration,
    scrubber: CredentialScrubber,
) -> Response<Body> {
    draft.spool_start(gateway);
    let (parts, incoming) = response.into_parts();
    let mut headers = http::HeaderMap::new();
    copy_response_headers(&parts.headers, &mut headers, &scrubber);
    let body = MeteredBody::new(incoming, draft, gateway.clone(), idle, scrubber);
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    *out.headers_mut() = headers;
    out
}

/// The provider's key after `key_index`, if it has one.
fn next_key(provider: &ProviderEntry, key_index: usize) -> Option<usize> {
    (key_index + 1 < provider.keys.len()).then_some(key_index + 1)
}

/// Notes on the usage record that the upstream refused this key, so that the control plane
/// marks it (whatever the request's outcome), and returns the error to answer if nothing
/// else works.
fn note_rejected(
    draft: &mut UsageDraft,
    key: Option<&ProviderKeyEntry>,
    provider: &ProviderEntry,
    status: StatusCode,
) -> GatewayError {
    if let Some(key) = key {
        draft.record.rejected_key_id = key.id.clone();
        draft.record.upstream_status = u32::from(status.as_u16());
    }
    GatewayError::new(
        ErrorCode::ProviderKeyInvalid,
        format!(
            "provider '{}' rejected its key ({status}): replace it with `sluicectl provider-key rotate`",
            provider.name
        ),
    )
}

/// The upstream refused the provider key and no other is left to try: reported with the
/// usage record, and answered `provider_key_invalid`.
fn key_rejected(
    gateway: &Arc<Gateway>,
    mut draft: UsageDraft,
    key: Option<&ProviderKeyEntry>,
    provider: &ProviderEntry,
    status: StatusCode,
) -> GatewayError {
    let error = note_rejected(&mut draft, key, provider, status);
    if key.is_some() {
        draft.finish(
            gateway,
            ErrorCode::ProviderKeyInvalid.http_status(),
            Usage::default(),
            pb::UsageSource::ProviderReported,
        );
    }
    error
}

/// A streamed answer to a translated chat request, relayed as OpenAI chunks as it arrives
/// (metered underneath like any stream).
#[allow(clippy::too_many_arguments)]
fn translated_stream_back(
    gateway: &Arc<Gateway>,
    response: Response<Incoming>,
    mut draft: UsageDraft,
    idle: std::time::Duration,
    translation: &dyn ChatTranslation,
    model_name: &str,
    include_usage: bool,
    scrubber: CredentialScrubber,
) -> Response<Body> {
    draft.spool_start(gateway);
    let identity = ChunkIdentity::new(
        &draft.record.request_id,
        model_name,
        sluice_shared::time::now_us() / 1_000_000,
    );
    let (parts, incoming) = response.into_parts();
    let mut headers = http::HeaderMap::new();
    copy_response_headers(&parts.headers, &mut headers, &scrubber);
    let metered = MeteredBody::new(incoming, draft, gateway.clone(), idle, scrubber);
    let body = TranslatedStream::new(
        metered,
        translation.stream_events(),
        ChatChunks::new(identity, include_usage),
    );
    let mut out = Response::new(Body::new(body));
    *out.headers_mut() = headers;
    // The body is OpenAI's event stream now, whatever the upstream labelled its own.
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    out
}

/// A whole upstream answer, bounded in size and in time: an upstream that sends its headers
/// and then stalls is given up on after the provider's timeout, like one that sends nothing.
async fn read_answer(
    incoming: Incoming,
    within: std::time::Duration,
) -> Result<Bytes, GatewayError> {
    let read = Limited::new(incoming, MAX_UPSTREAM_BODY).collect();
    match tokio::time::timeout(within, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => Err(GatewayError::new(
            ErrorCode::UpstreamUnavailable,
            format!("the provider's answer broke off: {}", BoxError::from(error)),
        )),
        Err(_) => Err(GatewayError::new(
            ErrorCode::UpstreamTimeout,
            format!("the provider's answer did not finish within {within:?}"),
        )),
    }
}

/// A whole answer to a translated chat request: metered from the family's usage and
/// returned as a `chat.completion`; the upstream's refusal becomes an OpenAI-shaped error.
fn translated_back(
    gateway: &Arc<Gateway>,
    parts: &http::response::Parts,
    bytes: &Bytes,
    mut draft: UsageDraft,
    translation: &dyn ChatTranslation,
    model_name: &str,
    scrubber: &CredentialScrubber,
) -> Result<Response<Body>, GatewayError> {
    let answer: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    if !parts.status.is_success() {
        // Both families put the message at error.message.
        let message = answer["error"]["message"].as_str().unwrap_or("no message");
        let quoted = format!(
            "{} refused the request ({}): {}",
            translation.family(),
            parts.status,
            truncated(message, MAX_QUOTED_MESSAGE)
        );
        let error = GatewayError::new(ErrorCode::InvalidRequest, quoted);
        // Refused upstream: nothing was generated, and the refusal is still recorded.
        draft.finish(
            gateway,
            error.code.http_status(),
            Usage::default(),
            pb::UsageSource::Estimated,
        );
        return Err(error);
    }
    let reported = translation.usage(bytes);
    let identity = ChunkIdentity::new(
        &draft.record.request_id,
        model_name,
        sluice_shared::time::now_us() / 1_000_000,
    );
    let chat = translation.response(&answer, &reported.unwrap_or_default(), &identity);
    match reported {
        Some(usage) => draft.finish(gateway, 200, usage, pb::UsageSource::ProviderReported),
        // No usage block: counted by Sluice and labelled so, never a zero "reported".
        None => {
            let usage = Usage {
                input_tokens: draft.prompt_estimate(),
                output_tokens: crate::mock_posture::estimate_tokens(answered_chars(&chat)),
                ..Usage::default()
            };
            draft.finish(gateway, 200, usage, pb::UsageSource::Estimated);
        }
    }
    let mut out = Response::new(full(chat.to_string()));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    copy_response_headers(&parts.headers, out.headers_mut(), scrubber);
    Ok(out)
}

/// Characters a `chat.completion` answered with (text and tool-call arguments), for an
/// estimate when the upstream reported no usage.
fn answered_chars(chat: &Value) -> usize {
    let choices = chat["choices"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    choices
        .iter()
        .map(|choice| {
            let message = &choice["message"];
            let text = message["content"].as_str().map_or(0, |t| t.chars().count());
            let calls: usize = message["tool_calls"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|call| call["function"]["arguments"].as_str())
                .map(|arguments| arguments.chars().count())
                .sum();
            text + calls
        })
        .sum()
}

/// At most `limit` bytes of `text`, cut on a character boundary.
fn truncated(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn whole_back(
    gateway: &Arc<Gateway>,
    parts: http::response::Parts,
    bytes: Bytes,
    mut draft: UsageDraft,
    operation: Operation,
    scrubber: &CredentialScrubber,
) -> Response<Body> {
    let reported = if operation.is_gemini() {
        crate::sse::usage_from_gemini_answer(&bytes)
    } else {
        crate::sse::usage_from_answer(&bytes)
    };
    let status = parts.status.as_u16();
    match reported {
        Some(usage) => draft.finish(gateway, status, usage, pb::UsageSource::ProviderReported),
        None => {
            let usage = Usage {
                input_tokens: if parts.status.is_success() {
                    draft.prompt_estimate()
                } else {
                    0
                },
                ..Usage::default()
            };
            draft.finish(gateway, status, usage, pb::UsageSource::Estimated)
        }
    }
    let mut out = Response::new(full(bytes));
    *out.status_mut() = parts.status;
    copy_response_headers(&parts.headers, out.headers_mut(), scrubber);
    out
}

/// Only headers that describe the answer travel back; hop-by-hop and upstream infrastructure
/// headers stay behind, and so does any header whose value echoes the credential.
fn copy_response_headers(
    from: &http::HeaderMap,
    to: &mut http::HeaderMap,
    scrubber: &CredentialScrubber,
) {
    let clean = |value: &HeaderValue| !scrubber.found_in(value.as_bytes());
    for name in [
        header::CONTENT_TYPE,
        header::CACHE_CONTROL,
        header::RETRY_AFTER,
    ] {
        if let Some(value) = from.get(&name).filter(|value| clean(value)) {
            to.insert(name, value.clone());
        }
    }
    for (name, value) in from {
        if (name.as_str().starts_with("x-ratelimit-")
            || name.as_str().starts_with("anthropic-ratelimit-")
            || name.as_str() == "openai-processing-ms")
            && clean(value)
        {
            to.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_proto::config::v1 as pb;

    use super::*;

    /// Model `m` with deployments `a` (weight 1) and `b` (weight 3) at priority 0, and `c` at
    /// priority 1, all on the fixture's provider.
    fn tables() -> RoutingTables {
        let mut fixture = crate::routing::tests::fixture();
        let deployment = |upstream_model: &str, weight, priority| pb::DeploymentConfig {
            provider_id: "pr1".into(),
            upstream_model: upstream_model.into(),
            weight,
            priority,
        };
        fixture.snapshot.models[0].deployments = vec![
            deployment("c", 1, 1),
            deployment("a", 1, 0),
            deployment("b", 3, 0),
        ];
        RoutingTables::build(&fixture.snapshot, &fixture.sealing, &[]).unwrap()
    }

    #[test]
    fn priorities_come_in_order_and_weights_share_the_first_place() {
        let tables = tables();
        let model = &tables.models[0];
        const DRAWS: usize = 4000;
        let mut b_first = 0;
        for _ in 0..DRAWS {
            let order: Vec<&str> = attempt_order(&tables, model)
                .iter()
                .map(|d| d.upstream_model.as_str())
                .collect();
            assert_eq!(order.len(), 3, "{order:?}");
            assert_eq!(order[2], "c", "the fallback priority comes last: {order:?}");
            if order[0] == "b" {
                b_first += 1;
            }
        }
        // Weight 3 of 4: first three times in four. Four standard deviations of a binomial
        // over 4000 draws is about 2.7 percentage points.
        let share = b_first as f64 / DRAWS as f64;
        assert!(
            (0.72..=0.78).contains(&share),
            "b first in {share:.3} of draws"
        );
    }

    #[test]
    fn a_provider_without_a_usable_key_is_passed_over() {
        let mut fixture = crate::routing::tests::fixture();
        fixture.snapshot.providers[0].keys.clear();
        let tables = RoutingTables::build(&fixture.snapshot, &fixture.sealing, &[]).unwrap();
        assert!(attempt_order(&tables, &tables.models[0]).is_empty());
    }
}
