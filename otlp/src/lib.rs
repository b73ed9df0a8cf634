//! OpenTelemetry traces for both halves of Sluice. An export request is encoded straight from
//! what the spans hold ([`encode`]: no message tree, lengths computed first); work that makes
//! spans joins a bounded queue that a thread of its own exports ([`export`]); callers' W3C
//! trace context is read and written by [`trace_context`].

pub mod encode;
pub mod export;
pub mod metrics;
pub mod short_text;
pub mod trace_context;

pub use encode::{Attributes, SpanIds, SpanKind, TraceRequest, Value};
pub use export::{Exportable, Exporter};
pub use short_text::ShortText;

/// A random span id, never all zeros (which means none).
pub fn random_span_id() -> [u8; 8] {
    loop {
        let id = next_random().to_le_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A random trace id, never all zeros.
pub fn random_trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next_random().to_le_bytes());
        id[8..].copy_from_slice(&next_random().to_le_bytes());
        if id != [0; 16] {
            return id;
        }
    }
}

thread_local! {
    /// Each thread's id generator, seeded from the operating system's randomness. Ids must be
    /// unpredictable enough not to collide, not secret (W3C trace context asks for random ids,
    /// not cryptographic ones), and a traced request makes three of them: drawing each from
    /// the cryptographic `ThreadRng` cost more than the rest of starting the trace.
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_os_rng());
}

fn next_random() -> u64 {
    IDS.with_borrow_mut(rand::RngCore::next_u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_and_never_zero() {
        let spans: std::collections::HashSet<[u8; 8]> =
            (0..10_000).map(|_| super::random_span_id()).collect();
        assert_eq!(spans.len(), 10_000);
        let traces: std::collections::HashSet<[u8; 16]> =
            (0..10_000).map(|_| super::random_trace_id()).collect();
        assert_eq!(traces.len(), 10_000);
        assert!(!spans.contains(&[0; 8]));
    }
}
