//! Why an attempt at an upstream did not produce an answer to relay, as a type: the attempt
//! loop decides from it whether to try the next key or deployment, what the client is told,
//! and what the request's usage record says.

use http::StatusCode;
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;
use crate::resilience::timeout_policy::{Expiry, TimeoutKind};
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The provider's record points where it may not connect (nothing was sent).
    Refused(String),
    /// No connection could be made (nothing was sent).
    Connect(String),
    /// The connection broke after the request may have gone out.
    Reset(String),
    /// A timeout ran out before the answer started to reach the client: connecting, waiting
    /// for its first byte, between its chunks, or the request's total.
    TimedOut(Expiry),
    /// A 5xx answer.
    ServerError(StatusCode),
    /// A 429 answer.
    RateLimited(StatusCode),
    /// A 3xx answer, which is never followed.
    Redirect(StatusCode),
    /// The upstream refused the provider key itself.
    KeyRejected(StatusCode),
    /// A successful status whose body is no answer: cut off, too large, or not valid for its
    /// family.
    InvalidAnswer(String),
}

impl From<UpstreamError> for UpstreamFailure {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::TimedOut(expiry) => Self::TimedOut(expiry),
            UpstreamError::Refused(why) => Self::Refused(why),
            UpstreamError::Reset(why) => Self::Reset(why),
            UpstreamError::Connect(why) | UpstreamError::BadUrl(why) => Self::Connect(why),
        }
    }
}

impl UpstreamFailure {
    /// The failure an answer's status means before its body is read, if it is one (a key
    /// refusal needs the body, [`Self::KeyRejected`]).
    pub fn of_status(status: StatusCode) -> Option<Self> {
        if status.is_server_error() {
            Some(Self::ServerError(status))
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Some(Self::RateLimited(status))
        } else if status.is_redirection() {
            Some(Self::Redirect(status))
        } else {
            None
        }
    }

    /// Whether another attempt (the next deployment, or later the same one) may succeed where
    /// this one failed: trouble upstream, not a decision about this request.
    pub fn retryable(&self) -> bool {
        match self {
            // The request has no time left for another.
            Self::TimedOut(expiry) => expiry.kind != TimeoutKind::Total,
            Self::Connect(_)
            | Self::Reset(_)
            | Self::ServerError(_)
            | Self::RateLimited(_)
            // Nothing of the answer has reached the client yet: it may come whole next time.
            | Self::InvalidAnswer(_) => true,
            // Configuration the operator must fix; a key refused moves to the provider's
            // next key instead.
            Self::Refused(_) | Self::Redirect(_) | Self::KeyRejected(_) => false,
        }
    }

    /// Whether the request moves on to its next deployment: everything that failed before an
    /// answer started, except a refused key (the provider's next key comes first, and when
    /// none is left the operator must act).
    pub fn falls_back(&self) -> bool {
        // What another deployment may not share: trouble at this one's upstream, or where
        // this one's provider points.
        self.retryable() || matches!(self, Self::Refused(_) | Self::Redirect(_))
    }

    /// Whether the provider key is the reason: the control plane hears of it, and the
    /// provider's next key is tried.
    pub fn rejects_key(&self) -> bool {
        matches!(self, Self::KeyRejected(_))
    }

    /// Whether the request must leave a usage record: it reached the upstream, or a timeout
    /// ran out (even connecting: an operator sees slow upstreams in usage, every timeout
    /// with its record).
    pub fn reached_upstream(&self) -> bool {
        !matches!(self, Self::Refused(_) | Self::Connect(_))
    }

    /// Whether the upstream may have worked on the prompt (and billed it) without answering:
    /// the usage record then counts the prompt, an estimate.
    pub fn may_have_billed(&self) -> bool {
        matches!(
            self,
            Self::Reset(_) | Self::InvalidAnswer(_) | Self::TimedOut(Expiry { sent: true, .. })
        )
    }

