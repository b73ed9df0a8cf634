//! OpenTelemetry traces of the request path. A request is sampled when it arrives (its
//! `traceparent`'s decision, or the configured ratio); a sampled request fills a
//! [`RequestTrace`] as it goes, and when it ends the trace joins a bounded lock-free queue.
//! The exporter thread (`sluice_otlp::export`) takes batches off the queue and sends them as
//! OTLP. A full
//! queue drops the trace and counts its spans; no serving thread ever waits on telemetry, and
//! with no endpoint set nothing here runs at all.

pub mod access_log;
pub mod content_capture;
pub mod one_or_more;
pub mod render;
pub mod request_trace;
pub mod response_facts;

use std::sync::Arc;

use http::HeaderMap;
use sluice_otlp::{Exporter, trace_context};
use sluice_shared::otel_settings::{OtelSettings, Sampler};

pub use request_trace::RequestTrace;
use request_trace::{FinishedTrace, TraceIds};

pub struct Telemetry {
    sampler: Sampler,
    pub exporter: Arc<Exporter<FinishedTrace>>,
}

impl Telemetry {
    /// Traces exported as the settings say, or `None` when they say no export. The exporter
    /// thread runs from here on.
    pub fn start(settings: OtelSettings) -> std::io::Result<Option<Arc<Self>>> {
        let Some(export) = settings.traces else {
            return Ok(None);
        };
        let sampler = export.sampler;
        // A request makes about two spans: its own and its attempt's.
        let exporter = Exporter::start(settings.service_name, settings.resource, export, 2)?;
        Ok(Some(Arc::new(Self { sampler, exporter })))
    }

    /// The trace of a request arriving with `headers`: recorded if it is sampled, else only
    /// carried on to upstreams if the caller sent one; `None` when there is neither.
    pub fn begin(self: &Arc<Self>, headers: &HeaderMap) -> Option<Arc<RequestTrace>> {
        let parent = trace_context::parent(headers);
        let trace_id = match &parent {
            Some(parent) => parent.trace_id,
            None => sluice_otlp::random_trace_id(),
        };
        let sampled = self
            .sampler
            .samples(&trace_id, parent.as_ref().map(|p| p.sampled));
        if !sampled && parent.is_none() {
            return None;
        }
        // Not sampled but called within a trace: recorded nowhere, the caller's context is
        // still passed on to the upstream, as the W3C recommendation asks of intermediaries.
        let ids = TraceIds {
            trace_id,
            span_id: if sampled {
                sluice_otlp::random_span_id()
            } else {
                [0; 8]
            },
            parent_span_id: parent.as_ref().map(|p| p.span_id),
            tracestate: parent.and_then(|p| p.tracestate),
        };
        Some(Arc::new(RequestTrace::new(Arc::clone(self), ids, sampled)))
    }

    fn enqueue(&self, trace: FinishedTrace) {
        self.exporter.enqueue(trace);
    }

    /// Exports what is queued and stops the exporter, waiting up to `within`.
    pub fn shut_down(&self, within: std::time::Duration) {
        self.exporter.shut_down(within);
    }

    /// The exporter's counters in Prometheus's text format.
    pub fn render_metrics(&self, out: &mut String) {
        self.exporter.render_metrics(out);
    }
}

#[cfg(test)]
mod tests;
