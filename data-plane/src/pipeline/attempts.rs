//! The attempt loop of a LIVE request: its deployments in order (by priority and weight), each
//! call made and its outcome classified as an [`UpstreamFailure`] or handed to [`answer`]. A
//! failure before the answer starts is retried, or moves to the provider's next key or the
//! next deployment, as the [`retry`](crate::pipeline::retry) policy says; the request's one
//! usage record says what the attempts cost, and how many there were, whatever the outcome.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use sluice_proto::usage::v1 as pb;
use sluice_shared::credential_scrub::CredentialScrubber;
use sluice_shared::error_code::ErrorCode;

use crate::answers::Usage;
use crate::error_response::GatewayError;
use crate::gateway::Gateway;
use crate::http_body::Body;
use crate::metering::draft::UsageDraft;
use crate::metering::tally::RequestTally;
use crate::operation::Operation;
use crate::pipeline::answer::{Answering, Translator, Unanswered, answer};
use crate::pipeline::failure::UpstreamFailure;
use crate::pipeline::retry::{Move, Place};
use crate::request::fields::ChatRequest;
use crate::resilience::outliers::Standing;
use crate::resilience::retry_after::retry_after;
use crate::resilience::retry_budget;
use crate::resilience::timeout_policy::{Deadlines, TimeoutKind};
use crate::routing::attempt_order::attempt_order;
use crate::routing::tables::{DeploymentEntry, ModelEntry, ProviderEntry, RoutingTables};
use crate::telemetry::RequestTrace;
use crate::telemetry::request_trace::AttemptSpan;
use crate::upstream::JsonPost;
use sluice_otlp::ShortText;

