//! The Sluice data plane: `sluice-proxy` serves OpenAI-compatible traffic from in-memory
//! tables that a background task keeps current from the control plane. The request path reads
//! one `ArcSwap` and counts with atomics: no database, no control-plane call, no lock.

pub mod auth;
pub mod budget_leases;
pub mod chat;
pub mod chat_request;
pub mod config_client;
pub mod control_plane_auth;
pub mod error_response;
pub mod families;
pub mod forward;
pub mod gateway;
pub mod head_guard;
pub mod http_body;
pub mod identity;
pub mod lease_client;
pub mod metadata_headers;
pub mod metered_body;
pub mod metrics;
pub mod mock_posture;
pub mod operation;
pub mod request_body;
pub mod router;
pub mod routing_tables;
pub mod server;
pub mod settings;
pub mod snapshot_file;
pub mod spool_format;
pub mod sse;
pub mod translation;
pub mod upstream;
pub mod usage;
pub mod usage_reporter;
pub mod usage_spool;
pub mod usage_wire;
