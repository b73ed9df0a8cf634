//! The one way an upstream answer goes back to the client — whole or streamed, as the
//! upstream sent it or translated — over its [`Translator`]: the body read (bounded in size
//! and time) or relayed, the credential scrubbed from every byte, each answer parsed once for
//! both the client's bytes and the usage, and the usage draft finished with the honest source.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use sluice_proto::usage::v1 as pb;
use sluice_shared::credential_scrub::CredentialScrubber;
use sluice_shared::error_code::ErrorCode;
use sluice_shared::upstream_answer::rejects_key;

use crate::answers::json_cursor::is_whole_document;
use crate::answers::{StreamReader, Usage, UsageReader};
use crate::error_response::GatewayError;
use crate::families::translation::{
    ChatChunks, ChatTranslation, ChunkIdentity, TranslatedEvents, generated_chars,
};
use crate::http_body::{Body, full};
use crate::metering::answer_stream::AnswerStream;
use crate::metering::draft::UsageDraft;
use crate::metering::tally::RequestTally;
use crate::operation::Operation;
use crate::pipeline::failure::UpstreamFailure;
use crate::request::fields::ChatRequest;
use crate::resilience::timeout_policy::{Deadlines, TimeoutKind};
use crate::telemetry::content_capture::OutputCapture;
use crate::telemetry::response_facts::{ResponseFacts, StreamFacts};
use crate::upstream::UpstreamBody;

/// Largest non-streamed upstream answer read into memory.
const MAX_UPSTREAM_BODY: usize = 32 * 1024 * 1024;
/// Longest upstream message Sluice quotes in an error of its own.
const MAX_QUOTED_MESSAGE: usize = 1024;