pub async fn forward(
    gateway: &Arc<Gateway>,
    tables: &Arc<RoutingTables>,
    model: &ModelEntry,
    chat: &ChatRequest<'_>,
    mut draft: UsageDraft,
    asked_total: Option<Duration>,
    tally: &mut RequestTally,
) -> Result<Response<Body>, GatewayError> {
    let operation = draft.operation;
    if gateway.spool.refusing() {
        return Err(GatewayError::new(
            ErrorCode::UsageSpoolFull,
            "the usage spool is full because the control plane has not acknowledged usage for a while; live requests are refused until it drains, so that no cost goes unmetered",
        ));
    }
    let now_ms = u64::try_from(draft.record.started_at_us / 1_000).unwrap_or(0);
    let (order, panicking) = without_ejected(attempt_order(tables, model), now_ms);
    if order.is_empty() {
        return Err(GatewayError::new(
            ErrorCode::ProviderNotReady,
            format!(
                "model '{}' has no deployment with a usable provider key: add a key with `sluicectl provider-key add`",
                model.name
            ),
        ));
    }
    retry_budget::deposit(second_of(draft.record.started_at_us));
    let mut outcome = Outcome::default();
    draft.prompt = chat.messages_bytes();
    let trace = draft.trace.clone();
    let mut at = Attempt::default();
    let mut wait = None;
    // Why the next attempt is made, for its span.
    let mut retried = None;
    while let Some(&deployment) = order.get(at.deployment) {
        // The deployment's own policy: its provider's and its model's settings.
        let policy = &deployment.retry;
        if at.total >= policy.max_attempts {
            break;
        }
        let Some(provider) = tables.providers.get(deployment.provider) else {
            at.next_deployment();
            continue;
        };
        if at.on_deployment == 0
            && !panicking
            && deployment.health.standing(now_ms) == Standing::Lapsed
            && !deployment.health.claim_probe(now_ms)
        {
            // Another request is probing it: it stays out until the probe says.
            at.next_deployment();
            continue;
        }
        if at.on_key == 0 {
            at.key = usable_key(provider, at.key, now_ms);
        }
        let Some((uri, translator)) = route(deployment, provider, operation, chat.stream) else {
            outcome.last_error = Some(GatewayError::new(
                ErrorCode::ProviderNotReady,
                format!(
                    "provider '{}' is {:?}, which offers no {}: serve model '{}' from a provider that does",
                    provider.name,
                    provider.provider_type,
                    operation.path(),
                    model.name
                ),
            ));
            at.next_deployment();
            continue;
        };
        let key = provider.keys.get(at.key);
        let credential = match key {
            Some(key) => Some(tables.open_key(key).map_err(|_| {
                GatewayError::new(ErrorCode::Internal, "a provider key could not be opened")
            })?),
            None if provider.keyless => None,
            None => {
                at.next_deployment();
                continue;
            }
        };
        let payload = match payload(gateway, chat, deployment, operation, translator) {
            Ok(payload) => payload,
            Err(error) => return Err(outcome.fail(draft, error, tally)),
        };
        // The request's total counts from its start, with the deployment's own setting.
        let deadlines = |asked| Deadlines::new(deployment.timeouts, draft.started, asked);
        if let Some(wait) = wait.take() {
            if !deadlines(asked_total).leaves_room_for(wait) {
                // The wait would outlast the request: the last failure is its answer.
                break;
            }
            tokio::time::sleep(wait).await;
        }
        let deadlines = deadlines(asked_total);
        if deadlines.total_expired() {
            let expiry = deadlines.expired(TimeoutKind::Total, false);
            let error = UpstreamFailure::TimedOut(expiry).to_error(&provider.name);
            return Err(outcome.fail(draft, error, tally));
        }
        at.count();
        draft.record.provider_id = provider.id.clone();
        draft.series = deployment.series.clone();
        tally.series = Some(deployment.series.clone());
        draft.record.attempts = at.total;
        gateway
            .metrics
            .upstream_requests_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if at.total > 1 {
            gateway
                .metrics
                .upstream_retries_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let accept = if chat.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut attempt_span = trace
            .as_ref()
            .filter(|trace| trace.sampled())
            .map(|trace| attempt_span(trace, at.total, provider, deployment, uri));
        if let Some(span) = &mut attempt_span {
            span.retry = retried.take();
        }
        let reached_before = draft.has_reached_upstream();
        draft.set_reached_upstream(true);
        let trace_headers = trace
            .as_ref()
            .filter(|_| provider.send_trace_context)
            .and_then(|trace| trace.upstream_headers(attempt_span.as_ref().map(|s| &s.span_id)));
        let waited_from = std::time::Instant::now();
        let sent = gateway
            .upstream
            .post_json(
                provider,
                uri,
                credential.as_ref(),
                JsonPost {
                    accept,
                    body: payload,
                    trace: trace_headers.as_ref(),
                },
                &deadlines,
            )
            .await;
        draft.upstream_wait += waited_from.elapsed();
        // Everything the upstream sends back may echo the key: it is looked for in every byte
        // that leaves the proxy (headers always; bodies and messages of errors).
        let scrubber = credential
            .as_ref()
            .map(|credential| CredentialScrubber::new(credential.expose()))
            .unwrap_or_default();
        drop(credential);
        let mut scrubber = scrubber;
        if let (Some(span), Ok(response)) = (&mut attempt_span, &sent) {
            span.upstream_status = Some(response.status().as_u16());
        }
        let mut asked_to_wait = None;
        let failure = match sent {
            Ok(response) => match UpstreamFailure::of_status(response.status()) {
                Some(failure) => {
                    asked_to_wait = retry_after(response.headers(), std::time::SystemTime::now());
                    if asked_to_wait.is_none()
                        && matches!(failure, UpstreamFailure::RateLimited(_))
                        && let Some(read) = provider.family.rate_limit_wait_in_body()
                    {
                        asked_to_wait = wait_in_body(response.into_body(), read).await;
                    }
                    failure
                }
                None => {
                    let answering = Answering {
                        model_name: &model.name,
                        chat,
                        deadlines,
                    };
                    let translated = answer(
                        response,
                        draft,
                        translator,
                        chat.stream,
                        scrubber,
                        &answering,
                        tally,
                    );
                    let translated = translated.await;
                    if let (Some(trace), Some(span)) = (&trace, attempt_span.take()) {
                        let failed = match &translated {
                            Ok(_) => None,
                            Err(Unanswered::Refused(error)) => Some(error.code),
                            Err(Unanswered::Failed(failed)) => {
                                Some(failed.failure.to_error(&provider.name).code)
                            }
                        };
                        trace.attempt_done(span, failed);
                    }
                    match translated {
                        Ok(mut response) => {
                            deployment.health.succeeded();
                            if let Some(key) = key {
                                key.health.succeeded();
                            }
                            if at.total > 1 {
                                say_who_answered(&mut response, at.total, provider, deployment);
                            }
                            return Ok(response);
                        }
                        Err(Unanswered::Refused(error)) => return Err(error),
                        Err(Unanswered::Failed(failed)) => {
                            draft = failed.draft;
                            scrubber = failed.scrubber;
                            failed.failure
                        }
                    }
                }
            },
            Err(error) => UpstreamFailure::from(error),
        };
        draft.set_reached_upstream(reached_before || failure.reached_upstream());
        outcome.may_have_billed |= failure.may_have_billed();
        let mut error = failure.to_error(&provider.name);
        if let (Some(trace), Some(span)) = (&trace, attempt_span.take()) {
            trace.attempt_done(span, Some(error.code));
        }
        error.message = scrubber.scrub_str(&error.message).into_owned();
        // Should this be the answer, the client hears how long the upstream asked it to wait.
        error.retry_after = asked_to_wait;
        if let (Some(key), UpstreamFailure::KeyRejected(status)) = (key, &failure) {
            // The control plane hears of the refused key with the record, whatever the
            // request's outcome.
            draft.record.rejected_key_id = key.id.clone();
            draft.record.upstream_status = u32::from(status.as_u16());
        }
        match (&failure, key, asked_to_wait) {
            (UpstreamFailure::RateLimited(_), Some(key), Some(wait)) => {
                key.health.cool(now_ms, wait);
            }
            (UpstreamFailure::RateLimited(_), ..) => {}
            _ if failure.retryable() && deployment.health.failed(now_ms, gateway.ejection) => {
                gateway
                    .metrics
                    .upstream_ejections_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    provider = %provider.name,
                    upstream_model = %deployment.upstream_model,
                    "a deployment failed too often in a row and is ejected for a while"
                );
            }
            _ => {}
        }
        let place = Place {
            on_deployment: at.on_deployment,
            on_key: at.on_key,
            has_next_key: at.key + 1 < provider.keys.len(),
        };
        let budget = || {
            retry_budget::withdraw(
                second_of(sluice_shared::time::now_us()),
                gateway.retry_budget,
            )
        };
        let mut next = policy.next_move(&failure, asked_to_wait, place, budget);
        if matches!(next, Move::Again(_))
            && matches!(deployment.health.standing(now_ms), Standing::Out(_))
            && at.deployment + 1 < order.len()
        {
            // It has just been ejected: the next deployment rather than the same again.
            next = Move::NextDeployment;
        }
        let moved = match next {
            Move::Again(after) => {
                wait = Some(after);
                "same_key"
            }
            Move::NextKey => {
                at.next_key();
                "next_key"
            }
            Move::NextDeployment => {
                at.next_deployment();
                "next_deployment"
            }
            Move::Stop => return Err(outcome.fail(draft, error, tally)),
        };
        retried = Some((error.code, moved));
        outcome.last_error = Some(error);
    }
    let error = outcome.last_error.take().unwrap_or_else(|| {
        GatewayError::new(ErrorCode::ProviderNotReady, "no deployment could be tried")
    });
    Err(outcome.fail(draft, error, tally))
}

