//! What a request does after an attempt fails before anything reached the client: the same
//! key again after a backoff (or the wait the upstream asked for), the provider's next key,
//! the next deployment, or stop. Attempts per key, per deployment and in total are separate
//! limits, and a retry of the same key also needs the thread's [`retry_budget`].
//!
//! [`retry_budget`]: crate::resilience::retry_budget

use std::time::Duration;

use rand::Rng;

use crate::pipeline::failure::UpstreamFailure;
pub use crate::resilience::retry_policy::RetryPolicy;

/// Where the request stands when an attempt fails.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// Attempts made at the current deployment, and with its current key.
    pub on_deployment: u32,
    pub on_key: u32,
    /// The deployment's provider has a key after the current one.
    pub has_next_key: bool,
}

/// The request's next move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// The same deployment and key, after this wait.
    Again(Duration),
    /// The provider's next key, at once.
    NextKey,
    NextDeployment,
    /// The failure is the answer.
    Stop,
}

impl RetryPolicy {
    /// The move after `failure`; `hint` is the wait the upstream asked for, and `budget`
    /// is asked (and charged) only for a retry of the same key.
    pub fn next_move(
        &self,
        failure: &UpstreamFailure,
        hint: Option<Duration>,
        place: Place,
        budget: impl FnOnce() -> bool,
    ) -> Move {
        let deployment_left = place.on_deployment < self.per_deployment;
        if failure.rejects_key() {
            // A refused key is not a retry: any other key of the provider may be good.
            return if place.has_next_key {
                Move::NextKey
            } else {
                Move::Stop
            };
        }
        if !failure.falls_back() {
            return Move::Stop;
        }
        if !failure.retryable() {
            return Move::NextDeployment;
        }
        // A 429 is most often the key's own limit: a sibling key has its own.
        if matches!(failure, UpstreamFailure::RateLimited(_))
            && place.has_next_key
            && deployment_left
        {
            return Move::NextKey;
        }
        let wait = match hint {
            Some(asked) if asked > self.max_retry_after => return Move::NextDeployment,
            Some(asked) => asked,
            None => self.backoff(place.on_key),
        };
        if place.on_key < self.per_key && deployment_left && budget() {
            Move::Again(wait)
        } else {
            Move::NextDeployment
        }
    }

    /// Full jitter (AWS's "exponential backoff and jitter"): a random wait up to the
    /// exponential bound, so that clients failed together do not retry together.
    pub fn backoff(&self, attempts_so_far: u32) -> Duration {
        let doublings = attempts_so_far.saturating_sub(1).min(20);
        let bound = self
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        let bound_us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=bound_us))
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::resilience::timeout_policy::{Expiry, TimeoutKind};

    fn place(on_deployment: u32, on_key: u32, has_next_key: bool) -> Place {
        Place {
            on_deployment,
            on_key,
            has_next_key,
        }
    }

    #[test]
    fn transient_failures_retry_the_same_key_then_move_on() {
        let policy = RetryPolicy::default();
        let unavailable = UpstreamFailure::ServerError(StatusCode::SERVICE_UNAVAILABLE);
        let Move::Again(wait) = policy.next_move(&unavailable, None, place(1, 1, true), || true)
        else {
            panic!("a 503 is retried on the same key");
        };
        assert!(wait <= policy.backoff_base);
        assert_eq!(
            policy.next_move(&unavailable, None, place(2, 2, true), || true),
            Move::NextDeployment,
            "the key's attempts are spent; a 5xx is not the key's fault"
        );
        assert_eq!(
            policy.next_move(&unavailable, None, place(3, 1, false), || true),
            Move::NextDeployment,
            "the deployment's attempts are spent"
        );
        assert_eq!(
            policy.next_move(&unavailable, None, place(1, 1, false), || false),
            Move::NextDeployment,
            "the retry budget is spent"
        );
        for failure in [
            UpstreamFailure::Connect("refused".into()),
            UpstreamFailure::Reset("reset".into()),
            UpstreamFailure::TimedOut(Expiry {
                kind: TimeoutKind::FirstByte,
                after: Duration::from_secs(1),
                sent: true,
            }),
            UpstreamFailure::InvalidAnswer("not JSON".into()),
        ] {
            assert!(
                matches!(
                    policy.next_move(&failure, None, place(1, 1, false), || true),
                    Move::Again(_)
                ),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn a_rate_limit_tries_a_sibling_key_first_and_honours_the_wait_asked_for() {
        let policy = RetryPolicy::default();
        let limited = UpstreamFailure::RateLimited(StatusCode::TOO_MANY_REQUESTS);
        let mut charged = false;
        assert_eq!(
            policy.next_move(
                &limited,
                Some(Duration::from_secs(1)),
                place(1, 1, true),
                || {
                    charged = true;
                    true
                }
            ),
            Move::NextKey
        );
        assert!(!charged, "a sibling key is not a retry of the same one");
        assert_eq!(
            policy.next_move(
                &limited,
                Some(Duration::from_secs(1)),
                place(1, 1, false),
                || true
            ),
            Move::Again(Duration::from_secs(1))
        );
        assert_eq!(
            policy.next_move(
                &limited,
                Some(Duration::from_secs(60)),
                place(1, 1, false),
                || true
            ),
            Move::NextDeployment,
            "a wait over the cap is not sat out"
        );
    }

    #[test]
    fn decisions_about_the_request_or_the_key_are_not_retried() {
        let policy = RetryPolicy::default();
        let rejected = UpstreamFailure::KeyRejected(StatusCode::UNAUTHORIZED);
        assert_eq!(
            policy.next_move(&rejected, None, place(1, 1, true), || true),
            Move::NextKey
        );
        assert_eq!(
            policy.next_move(&rejected, None, place(1, 1, false), || true),
            Move::Stop
        );
        let redirect = UpstreamFailure::Redirect(StatusCode::FOUND);
        assert_eq!(
            policy.next_move(&redirect, None, place(1, 1, false), || true),
            Move::NextDeployment
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_below_the_bound() {
        let policy = RetryPolicy::default();
        for (attempts, bound) in [(1, 100), (2, 200), (3, 400), (6, 2000), (40, 2000)] {
            let waits: Vec<Duration> = (0..200).map(|_| policy.backoff(attempts)).collect();
            let bound = Duration::from_millis(bound);
            assert!(waits.iter().all(|wait| *wait <= bound), "{attempts}");
            assert!(
                waits.iter().any(|wait| *wait > bound / 2)
                    && waits.iter().any(|wait| *wait < bound / 2),
                "jittered over the whole range: {attempts}"
            );
        }
    }
}
