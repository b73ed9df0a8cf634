//! The rate-limit headers OpenAI's API sends and clients read to pace themselves:
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, for the tightest limit of each.
//! Remaining is this proxy's view: what its lease has left plus what the control plane had
//! not granted to any proxy at its last grant.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use crate::budgets::leases::LeaseBook;
use crate::routing::tables::RateCounter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    limit: u64,
    remaining: u64,
    reset: Duration,
}

/// Where a request stands against its tightest requests limit and tightest tokens limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    requests: Option<Standing>,
    tokens: Option<Standing>,
}

impl RateHeaders {
    pub fn of(book: &LeaseBook, requests: &[&RateCounter], tokens: &[&RateCounter]) -> Self {
        let now = sluice_shared::time::now_us();
        Self {
            requests: tightest(book, requests, now),
            tokens: tightest(book, tokens, now),
        }
    }

    pub fn write(&self, headers: &mut HeaderMap) {
        for (standing, limit, remaining, reset) in [
            (
                self.requests,
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ),
            (
                self.tokens,
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ),
        ] {
            let Some(standing) = standing else {
                continue;
            };
            headers.insert(limit, HeaderValue::from(standing.limit));
            headers.insert(remaining, HeaderValue::from(standing.remaining));
            if let Ok(value) = HeaderValue::from_str(&go_duration(standing.reset)) {
                headers.insert(reset, value);
            }
        }
    }
}

fn tightest(book: &LeaseBook, counters: &[&RateCounter], now_us: i64) -> Option<Standing> {
    counters
        .iter()
        .map(|counter| {
            let window = counter.window.start_us(now_us);
            let remaining = book
                .with_cell(&counter.lease_id, |cell| cell.standing(window))
                .flatten()
                .map_or(counter.limit, |(left, unallocated)| {
                    u64::try_from(left.saturating_add(unallocated))
                        .unwrap_or(0)
                        .min(counter.limit)
                });
            let end = counter.window.end_us(now_us);
            Standing {
                limit: counter.limit,
                remaining,
                reset: Duration::from_micros(u64::try_from(end - now_us).unwrap_or(0)),
            }
        })
        .min_by_key(|s| (s.remaining, s.limit))
}

/// A duration as OpenAI's headers spell it (Go's `time.Duration` format, to the
/// millisecond): `20ms`, `1s`, `59.2s`, `6m0s`, `1h2m3.5s`.
fn go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, fraction) = (rest / 1_000, rest % 1_000);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    text.push_str(&seconds.to_string());
    if fraction > 0 {
        let digits = format!("{fraction:03}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('s');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_openai_writes_them() {
        for (millis, text) in [
            (20, "20ms"),
            (0, "0ms"),
            (1_000, "1s"),
            (59_200, "59.2s"),
            (360_000, "6m0s"),
            (3_723_500, "1h2m3.5s"),
            (3_600_000, "1h0m0s"),
            (1_005, "1.005s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(millis)), text);
        }
    }
}