/// The span of an attempt about to be made: what it calls, and where.
fn attempt_span(
    trace: &RequestTrace,
    number: u32,
    provider: &ProviderEntry,
    deployment: &DeploymentEntry,
    uri: &http::Uri,
) -> AttemptSpan {
    let mut span = trace.attempt(number);
    span.provider_name = provider.provider_type.gen_ai_provider_name();
    span.upstream_model = ShortText::new(&deployment.upstream_model);
    span.server_address = ShortText::new(uri.host().unwrap_or_default());
    span.server_port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    span
}

/// Where the attempts stand: which deployment (its place in the order) and which of its
/// provider's keys comes next, and how many attempts were made in all, at the deployment and
/// with the key.
#[derive(Debug, Default)]
struct Attempt {
    deployment: usize,
    key: usize,
    total: u32,
    on_deployment: u32,
    on_key: u32,
}

impl Attempt {
    fn count(&mut self) {
        self.total += 1;
        self.on_deployment += 1;
        self.on_key += 1;
    }

    fn next_key(&mut self) {
        self.key += 1;
        self.on_key = 0;
    }

    fn next_deployment(&mut self) {
        self.deployment += 1;
        self.key = 0;
        self.on_deployment = 0;
        self.on_key = 0;
    }
}

/// The order without its ejected deployments — unless fewer than half of them are left, when
/// every one is tried (Envoy's panic threshold: a model is never left with nothing); and
/// whether that is the case.
fn without_ejected(order: Vec<&DeploymentEntry>, now_ms: u64) -> (Vec<&DeploymentEntry>, bool) {
    let out = |d: &DeploymentEntry| matches!(d.health.standing(now_ms), Standing::Out(_));
    let ejected = order.iter().filter(|d| out(d)).count();
    if ejected == 0 {
        return (order, false);
    }
    if (order.len() - ejected) * 2 < order.len() {
        return (order, true);
    }
    (order.into_iter().filter(|d| !out(d)).collect(), false)
}

