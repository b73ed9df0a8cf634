//! One sampled request's spans, filled in as the request goes: a server span for the request
//! and a client span per upstream attempt. The request path holds the trace behind an `Arc`
//! (the router, and the usage draft that outlives the router for a stream); when the last
//! holder lets go — the answer sent, or the stream ended — the trace is finished and queued for
//! export. Nothing here is written unless the request was sampled.

use std::sync::{Arc, Mutex, PoisonError};

use sluice_proto::usage::v1 as pb;
use sluice_shared::error_code::ErrorCode;

use crate::operation::Operation;
use crate::telemetry::Telemetry;
use crate::telemetry::one_or_more::OneOrMore;
use crate::telemetry::response_facts::{RequestParams, ResponseFacts};
use sluice_otlp::ShortText;

pub struct RequestTrace {
    telemetry: Arc<Telemetry>,
    pub ids: TraceIds,
    /// Recorded and exported; otherwise the request only passes its caller's trace context on
    /// (a parent that was not sampled), recording nothing.
    sampled: bool,
    start_ns: u64,
    state: Mutex<TraceState>,
}

#[derive(Debug, Clone)]
pub struct TraceIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub tracestate: Option<String>,
}

/// What the request path has learnt.
#[derive(Debug, Default)]
pub struct TraceState {
    pub method: &'static str,
    /// `http.route`: the path as routed (Gemini's model in braces).
    pub route: &'static str,
    pub request_id: ShortText,
    pub status: u16,
    pub error: Option<ErrorCode>,
    pub organization_id: ShortText,
    pub project_id: ShortText,
    pub virtual_key_id: ShortText,
    /// The model as the client named it (its public name).
    pub model: ShortText,
    pub operation: Option<Operation>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub config_version: u64,
    /// What `x-sluice-overhead-us` said.
    pub overhead_us: Option<u64>,
    pub usage: Option<UsageFacts>,
    /// The rate limits' decision (`admitted`, `unenforced`, `refused`), where any covers it.
    pub rate_limit: Option<&'static str>,
    /// The HARD budgets' decision (`reserved`, `no_hard_budget`, `refused`, `unavailable`),
    /// and what was reserved.
    pub budget: Option<&'static str>,
    pub budget_reserved_micros: Option<i64>,
    /// What the client asked of the model, and what the answer said of itself (held here,
    /// not boxed: each box was an allocation freed on the exporter's thread).
    pub params: Option<RequestParams>,
    pub response: Option<ResponseFacts>,
    /// The prompt and completion, for a project that records them.
    pub content: Option<Box<crate::telemetry::content_capture::CapturedContent>>,
    pub attempts: OneOrMore<AttemptSpan>,
}

/// The request's usage record, as it was spooled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageFacts {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_micros: i64,
    pub source: &'static str,
    pub run_id: String,
    pub task_id: String,
}

/// A usage record's source as spans, logs and metrics name it.
pub fn source_name(source: i32) -> &'static str {
    match pb::UsageSource::try_from(source) {
        Ok(pb::UsageSource::ProviderReported) => "provider_reported",
        Ok(pb::UsageSource::Estimated) => "estimated",
        Ok(pb::UsageSource::Mock) => "mock",
        _ => "unspecified",
    }
}

impl UsageFacts {
    pub fn of(record: &pb::UsageRecord) -> Self {
        Self {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cached_input_tokens: record.cached_input_tokens,
            reasoning_tokens: record.reasoning_tokens,
            cost_micros: record.cost_micros,
            source: source_name(record.source),
            run_id: record.run_id.clone(),
            task_id: record.task_id.clone(),
        }
    }
}

/// One call to an upstream.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    pub span_id: [u8; 8],
    /// 1 for the first attempt of the request.
    pub number: u32,
    pub start_ns: u64,
    /// `None` for the attempt that answered: it lasts as long as the request.
    pub end_ns: Option<u64>,
    /// `gen_ai.provider.name`.
    pub provider_name: &'static str,
    pub upstream_model: ShortText,
    pub server_address: ShortText,
    pub server_port: u16,
    /// The upstream's HTTP status, when it answered at all.
    pub upstream_status: Option<u16>,
    /// Why the attempt failed (the error code it would answer with).
    pub error: Option<ErrorCode>,
    /// Why this attempt was made: the previous one's failure, and the move it led to
    /// (`same_key`, `next_key`, `next_deployment`).
    pub retry: Option<(ErrorCode, &'static str)>,
}

/// A trace whose request has ended, as it waits for export.
pub struct FinishedTrace {
    pub ids: TraceIds,
    pub start_ns: u64,
    pub end_ns: u64,
    pub state: TraceState,
}

impl sluice_otlp::Exportable for FinishedTrace {
    fn span_count(&self) -> usize {
        1 + self.state.attempts.len()
    }

    fn write(&self, request: &mut sluice_otlp::TraceRequest) {
        crate::telemetry::render::write(self, request);
    }
}

impl RequestTrace {
    pub(super) fn new(telemetry: Arc<Telemetry>, ids: TraceIds, sampled: bool) -> Self {
        Self {
            telemetry,
            ids,
            sampled,
            start_ns: now_ns(),
            state: Mutex::new(TraceState::default()),
        }
    }

    /// Whether the request is recorded (else its trace context is only passed on).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// Notes what the request path has learnt (nothing, unless the trace is sampled).
    pub fn note(&self, write: impl FnOnce(&mut TraceState)) {
        if self.sampled {
            write(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// A new attempt's span, started now.
    pub fn attempt(&self, number: u32) -> AttemptSpan {
        AttemptSpan {
            span_id: sluice_otlp::random_span_id(),
            number,
            start_ns: now_ns(),
            end_ns: None,
            provider_name: "",
            upstream_model: ShortText::EMPTY,
            server_address: ShortText::EMPTY,
            server_port: 0,
            upstream_status: None,
            error: None,
            retry: None,
        }
    }

    /// The trace headers an attempt sends its upstream: its own span as the parent.
    pub fn upstream_headers(
        &self,
        attempt_span_id: Option<&[u8; 8]>,
    ) -> Option<crate::upstream::TraceHeaders> {
        // Unsampled, the caller's own context passes on as it came.
        let parent = match (attempt_span_id, &self.ids.parent_span_id) {
            (Some(attempt), _) if self.sampled => attempt,
            (_, Some(caller)) if !self.sampled => caller,
            _ => return None,
        };
        let traceparent =
            super::trace_context::traceparent(&self.ids.trace_id, parent, self.sampled);
        Some(crate::upstream::TraceHeaders {
            traceparent: http::HeaderValue::from_bytes(&traceparent).ok()?,
            tracestate: self
                .ids
                .tracestate
                .as_deref()
                .and_then(|state| http::HeaderValue::from_str(state).ok()),
        })
    }

    /// An attempt that is over: failed (ended now), or answering (it ends with the request).
    pub fn attempt_done(&self, mut span: AttemptSpan, error: Option<ErrorCode>) {
        if error.is_some() {
            span.end_ns = Some(now_ns());
            span.error = error;
        }
        self.note(|state| state.attempts.push(span));
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        if !self.sampled {
            return;
        }
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(PoisonError::into_inner));
        // The ids are not needed any more: moved, not copied.
        let ids = TraceIds {
            trace_id: self.ids.trace_id,
            span_id: self.ids.span_id,
            parent_span_id: self.ids.parent_span_id,
            tracestate: self.ids.tracestate.take(),
        };
        self.telemetry.enqueue(FinishedTrace {
            ids,
            start_ns: self.start_ns,
            end_ns: now_ns(),
            state,
        });
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
