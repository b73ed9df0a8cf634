//! Rate limits on the request path. Each limited count of a limit (requests, or input plus
//! output tokens) is leased like a HARD budget: the control plane grants each proxy a share of
//! the window and rebalances as proxies come and go, and a request takes one request and its
//! largest possible tokens (prompt at one token per four bytes, plus its `max_tokens` or the
//! default) with a compare-and-swap per count. Tokens settle to what the upstream reported when
//! the usage record is written.
//!
//! The bound: within a window, the requests admitted fleet-wide never pass the limit (the
//! allowances granted never sum past it); tokens can pass it only by what requests in flight
//! used beyond their reservation. Windows are fixed and aligned to UTC, so across a window's
//! edge a client can be admitted up to twice the limit within one window's length.
//!
//! When a count has no current lease and the control plane cannot be reached, the request is
//! admitted unchecked and counted (`sluice_rate_limits_unenforced_total`): a rate limit guards
//! a shared resource, not money, and the fleet keeps serving while its control plane is away.

mod headers;

use std::time::Duration;

use http::HeaderMap;
use sluice_shared::error_code::ErrorCode;

use crate::budgets::leases::{LeaseBook, Refusal, Reservation};
use crate::error_response::GatewayError;
use crate::gateway::Gateway;
use crate::routing::tables::{RateCounter, RateDimension, RoutingTables};

pub use headers::RateHeaders;

/// Two counts (requests, tokens) for each of a request's four scopes.
const MAX_COUNTS: usize = 8;

/// A request's hold on its rate limits: one request in each requests count, its largest
/// possible tokens in each tokens count. Settled when its usage record is written; dropped, it
/// gives everything back.
pub struct RateHold {
    requests: Option<Reservation>,
    tokens: Option<Reservation>,
}

impl RateHold {
    /// `admitted`, or `unenforced` when no lease could be had from an unreachable control
    /// plane.
    pub fn decision(&self) -> &'static str {
        if self.requests.is_none() && self.tokens.is_none() {
            "unenforced"
        } else {
            "admitted"
        }
    }

    /// The request counted, its tokens settled to what it used.
    pub fn settle(self, tokens_used: u64) {
        if let Some(requests) = self.requests {
            requests.settle(1);
        }
        if let Some(tokens) = self.tokens {
            tokens.settle(i64::try_from(tokens_used).unwrap_or(i64::MAX));
        }
    }
}

/// What admission under rate limits gives a request: its hold, and the headers that tell the
/// client where it stands (both `None` when no limit covers it).
pub struct Admitted<'t> {
    pub hold: Option<RateHold>,
    pub headers: Option<RateHeaders<'t>>,
}

