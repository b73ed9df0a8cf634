//! Retry and timeout settings as `sluicectl provider` and `sluicectl model` take and show them.
//! A setting not given inherits: a model's from the provider of the deployment tried, a
//! provider's from the proxy's default.

use sluice_proto::common::v1::{RetryPolicy, TimeoutPolicy};

use crate::*;

#[derive(Args)]
pub(crate) struct RetryFlags {
    /// Upstream attempts a request makes at most, over every deployment and key (1-10;
    /// default 4).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Attempts at one deployment, over its provider's keys (1-10; default 3).
    #[arg(long)]
    attempts_per_deployment: Option<u32>,
    /// Attempts with one key (1-10; default 2).
    #[arg(long)]
    attempts_per_key: Option<u32>,
    /// The first retry's backoff bound, doubled for each next one (default 100).
    #[arg(long)]
    backoff_base_ms: Option<u32>,
    /// The most a backoff grows to (default 2 000).
    #[arg(long)]
    backoff_max_ms: Option<u32>,
    /// The longest Retry-After still waited out before retrying (default 5 000; 0: never wait).
    #[arg(long)]
    max_retry_after_ms: Option<u32>,
}

impl RetryFlags {
    /// The settings given, if any was.
    pub(crate) fn policy(&self) -> Option<RetryPolicy> {
        let policy = RetryPolicy {
            max_attempts: self.max_attempts,
            attempts_per_deployment: self.attempts_per_deployment,
            attempts_per_key: self.attempts_per_key,
            backoff_base_ms: self.backoff_base_ms,
            backoff_max_ms: self.backoff_max_ms,
            max_retry_after_ms: self.max_retry_after_ms,
        };
        (policy != RetryPolicy::default()).then_some(policy)
    }
}

#[derive(Args)]
pub(crate) struct TimeoutFlags {
    /// Connecting to the upstream, TLS included (1-60 000; default 5 000).
    #[arg(long)]
    connect_timeout_ms: Option<u32>,
    /// From an attempt's start to the answer's headers and, streamed, its first event
    /// (default: the provider's --timeout-ms).
    #[arg(long)]
    first_byte_timeout_ms: Option<u32>,
    /// Between an answer's chunks (default: the provider's --timeout-ms).
    #[arg(long)]
    idle_timeout_ms: Option<u32>,
    /// The whole request, every attempt and the answer's last byte included (1-3 600 000;
    /// default 600 000).
    #[arg(long)]
    total_timeout_ms: Option<u32>,
}

impl TimeoutFlags {
    /// The settings given, if any was.
    pub(crate) fn policy(&self) -> Option<TimeoutPolicy> {
        let policy = TimeoutPolicy {
            connect_ms: self.connect_timeout_ms,
            first_byte_ms: self.first_byte_timeout_ms,
            idle_ms: self.idle_timeout_ms,
            total_ms: self.total_timeout_ms,
        };
        (policy != TimeoutPolicy::default()).then_some(policy)
    }
}

/// The retry settings a provider or model holds, as `name=value` pairs (`inherited` for none).
pub(crate) fn retry_text(policy: Option<&RetryPolicy>) -> String {
    let Some(policy) = policy else {
        return settings_text([]);
    };
    settings_text([
        ("max_attempts", policy.max_attempts),
        ("attempts_per_deployment", policy.attempts_per_deployment),
        ("attempts_per_key", policy.attempts_per_key),
        ("backoff_base_ms", policy.backoff_base_ms),
        ("backoff_max_ms", policy.backoff_max_ms),
        ("max_retry_after_ms", policy.max_retry_after_ms),
    ])
}

/// The timeouts a provider or model holds, as `retry_text` shows retries.
pub(crate) fn timeouts_text(policy: Option<&TimeoutPolicy>) -> String {
    let Some(policy) = policy else {
        return settings_text([]);
    };
    settings_text([
        ("connect_ms", policy.connect_ms),
        ("first_byte_ms", policy.first_byte_ms),
        ("idle_ms", policy.idle_ms),
        ("total_ms", policy.total_ms),
    ])
}

fn settings_text<const N: usize>(settings: [(&str, Option<u32>); N]) -> String {
    let set: Vec<String> = settings
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
        .collect();
    if set.is_empty() {
        "inherited".to_owned()
    } else {
        set.join(",")
    }
}
