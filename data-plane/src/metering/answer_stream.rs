//! A streamed upstream answer relayed to the client frame by frame as it arrives, metered on
//! the way: the credential sent upstream is scrubbed from it, each event is framed once and
//! read once by the answer's [`StreamReader`] (which, translating, makes the client's chunks
//! of it), and the usage is recorded exactly once — at the end, on an upstream error, on a
//! timeout (the first event's, between events, or the request's total), or when the client
//! goes away (drop). An upstream stream that breaks, stalls,
//! ends without its closing event or sends an event that is not of its format ends the
//! client's stream with the family's error event, so that SDKs raise.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use sluice_shared::credential_scrub::{CredentialScrubber, StreamScrubber};
use tokio::time::{Instant, Sleep};

use sluice_shared::error_code::ErrorCode;

use crate::answers::{SseLines, StreamReader};
use crate::error_response::GatewayError;
use crate::http_body::BoxError;
use crate::metering::draft::UsageDraft;
use crate::metrics::histogram::{CHUNK_GAP_SECONDS, LocalHistogram};
use crate::resilience::timeout_policy::{Deadlines, TimeoutKind};
use crate::telemetry::response_facts::StreamFacts;
use crate::upstream::UpstreamBody;

pub struct AnswerStream {
    inner: UpstreamBody,
    scrubber: StreamScrubber,
    lines: SseLines,
    reader: Box<dyn StreamReader>,
    draft: Option<UsageDraft>,
    deadlines: Deadlines,
    /// Set for the first event's bound, then for the idle one after the last chunk that had
    /// arrived when it was set; a chunk only moves `last_chunk`, and the timer is moved on
    /// when it fires early. Resetting a timer per chunk cost a timer-wheel update for every
    /// event of a stream.
    deadline: Pin<Box<Sleep>>,
    /// When the last chunk came; `None` until the first has.
    last_chunk: Option<Instant>,
    /// The upstream's body has ended (what it held back has gone out).
    upstream_done: bool,
    /// The event that ends the client's stream, once the upstream's has failed: it goes out
    /// after what the reader still holds, and nothing after it.
    last_event: Option<Bytes>,
    /// The answer's id, model and finish reasons, gathered for a sampled trace.
    facts: Option<Box<StreamFacts>>,
    done: bool,
}

impl AnswerStream {
    pub fn new(
        inner: UpstreamBody,
        reader: Box<dyn StreamReader>,
        draft: UsageDraft,
        deadlines: Deadlines,
        scrubber: CredentialScrubber,
        facts: Option<Box<StreamFacts>>,
    ) -> Self {
        let (first_event_by, _) =
            deadlines.bound(TimeoutKind::FirstByte, deadlines.attempt_started());
        Self {
            inner,
            scrubber: StreamScrubber::new(scrubber),
            lines: SseLines::new(),
            reader,
            draft: Some(draft),
            deadlines,
            deadline: Box::pin(tokio::time::sleep_until(first_event_by)),
            last_chunk: None,
            upstream_done: false,
            last_event: None,
            facts,
            done: false,
        }
    }

