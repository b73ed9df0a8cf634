//! How long an upstream call may take, part by part: connecting, the first byte (a stream's
//! first event), the gap between chunks, and the whole request. The proxy's defaults under a
//! provider's record (its `timeout_ms`, then its `sluice.common.v1.TimeoutPolicy`), under a
//! model's; a request may ask for a shorter total, never a longer one.

use std::time::Duration;

use sluice_proto::common::v1 as common;
use tokio::time::Instant;

/// Connecting takes a round trip or three and a TLS handshake; past this the host is down.
const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
/// The official OpenAI and Anthropic SDKs give a request ten minutes by default.
const DEFAULT_TOTAL: Duration = Duration::from_secs(600);
const MAX_CONNECT_MS: u32 = 60_000;
const MAX_PART_MS: u32 = 600_000;
const MAX_TOTAL_MS: u32 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutPolicy {
    pub connect: Duration,
    /// From an attempt's start to its answer's headers and, streamed, its first event.
    pub first_byte: Duration,
    /// Between an answer's chunks.
    pub idle: Duration,
    /// From the request's start to its answer's last byte, over every attempt.
    pub total: Duration,
}

/// Which timeout ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    FirstByte,
    Idle,
    Total,
}

impl TimeoutKind {
    /// The setting that bounds it, as the admin API and `sluicectl` name it.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Connect => "connect_ms",
            Self::FirstByte => "first_byte_ms",
            Self::Idle => "idle_ms",
            Self::Total => "total_ms",
        }
    }
}

impl TimeoutPolicy {
    /// The defaults under a provider whose record gives `timeout_ms`: the wait for its first
    /// byte and between its chunks.
    pub fn of_provider(timeout_ms: u32) -> Self {
        let wait = millis(timeout_ms, MAX_PART_MS);
        Self {
            connect: DEFAULT_CONNECT.min(wait),
            first_byte: wait,
            idle: wait,
            total: DEFAULT_TOTAL,
        }
    }

    /// This policy with every field `record` sets replaced, each held within the bounds the
    /// control plane also checks.
    pub fn overlaid(self, record: Option<&common::TimeoutPolicy>) -> Self {
        let Some(record) = record else {
            return self;
        };
        let set = |given: Option<u32>, current: Duration, max: u32| {
            given.map_or(current, |ms| millis(ms, max))
        };
        Self {
            connect: set(record.connect_ms, self.connect, MAX_CONNECT_MS),
            first_byte: set(record.first_byte_ms, self.first_byte, MAX_PART_MS),
            idle: set(record.idle_ms, self.idle, MAX_PART_MS),
            total: set(record.total_ms, self.total, MAX_TOTAL_MS),
        }
    }
}

/// When one attempt's parts must be done by: its deployment's policy, counted from the
/// attempt's start (connect, first byte) or from the last chunk (idle), each cut short by the
/// request's total (the deployment's, or the shorter one the request asked for).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    policy: TimeoutPolicy,
    attempt_started: Instant,
    total: Duration,
    total_by: Instant,
}

/// A timeout that ran out: which, after how long, and whether the request had gone out by
/// then (the upstream may then have worked on it, and billed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub kind: TimeoutKind,
    pub after: Duration,
    pub sent: bool,
}

impl Expiry {
    /// What ran out at `upstream` (as the message names it), and the setting that bounds it.
    pub fn describe(&self, upstream: &str) -> String {
        let Self { kind, after, .. } = self;
        let what = match kind {
            TimeoutKind::Connect => "could not be connected to",
            TimeoutKind::FirstByte => "sent no answer",
            TimeoutKind::Idle => "sent nothing more of its answer",
            TimeoutKind::Total => "did not finish the request",
        };
        let setting = kind.setting();
        match kind {
            TimeoutKind::Total => format!(
                "{upstream} {what} within the request's total timeout ({after:?}; timeouts.{setting} or the x-sluice-timeout-ms header)"
            ),
            _ => format!("{upstream} {what} within {after:?} (timeouts.{setting})"),
        }
    }
}

impl Deadlines {
    /// An attempt starting now at a deployment with `policy`, for a request that started at
    /// `request_started` and asked for at most `asked` in all.
    pub fn new(policy: TimeoutPolicy, request_started: Instant, asked: Option<Duration>) -> Self {
        let total = asked.map_or(policy.total, |asked| asked.min(policy.total));
        Self {
            policy,
            attempt_started: Instant::now(),
            total,
            total_by: request_started + total,
        }
    }

    /// Whether the request's total has run out.
    pub fn total_expired(&self) -> bool {
        Instant::now() >= self.total_by
    }

