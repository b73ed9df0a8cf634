//! What the console shows when something fails: the admin service's code and message, the
//! next move, and the request id an operator can quote (it is in the control plane's log).

use sluice_proto::admin::v1 as pb;
use sluice_proto::common::v1::ProviderKeyHealth;
use tonic::{Code, Status};

#[derive(Debug, Clone)]
pub struct ShownError {
    /// The gRPC code's name in snake case, as `sluicectl` prints it.
    pub code: &'static str,
    pub message: String,
    pub next_move: &'static str,
    pub request_id: String,
}

impl ShownError {
    pub fn from_status(status: &Status, request_id: &str) -> Self {
        let (code, next_move) = match status.code() {
            Code::InvalidArgument => (
                "invalid_argument",
                "fix: correct the field the message names and submit again",
            ),
            Code::NotFound => (
                "not_found",
                "fix: check the name; it may have been deleted or renamed (reload the page)",
            ),
            Code::AlreadyExists => ("already_exists", "fix: choose another name"),
            Code::FailedPrecondition => (
                "failed_precondition",
                "fix: do what the message asks first, then retry",
            ),
            Code::PermissionDenied => (
                "permission_denied",
                "continue: this token may not make the change; ask an operator with an admin token",
            ),
            Code::Unauthenticated => ("unauthenticated", "retry: sign in again"),
            Code::Unavailable | Code::DeadlineExceeded => (
                "unavailable",
                "retry: in a moment; if it persists, check the control plane's database",
            ),
            Code::ResourceExhausted => ("resource_exhausted", "retry: later"),
            _ => (
                "internal",
                "support: retry once; if it fails again, contact support with the request id",
            ),
        };
        Self {
            code,
            message: status.message().to_owned(),
            next_move,
            request_id: request_id.to_owned(),
        }
    }
}

impl ShownError {
    /// A form the console itself could not read into a request.
    pub fn invalid_form(message: String, request_id: &str) -> Self {
        Self {
            code: "invalid_argument",
            message,
            next_move: "fix: correct the field the message names and submit again",
            request_id: request_id.to_owned(),
        }
    }
}

/// A provider key test's outcome, with what to do about it.
#[derive(Debug, Clone)]
pub struct KeyTestShown {
    pub key: String,
    pub health: &'static str,
    pub upstream_status: u32,
    pub message: String,
    pub next_move: &'static str,
    pub good: bool,
}

impl KeyTestShown {
    pub fn from_response(key: String, response: &pb::TestProviderKeyResponse) -> Self {
        let health =
            ProviderKeyHealth::try_from(response.health).unwrap_or(ProviderKeyHealth::Unspecified);
        let next_move = match health {
            ProviderKeyHealth::Valid => {
                "continue: the key works; the project can go LIVE once nothing else blocks it"
            }
            ProviderKeyHealth::InvalidCredentials => {
                "fix: the provider refused this key; copy a working key from the provider's \
                 console and rotate to it, then test again"
            }
            ProviderKeyHealth::NoModelAccess => {
                "fix: the key works but may not use this model; enable it for the key's \
                 account at the provider, or deploy another model"
            }
            ProviderKeyHealth::Unreachable => {
                "retry: check the provider's base URL and the network path, then test again"
            }
            _ => {
                "support: the provider answered in an unexpected way; retry later, and if it \
                 persists contact support with the message"
            }
        };
        Self {
            key,
            health: health_label(response.health),
            upstream_status: response.upstream_status,
            message: response.message.clone(),
            next_move,
            good: health == ProviderKeyHealth::Valid,
        }
    }
}

pub fn health_label(health: i32) -> &'static str {
    match ProviderKeyHealth::try_from(health) {
        Ok(ProviderKeyHealth::Valid) => "valid",
        Ok(ProviderKeyHealth::InvalidCredentials) => "invalid credentials",
        Ok(ProviderKeyHealth::NoModelAccess) => "no model access",
        Ok(ProviderKeyHealth::Unreachable) => "unreachable",
        Ok(ProviderKeyHealth::Unexpected) => "unexpected answer",
        _ => "not tested",
    }
}
