//! `sluice.usage.v1.LeaseService`: proxies renew their budget leases and ask for more. Each
//! call is one store transaction that never grants beyond what the budget has left after every
//! live lease's unspent allowance.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::usage::v1 as pb;
use sluice_proto::usage::v1::lease_service_server::LeaseService;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::store::{LeasePolicy, LeaseUse, Store};

/// A proxy holds one lease per HARD budget that covers its traffic.
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
        if request.uses.len() > MAX_USES {
            return Err(Status::invalid_argument(format!(
                "uses: at most {MAX_USES}"
            )));
        }
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
        let grants = self
            .store
            .acquire_leases(
                &request.proxy_id,
                epoch,
                uses,
                sluice_shared::time::now_us(),
                self.policy,
            )
            .await
            .map_err(|error| {
                tracing::error!(%error, "cannot grant budget leases");
                Status::unavailable("cannot grant budget leases right now; retry")
            })?;
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
        }))
    }
}