/// How an answer reaches the client.
#[derive(Clone, Copy)]
pub enum Translator {
    /// As the upstream sent it: the client called the family's own API. Only its usage is read.
    Native(&'static dyn UsageReader),
    /// Translated to OpenAI's chat format.
    Chat(&'static dyn ChatTranslation),
}

/// What answering needs besides the answer itself.
pub struct Answering<'a> {
    /// The model as the client named it (translated answers carry it).
    pub model_name: &'a str,
    /// The client's request (a translated stream ends with a usage chunk if it asked,
    /// `stream_options.include_usage`).
    pub chat: &'a ChatRequest<'a>,
    /// Bound the wait for a stream's first event, between chunks, and the whole answer.
    pub deadlines: Deadlines,
}

pub struct Failed {
    pub failure: UpstreamFailure,
    pub draft: UsageDraft,
    pub scrubber: CredentialScrubber,
}

/// Why an answer did not go back as a success.
pub enum Unanswered {
    /// The attempt failed; the draft and the scrubber are handed back for the attempt loop to
    /// decide.
    Failed(Box<Failed>),
    /// The upstream refused the request and the refusal is the answer (recorded already).
    Refused(GatewayError),
}

pub async fn answer(
    response: Response<UpstreamBody>,
    mut draft: UsageDraft,
    translator: Translator,
    stream: bool,
    scrubber: CredentialScrubber,
    answering: &Answering<'_>,
    tally: &mut RequestTally,
) -> Result<Response<Body>, Unanswered> {
    let (parts, incoming) = response.into_parts();
    // What the answer's body speaks: a translated request's is its upstream family's own.
    let upstream_format = match translator {
        Translator::Native(_) => draft.operation,
        Translator::Chat(translation) => translation.operation(stream),
    };
    let mut headers = http::HeaderMap::new();
    copy_response_headers(&parts.headers, &mut headers, &scrubber);
    draft.record.http_status = u32::from(parts.status.as_u16());
    if stream && parts.status.is_success() {
        let reader: Box<dyn StreamReader> = match translator {
            Translator::Native(usage) => usage.stream(),
            Translator::Chat(translation) => {
                let chunks = ChatChunks::new(
                    identity(&draft, answering),
                    answering.chat.asks_stream_usage(),
                );
                Box::new(TranslatedEvents::new(translation, chunks))
            }
        };
        if reader.translates() {
            // The body is OpenAI's event stream now, whatever the upstream labelled its own.
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        draft.spool_start();
        say_overhead(&draft, &mut headers);
        let facts = stream_facts(&draft, upstream_format);
        let body = AnswerStream::new(
            incoming,
            reader,
            draft,
            answering.deadlines,
            scrubber,
            facts,
        );
        tally.streamed = true;
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = parts.status;
        *out.headers_mut() = headers;
        return Ok(out);
    }
    let reading = std::time::Instant::now();
    let read = read_whole(incoming, &answering.deadlines).await;
    draft.upstream_wait += reading.elapsed();
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(failure) => {
            return Err(Unanswered::Failed(Box::new(Failed {
                failure,
                draft,
                scrubber,
            })));
        }
    };
    let bytes = match scrubber.scrub(&bytes) {
        std::borrow::Cow::Borrowed(_) => bytes,
        std::borrow::Cow::Owned(clean) => Bytes::from(clean),
    };
    // Read first: some families refuse a key with a status that also means other things
    // (Google: 400, named in the body).
    if rejects_key(parts.status.as_u16(), &bytes) {
        return Err(Unanswered::Failed(Box::new(Failed {
            failure: UpstreamFailure::KeyRejected(parts.status),
            draft,
            scrubber,
        })));
    }
    if parts.status.is_success() {
        note_response(&draft, &bytes, upstream_format);
    }
    // What the answer generated, by Sluice's count, for when it reports no usage: a native
    // answer's format only its family reads, so only its prompt is counted.
    let (body, usage, answered_tokens) = match translator {
        Translator::Native(usage) => {
            if parts.status.is_success() && !is_whole_document(&bytes) {
                return Err(not_json(draft, scrubber));
            }
            let reported = usage.whole(&bytes);
            (bytes, reported, 0)
        }
        Translator::Chat(translation) => {
            let answer: Value = match serde_json::from_slice(&bytes) {
                Ok(answer) => answer,
                Err(_) if parts.status.is_success() => return Err(not_json(draft, scrubber)),
                Err(_) => Value::Null,
            };
            if !parts.status.is_success() {
                let error = refusal(translation, parts.status, &answer);
                draft.error = Some(error.code);
                // Refused upstream: nothing was generated, and the refusal is still recorded.
                tally.written = Some(draft.finish(
                    error.code.http_status(),
                    Usage::default(),
                    pb::UsageSource::Estimated,
                ));
                return Err(Unanswered::Refused(error));
            }
            let reported = translation.usage(&answer);
            let chat = translation.response(
                &answer,
                &reported.unwrap_or_default(),
                &identity(&draft, answering),
            );
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let answered = crate::mock_posture::estimate_tokens(answered_chars(&chat));
            (Bytes::from(chat.to_string()), reported, answered)
        }
    };
    let status = parts.status.as_u16();
    say_overhead(&draft, &mut headers);
    tally.written = Some(match usage {
        Some(usage) => draft.finish(status, usage, pb::UsageSource::ProviderReported),
        // No usage block: counted by Sluice and labelled so, never a zero "reported".
        None if parts.status.is_success() => {
            let mut usage = draft.prompt_only();
            usage.output_tokens = answered_tokens;
            draft.finish(status, usage, pb::UsageSource::Estimated)
        }
        // An error answer generated nothing.
        None => draft.finish(status, Usage::default(), pb::UsageSource::Estimated),
    });
    let mut out = Response::new(full(body));
    *out.status_mut() = parts.status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The gateway's own time in a proxied answer, in microseconds: from the request's head to
/// the answer's, less the time spent waiting on upstreams.
const OVERHEAD: http::HeaderName = http::HeaderName::from_static("x-sluice-overhead-us");

/// Puts the gateway's own time so far on the answer's head (and on its span).
fn say_overhead(draft: &UsageDraft, headers: &mut http::HeaderMap) {
    let overhead = draft.started.elapsed().saturating_sub(draft.upstream_wait);
    let micros = u64::try_from(overhead.as_micros()).unwrap_or(u64::MAX);
    headers.insert(OVERHEAD, HeaderValue::from(micros));
    if let Some(trace) = &draft.trace {
        trace.note(|state| state.overhead_us = Some(micros));
    }
}

/// A sampled request's answer, as the upstream described it (parsed once more, for the trace
/// only).
fn note_response(draft: &UsageDraft, bytes: &[u8], format: Operation) {
    if let Some(trace) = draft.trace.as_ref().filter(|trace| trace.sampled()) {
        let facts = ResponseFacts::of_whole(bytes, format);
        let output = output_capture(draft, format).and_then(|mut capture| {
            capture.whole(bytes);
            capture.finish()
        });
        trace.note(|state| {
            state.response = Some(facts);
            if let Some(content) = state.content.as_mut() {
                content.output = output;
            }
        });
    }
}

/// What a sampled request's stream gathers for its trace, in the upstream's `format`.
fn stream_facts(draft: &UsageDraft, format: Operation) -> Option<Box<StreamFacts>> {
    draft.trace.as_ref().filter(|trace| trace.sampled())?;
    Some(Box::new(StreamFacts::new(
        format,
        output_capture(draft, format),
    )))
}

/// Where the answer is gathered for a project that records it.
fn output_capture(draft: &UsageDraft, format: Operation) -> Option<OutputCapture> {
    (draft.content_cap > 0).then(|| OutputCapture::new(format, draft.content_cap))
}

/// A successful status over a body that is not a whole JSON document: never passed on as a
/// success.
fn not_json(draft: UsageDraft, scrubber: CredentialScrubber) -> Unanswered {
    Unanswered::Failed(Box::new(Failed {
        failure: UpstreamFailure::InvalidAnswer(
            "a successful status over a body that is not JSON".to_owned(),
        ),
        draft,
        scrubber,
    }))
}

fn identity(draft: &UsageDraft, answering: &Answering<'_>) -> ChunkIdentity {
    ChunkIdentity::new(
        &draft.record.request_id,
        answering.model_name,
        sluice_shared::time::now_us() / 1_000_000,
    )
}

/// A whole upstream answer, bounded in size and in time: an upstream that sends its headers
/// and then stalls is given up on after the idle timeout, and one that trickles, at the
/// request's total.
async fn read_whole(
    mut incoming: UpstreamBody,
    deadlines: &Deadlines,
) -> Result<Bytes, UpstreamFailure> {
    // Most answers come in one chunk, which is kept as it came.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut last_chunk = tokio::time::Instant::now();
    loop {
        let (by, kind) = deadlines.bound(TimeoutKind::Idle, last_chunk);
        let frame = match tokio::time::timeout_at(by, incoming.frame()).await {
            Err(_) => return Err(UpstreamFailure::TimedOut(deadlines.expired(kind, true))),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(UpstreamFailure::InvalidAnswer(error.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        last_chunk = tokio::time::Instant::now();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if held + data.len() > MAX_UPSTREAM_BODY {
            return Err(UpstreamFailure::InvalidAnswer(format!(
                "the answer is larger than {} MiB",
                MAX_UPSTREAM_BODY >> 20
            )));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            held => {
                if let Some(held) = held {
                    joined.extend_from_slice(&held);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// The upstream's refusal of a translated request, as an OpenAI-shaped error quoting it.
fn refusal(translation: &dyn ChatTranslation, status: StatusCode, answer: &Value) -> GatewayError {
    // Both families put the message at error.message.
    let message = answer["error"]["message"].as_str().unwrap_or("no message");
    GatewayError::new(
        ErrorCode::InvalidRequest,
        format!(
            "{} refused the request ({status}): {}",
            translation.family(),
            truncated(message, MAX_QUOTED_MESSAGE)
        ),
    )
}

/// Characters a `chat.completion` answered with (text and tool-call arguments).
fn answered_chars(chat: &Value) -> usize {
    let choices = chat["choices"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    choices
        .iter()
        .map(|choice| generated_chars(&choice["message"]))
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

/// Only headers that describe the answer travel back; hop-by-hop and upstream infrastructure
/// headers stay behind, and so does any header whose value echoes the credential.
fn copy_response_headers(
    from: &http::HeaderMap,
    to: &mut http::HeaderMap,
    scrubber: &CredentialScrubber,
) {
    // Room, at once, for these and for what the gateway adds after (its rate-limit standing,
    // the attempts, the request id): growing a map on the way costs two allocations a time.
    to.reserve(16);
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
