//! The errors applications and operators see, from DESIGN.md's table: each code fixes the HTTP
//! status, the OpenAI-style error `type`, and the next move the caller should make.

/// What the caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAction {
    /// Change something: a credential, a model, the request, a budget.
    Fix,
    /// Transient trouble upstream: retry later.
    Retry,
    /// Handled (for example served by a fallback): carry on.
    Continue,
    /// Known-good inputs still fail: contact support with the request id.
    Support,
}

impl NextAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fix => "fix",
            Self::Retry => "retry",
            Self::Continue => "continue",
            Self::Support => "support",
        }
    }
}

/// Every error code Sluice puts on the wire. The code is also the metric label, so the set is
/// closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidApiKey,
    InvalidRequest,
    RequestTooLarge,
    /// The request line and headers are larger than the proxy reads.
    HeadersTooLarge,
    /// The request's body stopped arriving before its end.
    RequestTimeout,
    NotFound,
    MethodNotAllowed,
    UnsupportedModel,
    ModelNotAllowed,
    ProviderMismatch,
    PostureMock,
    ProviderNotReady,
    ProviderKeyInvalid,
    BudgetExceeded,
    /// A rate limit of the key, project, organisation or model has no room left in its window.
    RateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    /// The upstream answered with a success whose body is not a valid answer of its family.
    UpstreamInvalidResponse,
    UpstreamRateLimited,
    NotReady,
    /// The usage spool is at its bound: live traffic would go unmetered. Shares the wire code
    /// `internal` (an operator must act) but answers 503, since it clears by itself.
    UsageSpoolFull,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::InvalidRequest => "invalid_request",
            Self::RequestTooLarge | Self::HeadersTooLarge => "request_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnsupportedModel | Self::ModelNotAllowed => "unsupported_model",
            Self::ProviderMismatch => "provider_mismatch",
            Self::PostureMock => "posture_mock",
            Self::ProviderNotReady => "provider_not_ready",
            Self::ProviderKeyInvalid => "provider_key_invalid",
            Self::BudgetExceeded => "budget_exceeded",
            Self::RateLimited => "rate_limited",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamInvalidResponse => "upstream_invalid_response",
            Self::UpstreamRateLimited => "upstream_rate_limited",
            Self::NotReady => "not_ready",
            Self::UsageSpoolFull | Self::Internal => "internal",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidApiKey => 401,
            Self::InvalidRequest | Self::ProviderMismatch => 400,
            Self::RequestTooLarge => 413,
            Self::HeadersTooLarge => 431,
            Self::RequestTimeout => 408,
            Self::NotFound | Self::UnsupportedModel => 404,
            Self::MethodNotAllowed => 405,
            Self::ModelNotAllowed => 403,
            Self::PostureMock | Self::ProviderNotReady => 409,
            Self::ProviderKeyInvalid
            | Self::UpstreamUnavailable
            | Self::UpstreamInvalidResponse => 502,
            Self::BudgetExceeded | Self::RateLimited | Self::UpstreamRateLimited => 429,
            Self::UpstreamTimeout => 504,
            Self::NotReady | Self::UsageSpoolFull => 503,
            Self::Internal => 500,
        }
    }

    /// The OpenAI error `type` clients already branch on.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "authentication_error",
            Self::ModelNotAllowed => "permission_error",
            Self::InvalidRequest
            | Self::RequestTooLarge
            | Self::HeadersTooLarge
            | Self::RequestTimeout
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::UnsupportedModel
            | Self::ProviderMismatch
            | Self::PostureMock
            | Self::ProviderNotReady => "invalid_request_error",
            Self::BudgetExceeded | Self::RateLimited | Self::UpstreamRateLimited => {
                "rate_limit_error"
            }
            Self::ProviderKeyInvalid
            | Self::UpstreamTimeout
            | Self::UpstreamUnavailable
            | Self::UpstreamInvalidResponse
            | Self::NotReady
            | Self::UsageSpoolFull
            | Self::Internal => "api_error",
        }
    }

    pub fn next_action(self) -> NextAction {
        match self {
            Self::UpstreamTimeout
            | Self::UpstreamUnavailable
            | Self::UpstreamInvalidResponse
            | Self::UpstreamRateLimited
            | Self::RateLimited
            | Self::RequestTimeout
            | Self::NotReady => NextAction::Retry,
            Self::UsageSpoolFull | Self::Internal => NextAction::Support,
            _ => NextAction::Fix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_table_holds() {
        let rows = [
            (ErrorCode::InvalidApiKey, 401, "fix"),
            (ErrorCode::ProviderKeyInvalid, 502, "fix"),
            (ErrorCode::UnsupportedModel, 404, "fix"),
            (ErrorCode::ModelNotAllowed, 403, "fix"),
            (ErrorCode::ProviderMismatch, 400, "fix"),
            (ErrorCode::BudgetExceeded, 429, "fix"),
            (ErrorCode::UpstreamTimeout, 504, "retry"),
            (ErrorCode::UpstreamUnavailable, 502, "retry"),
            (ErrorCode::UpstreamRateLimited, 429, "retry"),
            (ErrorCode::RateLimited, 429, "retry"),
            (ErrorCode::Internal, 500, "support"),
        ];
        for (code, status, next) in rows {
            assert_eq!(code.http_status(), status, "{code:?}");
            assert_eq!(code.next_action().as_str(), next, "{code:?}");
        }
        assert_eq!(ErrorCode::ModelNotAllowed.as_str(), "unsupported_model");
    }
}