    /// Whether a wait of `wait` from now ends before the request's total does.
    pub fn leaves_room_for(&self, wait: Duration) -> bool {
        Instant::now() + wait < self.total_by
    }

    /// When `kind` runs out for a part that began at `from` (the attempt's start for connect
    /// and first byte, the last chunk for idle), and which timeout that is: the total's,
    /// when it comes first.
    pub fn bound(&self, kind: TimeoutKind, from: Instant) -> (Instant, TimeoutKind) {
        let own = match kind {
            TimeoutKind::Connect => self.attempt_started + self.policy.connect,
            TimeoutKind::FirstByte => self.attempt_started + self.policy.first_byte,
            TimeoutKind::Idle => from + self.policy.idle,
            TimeoutKind::Total => self.total_by,
        };
        if own < self.total_by {
            (own, kind)
        } else {
            (self.total_by, TimeoutKind::Total)
        }
    }

    pub fn attempt_started(&self) -> Instant {
        self.attempt_started
    }

    /// The expiry of `kind`, with the length it was set to.
    pub fn expired(&self, kind: TimeoutKind, sent: bool) -> Expiry {
        let after = match kind {
            TimeoutKind::Connect => self.policy.connect,
            TimeoutKind::FirstByte => self.policy.first_byte,
            TimeoutKind::Idle => self.policy.idle,
            TimeoutKind::Total => self.total,
        };
        Expiry { kind, after, sent }
    }
}

fn millis(ms: u32, max: u32) -> Duration {
    Duration::from_millis(u64::from(ms.clamp(1, max)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_overlays_its_provider_field_by_field() {
        let provider = TimeoutPolicy::of_provider(30_000).overlaid(Some(&common::TimeoutPolicy {
            idle_ms: Some(2_000),
            ..Default::default()
        }));
        let model = provider.overlaid(Some(&common::TimeoutPolicy {
            total_ms: Some(90_000),
            ..Default::default()
        }));
        assert_eq!(model.connect, DEFAULT_CONNECT);
        assert_eq!(model.first_byte, Duration::from_secs(30));
        assert_eq!(model.idle, Duration::from_secs(2));
        assert_eq!(model.total, Duration::from_secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn the_total_cuts_every_part_short() {
        let policy = TimeoutPolicy::of_provider(10_000);
        let started = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let deadlines = Deadlines::new(policy, started, Some(Duration::from_secs(12)));
        let now = Instant::now();
        assert_eq!(
            deadlines.bound(TimeoutKind::Connect, now),
            (now + Duration::from_secs(5), TimeoutKind::Connect)
        );
        // Ten seconds from the attempt's start is past twelve from the request's.
        assert_eq!(
            deadlines.bound(TimeoutKind::FirstByte, now),
            (started + Duration::from_secs(12), TimeoutKind::Total)
        );
        assert!(deadlines.leaves_room_for(Duration::from_secs(8)));
        assert!(!deadlines.leaves_room_for(Duration::from_secs(9)));
        assert_eq!(
            deadlines.expired(TimeoutKind::Total, true).after,
            Duration::from_secs(12)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_cannot_ask_for_more_than_its_deployment_gives() {
        let policy = TimeoutPolicy::of_provider(10_000);
        let started = Instant::now();
        let deadlines = Deadlines::new(policy, started, Some(Duration::from_secs(7_200)));
        assert_eq!(
            deadlines.bound(TimeoutKind::Total, started).0,
            started + DEFAULT_TOTAL
        );
        tokio::time::advance(DEFAULT_TOTAL).await;
        assert!(deadlines.total_expired());
    }

    #[test]
    fn a_short_provider_timeout_also_bounds_connecting() {
        let policy = TimeoutPolicy::of_provider(800);
        assert_eq!(policy.connect, Duration::from_millis(800));
        assert_eq!(policy.total, DEFAULT_TOTAL);
    }

    #[test]
    fn settings_out_of_bounds_are_held_within_them() {
        let policy = TimeoutPolicy::of_provider(0).overlaid(Some(&common::TimeoutPolicy {
            connect_ms: Some(u32::MAX),
            first_byte_ms: Some(0),
            idle_ms: Some(u32::MAX),
            total_ms: Some(u32::MAX),
        }));
        assert_eq!(policy.connect, Duration::from_secs(60));
        assert_eq!(policy.first_byte, Duration::from_millis(1));
        assert_eq!(policy.idle, Duration::from_secs(600));
        assert_eq!(policy.total, Duration::from_secs(3_600));
    }
}
