//! The control plane's traces, over OTLP when an endpoint is set: a server span per admin RPC
//! (the RPC conventions, its gRPC status, and the audit event it wrote), a span per config
//! push to a proxy (version, whole or difference, ACK or NACK and why, how long), and a span
//! per usage batch (records, outcome, commit time). Spans join a bounded queue that a thread of
//! its own exports; nothing the control plane serves waits on a collector. No token, key or
//! usage record's content is ever an attribute.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_otlp::trace_context::{self, Parent};
use sluice_otlp::{Exportable, Exporter, SpanIds, SpanKind, TraceRequest, Value};
use sluice_shared::otel_settings::{OtelSettings, Sampler};

pub struct Tracer {
    sampler: Sampler,
    exporter: Arc<Exporter<Span>>,
}

/// A finished span, owned: the control plane makes few, so none is worth borrowing for.
pub struct Span {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    tracestate: Option<String>,
    name: String,
    kind: SpanKind,
    start_ns: u64,
    end_ns: u64,
    /// Set when the span ended in an error: its type.
    error: Option<String>,
    attributes: Vec<(&'static str, Attribute)>,
}

pub enum Attribute {
    Text(String),
    Int(i64),
    Bool(bool),
}

fn unix_ns(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

/// Where a sampled span belongs: its trace, and its parent in it if a caller sent one.
pub struct Place {
    trace_id: [u8; 16],
    parent: Option<[u8; 8]>,
    tracestate: Option<String>,
}

impl Span {
    /// A span that began `took` ago and ends now.
    pub fn ended(name: String, kind: SpanKind, took: Duration, place: Place) -> Self {
        let end = SystemTime::now();
        Self {
            trace_id: place.trace_id,
            span_id: sluice_otlp::random_span_id(),
            parent: place.parent,
            tracestate: place.tracestate,
            name,
            kind,
            start_ns: unix_ns(end.checked_sub(took).unwrap_or(end)),
            end_ns: unix_ns(end),
            error: None,
            attributes: Vec::with_capacity(8),
        }
    }

    pub fn text(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((key, Attribute::Text(value.into())));
        self
    }

    pub fn int(mut self, key: &'static str, value: i64) -> Self {
        self.attributes.push((key, Attribute::Int(value)));
        self
    }

    pub fn flag(mut self, key: &'static str, value: bool) -> Self {
        self.attributes.push((key, Attribute::Bool(value)));
        self
    }

    /// Marks the span failed, with `error.type`.
    pub fn failed(mut self, error_type: impl Into<String>) -> Self {
        let error_type = error_type.into();
        self.attributes
            .push(("error.type", Attribute::Text(error_type.clone())));
        self.error = Some(error_type);
        self
    }
}

impl Exportable for Span {
    fn span_count(&self) -> usize {
        1
    }

    fn write(&self, request: &mut TraceRequest) {
        request.span(
            SpanIds {
                trace_id: &self.trace_id,
                span_id: &self.span_id,
                parent_span_id: self.parent.as_ref(),
                trace_state: self.tracestate.as_deref(),
            },
            &[&self.name],
            self.kind,
            self.start_ns,
            self.end_ns,
            self.error.as_deref(),
            |attributes| {
                for (key, value) in &self.attributes {
                    let value = match value {
                        Attribute::Text(text) => Value::Str(text),
                        Attribute::Int(n) => Value::Int(*n),
                        Attribute::Bool(flag) => Value::Bool(*flag),
                    };
                    attributes.add(key, value);
                }
            },
        );
    }
}

impl Tracer {
    /// Traces exported as the settings say, or `None` when they say no export.
    pub fn start(settings: OtelSettings) -> std::io::Result<Option<Arc<Self>>> {
        let Some(export) = settings.traces else {
            return Ok(None);
        };
        let sampler = export.sampler;
        let exporter = Exporter::start(settings.service_name, settings.resource, export, 1)?;
        Ok(Some(Arc::new(Self { sampler, exporter })))
    }

    /// Where work in `parent`'s trace (or, without one, in a new trace) is recorded; `None`
    /// when it is not sampled.
    pub fn place(&self, parent: Option<Parent>) -> Option<Place> {
        let trace_id = parent
            .as_ref()
            .map_or_else(sluice_otlp::random_trace_id, |p| p.trace_id);
        self.sampler
            .samples(&trace_id, parent.as_ref().map(|p| p.sampled))
            .then(|| Place {
                trace_id,
                parent: parent.as_ref().map(|p| p.span_id),
                tracestate: parent.and_then(|p| p.tracestate),
            })
    }

    pub fn record(&self, span: Span) {
        self.exporter.enqueue(span);
    }

    pub fn shut_down(&self, within: Duration) {
        self.exporter.shut_down(within);
    }

    pub fn render_metrics(&self, out: &mut String) {
        self.exporter.render_metrics(out);
    }
}

/// The caller's trace context, from an RPC's headers.
pub fn parent_of(headers: &http::HeaderMap) -> Option<Parent> {
    trace_context::parent(headers)
}

tokio::task_local! {
    /// The audit events the RPC being served wrote, for its span.
    static AUDIT_EVENTS: RefCell<Vec<String>>;
}

/// Runs `serve` noting the audit events it writes; returns them with its output.
pub async fn noting_audit_events<F: Future>(serve: F) -> (F::Output, Vec<String>) {
    AUDIT_EVENTS
        .scope(RefCell::new(Vec::new()), async move {
            let output = serve.await;
            let events = AUDIT_EVENTS
                .try_with(|events| std::mem::take(&mut *events.borrow_mut()))
                .unwrap_or_default();
            (output, events)
        })
        .await
}

/// An audit event was written, with this id (a no-op outside an RPC being traced).
pub fn note_audit_event(id: &str) {
    let _ = AUDIT_EVENTS.try_with(|events| events.borrow_mut().push(id.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn audit_events_are_noted_only_inside_an_rpc() {
        note_audit_event("outside");
        let (answer, events) = noting_audit_events(async {
            note_audit_event("first");
            tokio::task::yield_now().await;
            note_audit_event("second");
            7
        })
        .await;
        assert_eq!(answer, 7);
        assert_eq!(events, ["first", "second"]);
    }
}
