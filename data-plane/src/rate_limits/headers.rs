//! The rate-limit headers OpenAI's API sends and clients read to pace themselves:
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, for the tightest limit of each.
//! Remaining is this proxy's view: what its lease has left plus what the control plane had
//! not granted to any proxy at its last grant.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::budgets::leases::LeaseBook;
use crate::routing::tables::RateCounter;

// Names made once: one inserted from a `&str` is copied into a new allocation every time.
const REQUESTS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

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
    pub fn of<'t>(
        book: &LeaseBook,
        requests: impl Iterator<Item = &'t RateCounter>,
        tokens: impl Iterator<Item = &'t RateCounter>,
    ) -> Self {
        let now = sluice_shared::time::now_us();
        Self {
            requests: tightest(book, requests, now),
            tokens: tightest(book, tokens, now),
        }
    }

    /// Writes the headers. Their values are spelled into one buffer and each header takes
    /// its slice of it: two allocations for all six, where a value each would take six and
    /// more.
    pub fn write(&self, headers: &mut HeaderMap) {
        let mut text = BytesMut::with_capacity(128);
        let value = |text: &mut BytesMut, spell: &dyn Fn(&mut BytesMut)| {
            spell(text);
            HeaderValue::from_maybe_shared(text.split().freeze()).ok()
        };
        for (standing, names) in [(self.requests, REQUESTS), (self.tokens, TOKENS)] {
            let Some(standing) = standing else {
                continue;
            };
            let [limit, remaining, reset] = names;
            let spelled = [
                (limit, value(&mut text, &|t| number(t, standing.limit))),
                (
                    remaining,
                    value(&mut text, &|t| number(t, standing.remaining)),
                ),
                (reset, value(&mut text, &|t| go_duration(t, standing.reset))),
            ];
            for (name, spelled) in spelled {
                if let Some(spelled) = spelled {
                    headers.insert(name, spelled);
                }
            }
        }
    }
}

fn number(text: &mut BytesMut, value: u64) {
    let _ = write!(text, "{value}");
}

fn tightest<'t>(
    book: &LeaseBook,
    counters: impl Iterator<Item = &'t RateCounter>,
    now_us: i64,
) -> Option<Standing> {
    counters
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
fn go_duration(text: &mut BytesMut, duration: Duration) {
    let millis = duration.as_millis();
    if millis < 1_000 {
        let _ = write!(text, "{millis}ms");
        return;
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, fraction) = (rest / 1_000, rest % 1_000);
    if hours > 0 {
        let _ = write!(text, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(text, "{minutes}m");
    }
    let _ = write!(text, "{seconds}");
    if fraction > 0 {
        // Milliseconds as a decimal fraction, without trailing zeros: 200 → .2, 5 → .005.
        let (mut digits, mut width) = (fraction, 3);
        while digits % 10 == 0 {
            digits /= 10;
            width -= 1;
        }
        let _ = write!(text, ".{digits:0width$}");
    }
    text.extend_from_slice(b"s");
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
            let mut spelled = BytesMut::new();
            go_duration(&mut spelled, Duration::from_millis(millis));
            assert_eq!(spelled, text.as_bytes());
        }
    }
}
