//! Types used by both halves of Sluice, and the facts both need. Nothing here does I/O but
//! [`upstream_connect`], the one way either half connects to an upstream, and [`tls`], the
//! certificates both read from files.

pub mod budget_window;
pub mod credential_scrub;
pub mod envelope;
pub mod error_code;
pub mod families;
pub mod histogram;
pub mod ids;
pub mod logging;
pub mod network_reach;
pub mod openmetrics;
pub mod otel_settings;
pub mod request_metadata;
pub mod sealing;
pub mod secret;
pub mod settings_source;
pub mod time;
pub mod tls;
pub mod token;
pub mod upstream_answer;
pub mod upstream_connect;