    /// What the client is told when this is the last failure, naming the provider.
    pub fn to_error(&self, provider: &str) -> GatewayError {
        match self {
            Self::Refused(why) => GatewayError::new(
                ErrorCode::ProviderNotReady,
                format!(
                    "provider '{provider}' points where it may not connect: {why}; fix its base_url (or its allow_private_network) with `sluicectl provider update`"
                ),
            ),
            Self::Connect(why) => GatewayError::new(
                ErrorCode::UpstreamUnavailable,
                format!("provider '{provider}': cannot reach the provider: {why}"),
            ),
            Self::Reset(why) => GatewayError::new(
                ErrorCode::UpstreamUnavailable,
                format!("provider '{provider}': the connection to the provider broke: {why}"),
            ),
            Self::TimedOut(expiry) => GatewayError::new(
                ErrorCode::UpstreamTimeout,
                expiry.describe(&format!("provider '{provider}'")),
            ),
            Self::ServerError(status) => GatewayError::new(
                ErrorCode::UpstreamUnavailable,
                format!("provider '{provider}' answered {status}"),
            ),
            Self::RateLimited(_) => GatewayError::new(
                ErrorCode::UpstreamRateLimited,
                format!("provider '{provider}' is rate limiting (429)"),
            ),
            Self::Redirect(_) => GatewayError::new(
                ErrorCode::UpstreamUnavailable,
                format!("provider '{provider}' answered a redirect, which is never followed"),
            ),
            Self::KeyRejected(status) => GatewayError::new(
                ErrorCode::ProviderKeyInvalid,
                format!(
                    "provider '{provider}' rejected its key ({status}): replace it with `sluicectl provider-key rotate`"
                ),
            ),
            Self::InvalidAnswer(why) => GatewayError::new(
                ErrorCode::UpstreamInvalidResponse,
                format!("provider '{provider}' sent an answer that is not valid: {why}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_says_what_the_loop_and_the_record_do() {
        let second = std::time::Duration::from_secs(1);
        let expiry = |kind, sent| {
            UpstreamFailure::TimedOut(Expiry {
                kind,
                after: second,
                sent,
            })
        };
        // (failure, falls back, retryable, rejects key, reached, may have billed, answered code)
        let table = [
            (
                UpstreamFailure::Refused("private".into()),
                true,
                false,
                false,
                false,
                false,
                ErrorCode::ProviderNotReady,
            ),
            (
                UpstreamFailure::Connect("refused".into()),
                true,
                true,
                false,
                false,
                false,
                ErrorCode::UpstreamUnavailable,
            ),
            (
                UpstreamFailure::Reset("reset".into()),
                true,
                true,
                false,
                true,
                true,
                ErrorCode::UpstreamUnavailable,
            ),
            (
                expiry(TimeoutKind::FirstByte, true),
                true,
                true,
                false,
                true,
                true,
                ErrorCode::UpstreamTimeout,
            ),
            (
                expiry(TimeoutKind::Connect, false),
                true,
                true,
                false,
                true,
                false,
                ErrorCode::UpstreamTimeout,
            ),
            (
                UpstreamFailure::ServerError(StatusCode::BAD_GATEWAY),
                true,
                true,
                false,
                true,
                false,
                ErrorCode::UpstreamUnavailable,
            ),
            (
                UpstreamFailure::RateLimited(StatusCode::TOO_MANY_REQUESTS),
                true,
                true,
                false,
                true,
                false,
                ErrorCode::UpstreamRateLimited,
            ),
            (
                UpstreamFailure::Redirect(StatusCode::FOUND),
                true,
                false,
                false,
                true,
                false,
                ErrorCode::UpstreamUnavailable,
            ),
            (
                UpstreamFailure::KeyRejected(StatusCode::UNAUTHORIZED),
                false,
                false,
                true,
                true,
                false,
                ErrorCode::ProviderKeyInvalid,
            ),
            (
                UpstreamFailure::InvalidAnswer("cut".into()),
                true,
                true,
                false,
                true,
                true,
                ErrorCode::UpstreamInvalidResponse,
            ),
            (
                expiry(TimeoutKind::Idle, true),
                true,
                true,
                false,
                true,
                true,
                ErrorCode::UpstreamTimeout,
            ),
            (
                expiry(TimeoutKind::Total, true),
                false,
                false,
                false,
                true,
                true,
                ErrorCode::UpstreamTimeout,
            ),
        ];
        for (failure, falls_back, retryable, rejects_key, reached, billed, code) in table {
            assert_eq!(failure.falls_back(), falls_back, "{failure:?}");
            assert_eq!(failure.retryable(), retryable, "{failure:?}");
            assert_eq!(failure.rejects_key(), rejects_key, "{failure:?}");
            assert_eq!(failure.reached_upstream(), reached, "{failure:?}");
            assert_eq!(failure.may_have_billed(), billed, "{failure:?}");
            assert_eq!(failure.to_error("p").code, code, "{failure:?}");
        }
    }

    #[test]
    fn statuses_are_classed_before_the_body_is_read() {
        assert_eq!(
            UpstreamFailure::of_status(StatusCode::SERVICE_UNAVAILABLE),
            Some(UpstreamFailure::ServerError(
                StatusCode::SERVICE_UNAVAILABLE
            ))
        );
        assert_eq!(
            UpstreamFailure::of_status(StatusCode::TOO_MANY_REQUESTS),
            Some(UpstreamFailure::RateLimited(StatusCode::TOO_MANY_REQUESTS))
        );
        assert_eq!(
            UpstreamFailure::of_status(StatusCode::MOVED_PERMANENTLY),
            Some(UpstreamFailure::Redirect(StatusCode::MOVED_PERMANENTLY))
        );
        for answered in [
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
        ] {
            assert_eq!(UpstreamFailure::of_status(answered), None);
        }
    }
}
