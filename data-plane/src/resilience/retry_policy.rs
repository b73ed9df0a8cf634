//! How hard a request tries an upstream: the proxy's defaults, overlaid by what a provider's
//! and then a model's record set (`sluice.common.v1.RetryPolicy`; an unset field inherits).
//! Each deployment of a snapshot holds its own, made once when the snapshot is applied.

use std::time::Duration;

use sluice_proto::common::v1 as common;

/// How hard a request tries. The defaults fit LLM traffic: a provider's transient 5xx or 429
/// is usually gone within a second, and a client waits seconds for an answer anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upstream attempts a request makes at most, over every deployment and key.
    pub max_attempts: u32,
    /// Attempts at one deployment (over its keys).
    pub per_deployment: u32,
    /// Attempts with one key of a deployment.
    pub per_key: u32,
    /// The first retry waits up to this long; each next one up to twice the last, capped.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The longest wait an upstream may ask for (`Retry-After`) and still be retried; a
    /// longer one moves the request on instead.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            per_deployment: 3,
            per_key: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// This policy with every field `record` sets replaced, each held within the bounds the
    /// control plane also checks (a snapshot is trusted, but a policy never runs wild).
    pub fn overlaid(self, record: Option<&common::RetryPolicy>) -> Self {
        let Some(record) = record else {
            return self;
        };
        let attempts = |set: Option<u32>, current: u32| set.map_or(current, |n| n.clamp(1, 10));
        let millis = |set: Option<u32>, current: Duration, floor: u32| {
            set.map_or(current, |ms| {
                Duration::from_millis(u64::from(ms.clamp(floor, 600_000)))
            })
        };
        let backoff_max = millis(record.backoff_max_ms, self.backoff_max, 1);
        Self {
            max_attempts: attempts(record.max_attempts, self.max_attempts),
            per_deployment: attempts(record.attempts_per_deployment, self.per_deployment),
            per_key: attempts(record.attempts_per_key, self.per_key),
            backoff_base: millis(record.backoff_base_ms, self.backoff_base, 1).min(backoff_max),
            backoff_max,
            max_retry_after: millis(record.max_retry_after_ms, self.max_retry_after, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_overrides_its_provider_which_overrides_the_default_field_by_field() {
        let provider = common::RetryPolicy {
            max_attempts: Some(6),
            attempts_per_key: Some(3),
            ..Default::default()
        };
        let model = common::RetryPolicy {
            max_attempts: Some(2),
            max_retry_after_ms: Some(0),
            ..Default::default()
        };
        let policy = RetryPolicy::default()
            .overlaid(Some(&provider))
            .overlaid(Some(&model));
        assert_eq!(policy.max_attempts, 2);
        assert_eq!(policy.per_key, 3);
        assert_eq!(policy.per_deployment, RetryPolicy::default().per_deployment);
        assert_eq!(policy.max_retry_after, Duration::ZERO);
        assert_eq!(
            RetryPolicy::default().overlaid(None),
            RetryPolicy::default()
        );
    }

    #[test]
    fn settings_out_of_bounds_are_held_within_them() {
        let wild = common::RetryPolicy {
            max_attempts: Some(0),
            attempts_per_deployment: Some(1_000),
            backoff_base_ms: Some(90_000),
            backoff_max_ms: Some(50),
            ..Default::default()
        };
        let policy = RetryPolicy::default().overlaid(Some(&wild));
        assert_eq!(policy.max_attempts, 1);
        assert_eq!(policy.per_deployment, 10);
        assert_eq!(policy.backoff_max, Duration::from_millis(50));
        assert_eq!(
            policy.backoff_base,
            Duration::from_millis(50),
            "never above the cap"
        );
    }
}
