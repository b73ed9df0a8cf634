//! The Sluice data plane: `sluice-proxy` serves OpenAI-compatible traffic from in-memory
//! tables that a background task keeps current from the control plane. The request path reads
//! one `ArcSwap` and counts with atomics: no database, no control-plane call, no lock.
//!
//! Public are the parts `main` assembles (settings, the gateway and its serving loop, the
//! control-plane clients, the budget lease book, the upstream client, the usage spool); the
//! request path itself is crate-private.

pub(crate) mod answers;
pub mod budgets;
pub mod control;
pub(crate) mod endpoints;
pub(crate) mod error_response;
pub(crate) mod families;
pub(crate) mod fast_hash;
pub(crate) mod framing;
pub mod gateway;
pub(crate) mod http_body;
pub(crate) mod metering;
pub(crate) mod metrics;
pub(crate) mod mock_posture;
pub(crate) mod operation;
pub(crate) mod pipeline;
pub(crate) mod rate_limits;
pub(crate) mod request;
pub mod resilience;
pub(crate) mod routing;
pub mod serve;
pub mod settings;
pub mod telemetry;
pub mod upstream;
pub mod usage;

pub use metrics::HeapStats;
