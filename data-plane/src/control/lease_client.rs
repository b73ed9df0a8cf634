//! Keeps this proxy's budget and rate leases current: every refresh interval, or at once when
//! a lease runs low or a request waits, it reports what each HARD budget's and each rate
//! limit's lease has used and takes what the control plane grants. It runs on its own RPC, so neither the config stream nor a
//! usage backlog can hold it up; when the control plane is away, leases simply run out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_proto::usage::v1 as pb;
use sluice_proto::usage::v1::lease_service_client::LeaseServiceClient;
use sluice_shared::secret::SecretString;
use tonic::transport::Channel;

use crate::budgets::leases::Grant;
use crate::gateway::Gateway;
use crate::routing::tables::{RateCounter, RateDimension};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct LeaseClient {
    pub gateway: Arc<Gateway>,
    pub channel: Channel,
    pub token: Arc<SecretString>,
    pub proxy_id: String,
    pub refresh: Duration,
}

impl LeaseClient {
    pub async fn run(self) {
        let mut client = LeaseServiceClient::new(self.channel.clone());
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let budgets = &self.gateway.leases;
        let rates = &self.gateway.rate_leases;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = budgets.nudge.notified() => {}
                () = rates.nudge.notified() => {}
            }
            let Some(tables) = self.gateway.tables.load_full() else {
                continue;
            };
            budgets.track(&tables.budgets);
            rates.track(&tables.rate_counters);
            if tables.budgets.is_empty() && tables.rate_counters.is_empty() {
                continue;
            }
            let now = sluice_shared::time::now_us();
            let uses: Vec<pb::LeaseUse> = tables
                .budgets
                .iter()
                .filter_map(|budget| {
                    let cell = budgets.cell(&budget.id)?;
                    let window = budget.window.start_us(now);
                    if !cell.due(window, now) {
                        return None;
                    }
                    let (window_start_us, used_micros, wanted_micros) = cell.report(window);
                    Some(pb::LeaseUse {
                        budget_id: budget.id.clone(),
                        window_start_us,
                        used_micros,
                        wanted_micros,
                    })
                })
                .collect();
            let rate_uses = tables
                .rate_counters
                .iter()
                .filter_map(|counter| {
                    let cell = rates.cell(&counter.lease_id)?;
                    let window = counter.window.start_us(now);
                    if !cell.due(window, now) {
                        return None;
                    }
                    let (window_start_us, used, wanted) = cell.report(window);
                    Some(pb::RateUse {
                        rate_limit_id: counter.limit_id.clone(),
                        dimension: match counter.dimension {
                            RateDimension::Requests => pb::RateDimension::Requests,
                            RateDimension::Tokens => pb::RateDimension::Tokens,
                        } as i32,
                        window_start_us,
                        used,
                        wanted,
                    })
                })
                .collect::<Vec<_>>();
            if uses.is_empty() && rate_uses.is_empty() {
                continue;
            }
            match self.acquire(&mut client, uses, rate_uses).await {
                Ok(response) => {
                    budgets.reachable.store(true, Ordering::Relaxed);
                    rates.reachable.store(true, Ordering::Relaxed);
                    budgets.apply(
                        response
                            .leases
                            .into_iter()
                            .map(|l| Grant {
                                lease_id: l.budget_id,
                                window_start_us: l.window_start_us,
                                allowance: l.allowance_micros,
                                expires_at_us: l.expires_at_us,
                                exhausted: l.exhausted,
                                unallocated: 0,
                            })
                            .collect(),
                    );
                    rates.apply(
                        response
                            .rate_leases
                            .into_iter()
                            .filter_map(|l| {
                                let dimension = match pb::RateDimension::try_from(l.dimension) {
                                    Ok(pb::RateDimension::Requests) => RateDimension::Requests,
                                    Ok(pb::RateDimension::Tokens) => RateDimension::Tokens,
                                    _ => return None,
                                };
                                Some(Grant {
                                    lease_id: RateCounter::lease_id_of(&l.rate_limit_id, dimension),
                                    window_start_us: l.window_start_us,
                                    allowance: l.allowance,
                                    expires_at_us: l.expires_at_us,
                                    exhausted: l.exhausted,
                                    unallocated: l.unallocated,
                                })
                            })
                            .collect(),
                    );
                }
                Err(error) => {
                    budgets.forget_reports();
                    rates.forget_reports();
                    rates.reachable.store(false, Ordering::Relaxed);
                    if budgets.reachable.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, "cannot renew leases; spending only what is held until it expires (HARD budgets then refuse; rate limits then go unchecked)");
                    }
                    self.gateway
                        .metrics
                        .lease_renewals_failed_total
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    async fn acquire(
        &self,
        client: &mut LeaseServiceClient<Channel>,
        uses: Vec<pb::LeaseUse>,
        rate_uses: Vec<pb::RateUse>,
    ) -> Result<pb::AcquireLeasesResponse, tonic::Status> {
        let mut request = tonic::Request::new(pb::AcquireLeasesRequest {
            proxy_id: self.proxy_id.clone(),
            epoch: self.gateway.leases.epoch,
            uses,
            rate_uses,
        });
        crate::control::token::authorize(&mut request, &self.token)?;
        request.set_timeout(CALL_TIMEOUT);
        let response = tokio::time::timeout(CALL_TIMEOUT, client.acquire(request))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("lease renewal timed out"))??;
        Ok(response.into_inner())
    }
}
