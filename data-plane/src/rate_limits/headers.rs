//! The rate-limit headers OpenAI's API sends and clients read to pace themselves:
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, for the tightest limit of each.
//! Remaining is this proxy's view: what its lease has left plus what the control plane had
//! not granted to any proxy at its last grant.

use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName};

use crate::budgets::leases::{LeaseBook, Reservation};
use crate::http_body::HeaderLines;
use crate::routing::tables::RateCounter;

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

#[derive(Debug, Clone, Copy)]
struct Standing<'t> {
    counter: &'t RateCounter,
    remaining: u64,
    reset: Duration,
}

/// Where a request stands against its tightest requests limit and tightest tokens limit.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders<'t> {
    requests: Option<Standing<'t>>,
    tokens: Option<Standing<'t>>,
}

impl<'t> RateHeaders<'t> {
    /// From the cells a request holds, in the order of its counters (no lookups), or, where
    /// it holds none (refused, or admitted unchecked), from the book.
    pub fn of(
        book: &LeaseBook,
        requests: impl Iterator<Item = &'t RateCounter>,
        held_requests: Option<&Reservation>,
        tokens: impl Iterator<Item = &'t RateCounter>,
        held_tokens: Option<&Reservation>,
    ) -> Self {
        let now = sluice_shared::time::now_us();
        Self {
            requests: tightest(book, requests, held_requests, now),
            tokens: tightest(book, tokens, held_tokens, now),
        }
    }

    /// The headers as lines for the answer's head: one buffer, no `HeaderMap` entries.
    pub fn render(&self) -> HeaderLines {
        let mut text = BytesMut::with_capacity(320);
        let mut last_reset: Option<(u128, usize, usize)> = None;
        for (standing, [limit, remaining, reset]) in
            [(self.requests, REQUESTS), (self.tokens, TOKENS)]
        {
            let Some(standing) = standing else {
                continue;
            };
            line(&mut text, &limit, |t| {
                t.extend_from_slice(standing.counter.limit_text.as_bytes());
            });
            line(&mut text, &remaining, |t| number(t, standing.remaining));
            let millis = standing.reset.as_millis();
            line(&mut text, &reset, |t| match last_reset {
                // Both limits usually share a window: its reset is spelled once.
                Some((same, from, to)) if same == millis => t.extend_from_within(from..to),
                _ => {
                    let from = t.len();
                    go_duration(t, standing.reset);
                    last_reset = Some((millis, from, t.len()));
                }
            });
        }
        HeaderLines(text.freeze())
    }

    /// The headers into `headers` (an error's answer, which is built apart).
    pub fn write(&self, headers: &mut HeaderMap) {
        self.render().move_into(headers);
    }
}

fn line(text: &mut BytesMut, name: &HeaderName, value: impl FnOnce(&mut BytesMut)) {
    text.extend_from_slice(name.as_str().as_bytes());
    text.extend_from_slice(b": ");
    value(text);
    text.extend_from_slice(b"\r\n");
}

/// A number's decimal digits, without the formatting machinery (a few times its cost).
fn number(text: &mut BytesMut, value: u64) {
    let mut digits = [0_u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.extend_from_slice(&digits[start..]);
}

fn tightest<'t>(
    book: &LeaseBook,
    counters: impl Iterator<Item = &'t RateCounter>,
    held: Option<&Reservation>,
    now_us: i64,
) -> Option<Standing<'t>> {
    let standing = |counter: &'t RateCounter, cell: Option<(i64, i64)>| {
        let remaining = cell.map_or(counter.limit, |(left, unallocated)| {
            u64::try_from(left.saturating_add(unallocated))
                .unwrap_or(0)
                .min(counter.limit)
        });
        let end = counter.window.end_us(now_us);
        Standing {
            counter,
            remaining,
            reset: Duration::from_micros(u64::try_from(end - now_us).unwrap_or(0)),
        }
    };
    let window = |counter: &RateCounter| counter.window.start_us(now_us);
    let least = |a: &Standing<'t>| (a.remaining, a.counter.limit);
    match held {
        Some(held) => counters
            .zip(held.cells())
            .map(|(counter, cell)| standing(counter, cell.standing(window(counter))))
            .min_by_key(least),
        None => counters
            .map(|counter| {
                let cell = book
                    .with_cell(&counter.lease_id, |cell| cell.standing(window(counter)))
                    .flatten();
                standing(counter, cell)
            })
            .min_by_key(least),
    }
}

/// A duration as OpenAI's headers spell it (Go's `time.Duration` format, to the
/// millisecond): `20ms`, `1s`, `59.2s`, `6m0s`, `1h2m3.5s`.
fn go_duration(text: &mut BytesMut, duration: Duration) {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis < 1_000 {
        number(text, millis);
        text.extend_from_slice(b"ms");
        return;
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, fraction) = (rest / 1_000, rest % 1_000);
    if hours > 0 {
        number(text, hours);
        text.extend_from_slice(b"h");
    }
    if hours > 0 || minutes > 0 {
        number(text, minutes);
        text.extend_from_slice(b"m");
    }
    number(text, seconds);
    if fraction > 0 {
        // Milliseconds as a decimal fraction without trailing zeros: 200 → .2, 5 → .005.
        let digits = [fraction / 100, fraction / 10 % 10, fraction % 10].map(|d| b'0' + d as u8);
        let kept = digits
            .iter()
            .rposition(|d| *d != b'0')
            .map_or(0, |last| last + 1);
        text.extend_from_slice(b".");
        text.extend_from_slice(&digits[..kept]);
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
            (1_050, "1.05s"),
            (u64::MAX, "5124095576030h25m51.615s"),
        ] {
            let mut spelled = BytesMut::new();
            go_duration(&mut spelled, Duration::from_millis(millis));
            assert_eq!(spelled, text.as_bytes());
        }
        for value in [0, 7, 10, 99, 1_000_000_000, u64::MAX] {
            let mut spelled = BytesMut::new();
            number(&mut spelled, value);
            assert_eq!(spelled, value.to_string().as_bytes());
        }
    }
}
