//! Types used by both halves of Sluice. Nothing here does I/O.

pub mod budget_window;
pub mod credential_scrub;
pub mod envelope;
pub mod error_code;
pub mod ids;
pub mod request_metadata;
pub mod sealing;
pub mod secret;
pub mod settings_source;
pub mod time;
pub mod token;
pub mod upstream_answer;