/// Takes the request's share of every rate limit that covers it (its organisation, project,
/// virtual key and model), or refuses it with `rate_limited` and the wait until its window
/// ends.
pub async fn admit<'t>(
    gateway: &Gateway,
    tables: &'t RoutingTables,
    scope_ids: [&str; 4],
    largest_tokens: u64,
) -> Result<Admitted<'t>, GatewayError> {
    let none = Admitted {
        hold: None,
        headers: None,
    };
    if tables.rate_counters.is_empty() {
        return Ok(none);
    }
    // Found once: each walk of the scopes hashes four ids. A snapshot holds at most one limit
    // per scope (the tables refuse more), so a request meets at most eight counts.
    let mut found: [Option<&RateCounter>; MAX_COUNTS] = [None; MAX_COUNTS];
    for (slot, counter) in found.iter_mut().zip(tables.rate_counters_for(scope_ids)) {
        *slot = Some(counter);
    }
    if found[0].is_none() {
        return Ok(none);
    }
    let counters = found.iter().map_while(|c| *c);
    let requests = counters
        .clone()
        .filter(|c| c.dimension == RateDimension::Requests);
    let tokens = counters.filter(|c| c.dimension == RateDimension::Tokens);
    let book = &gateway.rate_leases;
    let standing = || RateHeaders::of(book, requests.clone(), None, tokens.clone(), None);
    if let Some(counter) = tokens.clone().find(|c| largest_tokens > c.limit) {
        let error = GatewayError::new(
            ErrorCode::InvalidRequest,
            format!(
                "this request may use up to {largest_tokens} tokens (its prompt plus max_tokens), more than rate limit {} allows in a whole window ({} tokens): lower max_tokens",
                counter.name, counter.limit
            ),
        )
        .with_param("max_tokens");
        return Err(with_headers(error, standing()));
    }
    let largest = i64::try_from(largest_tokens).unwrap_or(i64::MAX);
    let held_requests = match take(gateway, book, requests.clone(), 1).await {
        Ok(held) => held,
        Err(error) => return Err(with_headers(error, standing())),
    };
    let held_tokens = match take(gateway, book, tokens.clone(), largest).await {
        Ok(held) => held,
        Err(error) => {
            drop(held_requests);
            return Err(with_headers(error, standing()));
        }
    };
    let headers = RateHeaders::of(
        book,
        requests,
        held_requests.as_ref(),
        tokens,
        held_tokens.as_ref(),
    );
    Ok(Admitted {
        hold: Some(RateHold {
            requests: held_requests,
            tokens: held_tokens,
        }),
        headers: Some(headers),
    })
}

/// Reserves `amount` in each counter: `None` when there are none, or when the request goes
/// unchecked because no lease can be had from an unreachable control plane.
async fn take<'t>(
    gateway: &Gateway,
    book: &LeaseBook,
    mut counters: impl Iterator<Item = &'t RateCounter> + Clone,
    amount: i64,
) -> Result<Option<Reservation>, GatewayError> {
    if counters.clone().next().is_none() {
        return Ok(None);
    }
    let refusal = match book.reserve(counters.clone(), amount).await {
        Ok(reservation) => return Ok(Some(reservation)),
        Err(refusal) => refusal,
    };
    let now = sluice_shared::time::now_us();
    match refusal {
        Refusal::NoRoom(_) if !book.reachable() => {
            gateway
                .metrics
                .rate_limits_unenforced_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(None)
        }
        Refusal::Spent(index) => {
            let counter = counters.nth(index);
            let wait = counter.map_or(Duration::from_secs(1), |c| until_window_end(c, now));
            let (what, limit, name) = counter.map_or(("requests", 0, ""), |c| {
                (c.dimension.as_str(), c.limit, c.name.as_str())
            });
            let mut error = GatewayError::new(
                ErrorCode::RateLimited,
                format!(
                    "rate limit {name} is reached: its {limit} {what} per window are taken until the window ends in {} s; retry then, or raise it with `sluicectl rate-limit update`",
                    wait.as_secs_f64().ceil()
                ),
            );
            error.retry_after = Some(wait);
            Err(error)
        }
        Refusal::NoRoom(index) => {
            let counter = counters.nth(index);
            let name = counter.map_or("", |c| c.name.as_str());
            let wait = counter.map_or(Duration::from_secs(1), |c| {
                until_window_end(c, now).min(Duration::from_secs(1))
            });
            let mut error = GatewayError::new(
                ErrorCode::RateLimited,
                format!(
                    "rate limit {name} has no room for this request on this proxy right now; retry shortly"
                ),
            );
            error.retry_after = Some(wait);
            Err(error)
        }
    }
}

fn until_window_end(counter: &RateCounter, now_us: i64) -> Duration {
    let end = counter.window.end_us(now_us);
    Duration::from_micros(u64::try_from(end.saturating_sub(now_us)).unwrap_or(0))
}

fn with_headers(mut error: GatewayError, standing: RateHeaders<'_>) -> GatewayError {
    let mut headers = HeaderMap::new();
    standing.write(&mut headers);
    error.headers = Some(Box::new(headers));
    error
}