    /// Tells a sampled trace what the stream said of itself.
    fn note_facts(&mut self) {
        if let (Some(facts), Some(trace)) = (
            self.facts.take(),
            self.draft.as_ref().and_then(|d| d.trace.as_ref()),
        ) {
            let (facts, output) = facts.finish_with_content();
            trace.note(|state| {
                state.response = Some(facts);
                if let Some(content) = state.content.as_mut() {
                    content.output = output;
                }
            });
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.note_facts();
        if let Some(draft) = self.draft.take() {
            draft.finish_stream(self.reader.meter());
        }
    }

    /// The upstream's stream failed part-way: its usage is recorded as it stands, with the
    /// status of the error (the client's 200 had gone before it), and the client's stream
    /// ends with the family's error event (after what the reader still holds) rather than
    /// being cut, so that its SDK raises.
    fn fail(&mut self, code: ErrorCode, message: &str) {
        let request_id = self
            .draft
            .as_ref()
            .map(|draft| draft.record.request_id.clone())
            .unwrap_or_default();
        self.last_event = Some(
            self.reader
                .error_event(GatewayError::new(code, message), &request_id),
        );
        self.upstream_done = true;
        self.note_facts();
        if let Some(mut draft) = self.draft.take() {
            draft.record.http_status = u32::from(code.http_status());
            draft.error = Some(code);
            draft.finish_stream(self.reader.meter());
        }
    }

    /// Frames and reads `bytes` (already scrubbed).
    fn read(&mut self, bytes: &[u8]) {
        let reader = &mut self.reader;
        match self.facts.as_deref_mut() {
            Some(facts) => self.lines.feed(bytes, |data| {
                facts.event(data);
                reader.event(data);
            }),
            None => self.lines.feed(bytes, |data| reader.event(data)),
        }
    }

    /// The upstream body ended: what was held back in case it began a credential is read and
    /// (passing through) goes out after all.
    fn upstream_ended(&mut self) -> Option<Bytes> {
        self.upstream_done = true;
        let held = self.scrubber.finish();
        if !held.is_empty() {
            self.read(&held);
        }
        self.reader.end();
        (!held.is_empty() && !self.reader.translates()).then(|| Bytes::from(held))
    }
}

impl HttpBody for AnswerStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(chunk) = this.reader.next_chunk() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if let Some(last) = this.last_event.take() {
                this.finish();
                return Poll::Ready(Some(Ok(Frame::data(last))));
            }
            if this.upstream_done {
                if !this.reader.meter().terminated && this.draft.is_some() {
                    this.fail(
                        ErrorCode::UpstreamInvalidResponse,
                        "the provider's stream ended before its closing event",
                    );
                    continue;
                }
                this.finish();
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "an upstream stream broke off");
                    this.fail(
                        ErrorCode::UpstreamUnavailable,
                        "the connection to the provider broke during the answer",
                    );
                    continue;
                }
                Poll::Ready(None) => match this.upstream_ended() {
                    Some(held) => return Poll::Ready(Some(Ok(Frame::data(held)))),
                    None => continue,
                },
                Poll::Pending => {
                    while this.deadline.as_mut().poll(cx).is_ready() {
                        let (due, kind) = match this.last_chunk {
                            None => this
                                .deadlines
                                .bound(TimeoutKind::FirstByte, this.deadlines.attempt_started()),
                            Some(last) => this.deadlines.bound(TimeoutKind::Idle, last),
                        };
                        if due <= Instant::now() {
                            let expiry = this.deadlines.expired(kind, true);
                            let message = expiry.describe("the provider");
                            this.fail(ErrorCode::UpstreamTimeout, &message);
                            break;
                        }
                        this.deadline.as_mut().reset(due);
                    }
                    if this.upstream_done {
                        continue;
                    }
                    return Poll::Pending;
                }
            };
            let now = Instant::now();
            match this.last_chunk.replace(now) {
                None => {
                    // The idle bound may come before the first event's: the timer moves to it.
                    let (due, _) = this.deadlines.bound(TimeoutKind::Idle, now);
                    this.deadline.as_mut().reset(due);
                    if let Some(draft) = &mut this.draft {
                        draft.first_chunk = Some(now.saturating_duration_since(draft.started));
                        draft.chunk_gaps = Some(Box::new(LocalHistogram::new(&CHUNK_GAP_SECONDS)));
                    }
                }
                Some(previous) => {
                    if let Some(gaps) = this.draft.as_mut().and_then(|d| d.chunk_gaps.as_mut()) {
                        let gap = now.saturating_duration_since(previous).as_micros();
                        gaps.record(u64::try_from(gap).unwrap_or(u64::MAX));
                    }
                }
            }
            let Ok(data) = frame.into_data() else {
                // Trailers carry nothing a client needs from an upstream.
                continue;
            };
            let clean = match this.scrubber.next(&data) {
                Cow::Borrowed(same) if same.len() == data.len() => data,
                Cow::Borrowed(prefix) => data.slice(..prefix.len()),
                Cow::Owned(clean) => Bytes::from(clean),
            };
            if clean.is_empty() {
                continue;
            }
            this.read(&clean);
            if this.reader.meter().undecodable {
                this.fail(
                    ErrorCode::UpstreamInvalidResponse,
                    "the provider sent an event that is not one of its format",
                );
            }
            if !this.reader.translates() {
                return Poll::Ready(Some(Ok(Frame::data(clean))));
            }
        }
    }
}

impl Drop for AnswerStream {
    fn drop(&mut self) {
        self.finish();
    }
}