/// The first of the provider's keys from `from` on that no upstream asked to wait, or `from`
/// when every one was.
fn usable_key(provider: &ProviderEntry, from: usize, now_ms: u64) -> usize {
    provider
        .keys
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, key)| !matches!(key.health.standing(now_ms), Standing::Out(_)))
        .map_or(from, |(index, _)| index)
}

/// The wait a 429 asks for in its body (for a family that sends no header), read within a
/// small bound of size and time.
async fn wait_in_body(
    body: crate::upstream::UpstreamBody,
    wait_of: crate::families::WaitInBody,
) -> Option<Duration> {
    use http_body_util::BodyExt;
    let read = http_body_util::Limited::new(body, 64 * 1024).collect();
    let bytes = tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .ok()?
        .ok()?
        .to_bytes();
    wait_of(&bytes)
}

fn second_of(us: i64) -> u64 {
    u64::try_from(us / 1_000_000).unwrap_or(0)
}

/// An answer that took more than one attempt says so: how many, and which deployment gave it
/// (`next_action: continue` — the client need do nothing, but may want to know).
fn say_who_answered(
    response: &mut Response<Body>,
    attempts: u32,
    provider: &ProviderEntry,
    deployment: &DeploymentEntry,
) {
    let headers = response.headers_mut();
    headers.insert("x-sluice-attempts", http::HeaderValue::from(attempts));
    let served_by = format!("{}:{}", provider.name, deployment.upstream_model);
    if let Ok(value) = http::HeaderValue::from_str(&served_by) {
        headers.insert("x-sluice-served-by", value);
    }
}

/// What the attempts so far leave for the record.
#[derive(Default)]
struct Outcome {
    last_error: Option<GatewayError>,
    /// An attempt's upstream may have worked on the prompt without answering.
    may_have_billed: bool,
}

impl Outcome {
    /// Ends the request with `error`, and its one usage record if an attempt reached an
    /// upstream: the prompt counted where an upstream may have billed it; otherwise nothing
    /// generated — reported as such when the upstream itself refused the key.
    fn fail(
        &self,
        mut draft: UsageDraft,
        error: GatewayError,
        tally: &mut RequestTally,
    ) -> GatewayError {
        draft.error = Some(error.code);
        if draft.has_reached_upstream() {
            let status = error.code.http_status();
            tally.written = Some(if self.may_have_billed {
                let usage = draft.prompt_only();
                draft.finish(status, usage, pb::UsageSource::Estimated)
            } else if !draft.record.rejected_key_id.is_empty() {
                draft.finish(status, Usage::default(), pb::UsageSource::ProviderReported)
            } else {
                // 5xx and 429 answers generate nothing.
                draft.finish(status, Usage::default(), pb::UsageSource::Estimated)
            });
        }
        error
    }
}

/// Where an attempt at `deployment` goes and how its answer comes back: the operation in the
/// family's own format, else chat completions translated for a family that speaks another;
/// `None` when the family offers neither (the endpoint then refuses the model up front).
pub(crate) fn route<'t>(
    deployment: &'t DeploymentEntry,
    provider: &ProviderEntry,
    operation: Operation,
    stream: bool,
) -> Option<(&'t http::Uri, Translator)> {
    if let Some(uri) = deployment.uri(operation) {
        return Some((
            uri,
            Translator::Native(crate::families::usage_reader(operation)),
        ));
    }
    let translation = match operation {
        Operation::ChatCompletions => provider.family.chat_translation()?,
        _ => return None,
    };
    let uri = deployment.uri(translation.operation(stream))?;
    Some((uri, Translator::Chat(translation)))
}

/// The body an attempt sends: the client's request with the deployment's upstream model (a
/// Gemini path carries the model in its URL instead), or its translation.
fn payload(
    gateway: &Gateway,
    chat: &ChatRequest<'_>,
    deployment: &DeploymentEntry,
    operation: Operation,
    translator: Translator,
) -> Result<Bytes, GatewayError> {
    match translator {
        Translator::Chat(translation) => {
            let translated = translation.request(
                &chat.json(),
                &deployment.upstream_model,
                gateway.default_max_output_tokens,
            )?;
            Ok(Bytes::from(translated.to_string()))
        }
        Translator::Native(_) => chat.upstream_body(
            operation
                .model_in_body()
                .then_some(deployment.upstream_model.as_str()),
            operation == Operation::ChatCompletions,
        ),
    }
}
