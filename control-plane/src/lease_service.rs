//! `sluice.usage.v1.LeaseService`: proxies renew their budget and rate leases and ask for
//! more. Budgets are one store transaction that never grants beyond what the budget has left
//! after every live lease's unspent allowance; rate limits another, that never lets a window's
//! allowances sum past the limit.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::usage::v1 as pb;
use sluice_proto::usage::v1::lease_service_server::LeaseService;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::store::{LeasePolicy, LeaseUse, RateDimension, RateUse, Store};

/// A proxy holds one lease per HARD budget, and two per rate limit, that cover its traffic.
const MAX_USES: usize = 10_000;
const MAX_ID: usize = 128;
/// Each live lease is offered about a quarter of its share of what is left, so that the
/// budget's end is approached in steps that shrink as it nears.
const SHARE_DIVISOR: i64 = 4;

pub struct LeaseGrants<S> {
    store: Arc<S>,
    policy: LeasePolicy,
    metrics: Arc<Metrics>,
}

impl<S> LeaseGrants<S> {
    pub fn new(store: Arc<S>, ttl: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            metrics,
            policy: LeasePolicy {
                ttl_us: i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX),
                share_divisor: SHARE_DIVISOR,
            },
        }
    }
}

#[tonic::async_trait]
impl<S: Store> LeaseService for LeaseGrants<S> {
    async fn acquire(
        &self,
        request: Request<pb::AcquireLeasesRequest>,
    ) -> Result<Response<pb::AcquireLeasesResponse>, Status> {
        let request = request.into_inner();
        crate::validation::proxy_id("proxy_id", &request.proxy_id)
            .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
        let epoch = i64::try_from(request.epoch)
            .ok()
            .filter(|epoch| *epoch > 0)
            .ok_or_else(|| Status::invalid_argument("epoch: a positive start time"))?;
        if request.uses.len() > MAX_USES || request.rate_uses.len() > MAX_USES {
            return Err(Status::invalid_argument(format!(
                "uses, rate_uses: at most {MAX_USES} each"
            )));
        }
        let rate_uses = request
            .rate_uses
            .into_iter()
            .map(rate_use)
            .collect::<Result<Vec<_>, Status>>()?;
        let uses = request
            .uses
            .into_iter()
            .map(|u| {
                if u.budget_id.is_empty() || u.budget_id.len() > MAX_ID {
                    return Err(Status::invalid_argument(
                        "uses[].budget_id: is required, at most 128 bytes",
                    ));
                }
                Ok(LeaseUse {
                    budget_id: u.budget_id,
                    window_start_us: u.window_start_us,
                    used_micros: u.used_micros.max(0),
                    wanted_micros: u.wanted_micros.max(0),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let now = sluice_shared::time::now_us();
        let unavailable = |error: crate::store::StoreError| {
            tracing::error!(%error, "cannot grant leases");
            Status::unavailable("cannot grant leases right now; retry")
        };
        let rate_grants = if rate_uses.is_empty() {
            Vec::new()
        } else {
            self.store
                .acquire_rate_leases(&request.proxy_id, epoch, rate_uses, now, self.policy)
                .await
                .map_err(unavailable)?
        };
        let grants = self
            .store
            .acquire_leases(&request.proxy_id, epoch, uses, now, self.policy)
            .await
            .map_err(unavailable)?;
        self.metrics
            .lease_grants_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Response::new(pb::AcquireLeasesResponse {
            leases: grants
                .into_iter()
                .map(|g| pb::Lease {
                    budget_id: g.budget_id,
                    window_start_us: g.window_start_us,
                    allowance_micros: g.allowance_micros,
                    expires_at_us: g.expires_at_us,
                    exhausted: g.exhausted,
                })
                .collect(),
            rate_leases: rate_grants
                .into_iter()
                .map(|g| pb::RateLease {
                    rate_limit_id: g.rate_limit_id,
                    dimension: match g.dimension {
                        RateDimension::Requests => pb::RateDimension::Requests,
                        RateDimension::Tokens => pb::RateDimension::Tokens,
                    } as i32,
                    window_start_us: g.window_start_us,
                    allowance: g.allowance,
                    expires_at_us: g.expires_at_us,
                    exhausted: g.exhausted,
                    unallocated: g.unallocated,
                })
                .collect(),
        }))
    }
}

fn rate_use(u: pb::RateUse) -> Result<RateUse, Status> {
    if u.rate_limit_id.is_empty() || u.rate_limit_id.len() > MAX_ID {
        return Err(Status::invalid_argument(
            "rate_uses[].rate_limit_id: is required, at most 128 bytes",
        ));
    }
    let dimension = match pb::RateDimension::try_from(u.dimension) {
        Ok(pb::RateDimension::Requests) => RateDimension::Requests,
        Ok(pb::RateDimension::Tokens) => RateDimension::Tokens,
        _ => {
            return Err(Status::invalid_argument(
                "rate_uses[].dimension: requests or tokens",
            ));
        }
    };
    Ok(RateUse {
        rate_limit_id: u.rate_limit_id,
        dimension,
        window_start_us: u.window_start_us,
        used: u.used.max(0),
        wanted: u.wanted.max(0),
    })
}
