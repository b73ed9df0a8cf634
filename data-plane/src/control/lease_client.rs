//! Keeps this proxy's budget leases current: every refresh interval, or at once when a lease
//! runs low or a request waits, it reports what each HARD budget's lease has used and takes
//! what the control plane grants. It runs on its own RPC, so neither the config stream nor a
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
        let book = &self.gateway.leases;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = book.nudge.notified() => {}
            }
            let Some(tables) = self.gateway.tables.load_full() else {
                continue;
            };
            book.track(&tables.budgets);
            if tables.budgets.is_empty() {
                continue;
            }
            let now = sluice_shared::time::now_us();
            let uses = tables
                .budgets
                .iter()
                .filter_map(|budget| {
                    let cell = book.cell(&budget.id)?;
                    let (window_start_us, used_micros, wanted_micros) =
                        cell.report(budget.window.start_us(now));
                    Some(pb::LeaseUse {
                        budget_id: budget.id.clone(),
                        window_start_us,
                        used_micros,
                        wanted_micros,
                    })
                })
                .collect();
            match self.acquire(&mut client, uses).await {
                Ok(leases) => {
                    book.reachable.store(true, Ordering::Relaxed);
                    book.apply(
                        leases
                            .into_iter()
                            .map(|l| Grant {
                                budget_id: l.budget_id,
                                window_start_us: l.window_start_us,
                                allowance_micros: l.allowance_micros,
                                expires_at_us: l.expires_at_us,
                                exhausted: l.exhausted,
                            })
                            .collect(),
                    );
                }
                Err(error) => {
                    if book.reachable.swap(false, Ordering::Relaxed) {
                        tracing::warn!(%error, "cannot renew budget leases; spending only what is held until it expires");
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
    ) -> Result<Vec<pb::Lease>, tonic::Status> {
        let mut request = tonic::Request::new(pb::AcquireLeasesRequest {
            proxy_id: self.proxy_id.clone(),
            epoch: self.gateway.leases.epoch,
            uses,
        });
        crate::control::token::authorize(&mut request, &self.token)?;
        request.set_timeout(CALL_TIMEOUT);
        let response = tokio::time::timeout(CALL_TIMEOUT, client.acquire(request))
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("lease renewal timed out"))??;
        Ok(response.into_inner().leases)
    }
}
