//! The Sluice data plane: `sluice-proxy` serves OpenAI-compatible traffic from in-memory
//! tables that a background task keeps current from the control plane. The request path reads
//! one `ArcSwap` and counts with atomics: no database, no control-plane call, no lock.

pub mod answers;
pub mod budgets;
pub mod control;
pub mod endpoints;
pub mod error_response;
pub mod families;
pub mod gateway;
pub mod http_body;
pub mod metering;
pub mod metrics;
pub mod mock_posture;
pub mod operation;
pub mod pipeline;
pub mod request;
pub mod routing;
pub mod serve;
pub mod settings;

pub mod upstream;
pub mod usage;
