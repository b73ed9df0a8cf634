//! OpenTelemetry traces for both halves of Sluice. An export request is encoded straight from
//! what the spans hold ([`encode`]: no message tree, lengths computed first); work that makes
//! spans joins a bounded queue that a thread of its own exports ([`export`]); callers' W3C
//! trace context is read and written by [`trace_context`].

pub mod encode;
pub mod export;
pub mod metrics;
pub mod trace_context;

pub use encode::{Attributes, SpanIds, SpanKind, TraceRequest, Value};
pub use export::{Exportable, Exporter};

/// A random span id, never all zeros (which means none).
pub fn random_span_id() -> [u8; 8] {
    use rand::RngCore;
    let mut id = [0u8; 8];
    while id == [0; 8] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

/// A random trace id.
pub fn random_trace_id() -> [u8; 16] {
    use rand::RngCore;
    let mut id = [0u8; 16];
    while id == [0; 16] {
        rand::rng().fill_bytes(&mut id);
    }
    id
}
