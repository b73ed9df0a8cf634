//! OpenTelemetry traces of the request path. A request is sampled when it arrives (its
//! `traceparent`'s decision, or the configured ratio); a sampled request fills a
//! [`RequestTrace`] as it goes, and when it ends the trace joins a bounded lock-free queue.
//! The exporter thread ([`export`]) takes batches off the queue and sends them as OTLP. A full
//! queue drops the trace and counts its spans; no serving thread ever waits on telemetry, and
//! with no endpoint set nothing here runs at all.

pub mod access_log;
pub mod export;
pub mod otlp;
pub mod render;
pub mod request_trace;
pub mod response_facts;
pub mod trace_context;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use http::HeaderMap;
use rand::RngCore;
use sluice_shared::otel_settings::{OtelSettings, Sampler};

pub use request_trace::RequestTrace;
use request_trace::{FinishedTrace, TraceIds};

pub struct Telemetry {
    sampler: Sampler,
    service_name: String,
    resource: Vec<(String, String)>,
    /// Finished traces by value: a request's trace costs no allocation to queue.
    queue: ArrayQueue<FinishedTrace>,
    /// Traces per export (a request makes two spans or more).
    batch_traces: usize,
    /// Set while the exporter has been woken and has not yet looked.
    wake: AtomicBool,
    wake_up: tokio::sync::Notify,
    stop: AtomicBool,
    stopped: AtomicBool,
    pub counters: TelemetryCounters,
}

#[derive(Default)]
pub struct TelemetryCounters {
    pub spans_exported: AtomicU64,
    /// Dropped because the queue was full.
    pub spans_dropped: AtomicU64,
    /// Dropped because their export failed (collector down, slow or refusing).
    pub spans_export_failed: AtomicU64,
}

impl Telemetry {
    /// Traces exported as the settings say, or `None` when they say no export. The exporter
    /// thread runs from here on.
    pub fn start(settings: OtelSettings) -> std::io::Result<Option<Arc<Self>>> {
        let Some(export) = settings.traces else {
            return Ok(None);
        };
        // The queue and batch settings count spans; a request makes about two.
        let telemetry = Arc::new(Self {
            sampler: export.sampler,
            service_name: settings.service_name,
            resource: settings.resource,
            queue: ArrayQueue::new((export.max_queue_size / 2).max(1)),
            batch_traces: (export.max_export_batch_size / 2).max(1),
            wake: AtomicBool::new(false),
            wake_up: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            counters: TelemetryCounters::default(),
        });
        export::spawn(Arc::clone(&telemetry), export)?;
        Ok(Some(telemetry))
    }

    /// The trace of a request arriving with `headers`: recorded if it is sampled, else only
    /// carried on to upstreams if the caller sent one; `None` when there is neither.
    pub fn begin(self: &Arc<Self>, headers: &HeaderMap) -> Option<Arc<RequestTrace>> {
        let parent = trace_context::parent(headers);
        let trace_id = match &parent {
            Some(parent) => parent.trace_id,
            None => {
                let mut id = [0u8; 16];
                rand::rng().fill_bytes(&mut id);
                id
            }
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
            span_id: if sampled { random_span_id() } else { [0; 8] },
            parent_span_id: parent.as_ref().map(|p| p.span_id),
            tracestate: parent.and_then(|p| p.tracestate),
        };
        Some(Arc::new(RequestTrace::new(Arc::clone(self), ids, sampled)))
    }

    fn enqueue(&self, trace: FinishedTrace) {
        let spans = trace.span_count() as u64;
        if self.queue.push(trace).is_err() {
            self.counters
                .spans_dropped
                .fetch_add(spans, Ordering::Relaxed);
            return;
        }
        if self.queue.len() >= self.batch_traces && !self.wake.swap(true, Ordering::AcqRel) {
            self.wake_exporter();
        }
    }

    fn wake_exporter(&self) {
        self.wake_up.notify_one();
    }

    /// Exports what is queued and stops the exporter, waiting up to `within`.
    pub fn shut_down(&self, within: std::time::Duration) {
        self.stop.store(true, Ordering::Release);
        self.wake_exporter();
        let deadline = std::time::Instant::now() + within;
        while !self.stopped.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The exporter's counters in Prometheus's text format.
    pub fn render_metrics(&self, out: &mut String) {
        let counters = &self.counters;
        let lines = [
            (
                "sluice_otel_spans_exported_total",
                "Spans the OTLP collector accepted.",
                counters.spans_exported.load(Ordering::Relaxed),
            ),
            (
                "sluice_otel_spans_dropped_total",
                "Spans dropped because the export queue was full (telemetry never slows requests).",
                counters.spans_dropped.load(Ordering::Relaxed),
            ),
            (
                "sluice_otel_spans_export_failed_total",
                "Spans dropped because their export failed (collector down, slow or refusing).",
                counters.spans_export_failed.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in lines {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
    }
}

fn random_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

#[cfg(test)]
mod tests;
