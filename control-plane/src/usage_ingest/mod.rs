//! `sluice.usage.v1.UsageService`: proxies stream usage batches; each is committed once (with
//! its records, in one transaction) and then acknowledged. A repeated batch id with the same
//! payload is acknowledged again without a second commit; the same id with a different payload
//! is refused and reported, never merged.
//!
//! A batch is taken as the bytes the proxy sent ([`server`]): hashed and stored as they came,
//! its records read in place — no record is copied, decoded into owned text or encoded again.

pub mod server;

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sluice_proto::usage::v1 as pb;
use tonic::Status;

use sluice_otlp::SpanKind;

use crate::metrics::Metrics;
use crate::store::usage_wire::{self, MAX_ID};
use crate::store::{Audit, BatchOutcome, Delivery, KeyHealth, NewUsageBatch, Store};
use crate::telemetry::Span;

use self::server::RawReport;

const MAX_RECORDS_PER_BATCH: usize = 10_000;

pub struct UsageIngest<S> {
    store: Arc<S>,
    metrics: Arc<Metrics>,
}

impl<S> UsageIngest<S> {
    pub fn new(store: Arc<S>, metrics: Arc<Metrics>) -> Self {
        Self { store, metrics }
    }
}

/// A batch's span: whose, how many records, what became of it and how long the store took.
fn trace_batch<E>(
    metrics: &Metrics,
    proxy_id: &str,
    batch_id: &str,
    records: u64,
    took: std::time::Duration,
    outcome: Result<BatchOutcome, &E>,
) {
    let Some(tracer) = &metrics.tracer else {
        return;
    };
    let Some(place) = tracer.place(None) else {
        return;
    };
    let span = Span::ended(
        "sluice.usage.batch".to_owned(),
        SpanKind::Internal,
        took,
        place,
    )
    .text("sluice.proxy_id", proxy_id)
    .text("sluice.usage.batch_id", batch_id)
    .int(
        "sluice.usage.records",
        i64::try_from(records).unwrap_or(i64::MAX),
    );
    let span = match outcome {
        Ok(BatchOutcome::Committed) => span.text("sluice.usage.outcome", "committed"),
        Ok(BatchOutcome::Duplicate) => span.text("sluice.usage.outcome", "duplicate"),
        Ok(BatchOutcome::Conflict) => span
            .text("sluice.usage.outcome", "conflict")
            .failed("batch_conflict"),
        Err(_) => span.failed("store_unavailable"),
    };
    tracer.record(span);
}

async fn ingest<S: Store>(
    store: &S,
    metrics: &Metrics,
    request: RawReport,
) -> Result<pb::ReportUsageResponse, Status> {
    crate::validation::proxy_id("proxy_id", &request.proxy_id)
        .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
    let encoded = request
        .batch
        .ok_or_else(|| Status::invalid_argument("batch: is required"))?;
    let batch = usage_wire::read_batch(&encoded, MAX_RECORDS_PER_BATCH)
        .map_err(|invalid| Status::invalid_argument(invalid.to_string()))?;
    if batch.batch_id.is_empty() || batch.batch_id.len() > MAX_ID {
        return Err(Status::invalid_argument(
            "batch.batch_id: is required, at most 128 bytes",
        ));
    }
    // A proxy sends a batch's bytes again unchanged when it retries, so equal payloads hash
    // equal.
    let payload_hash = hex::encode(Sha256::digest(&encoded));
    let batch_id = batch.batch_id;
    let delivery = if batch.first_delivery {
        Delivery::First
    } else {
        Delivery::MayRepeat
    };
    let records = batch.records.len() as u64;
    let committing = std::time::Instant::now();
    let committed = store
        .commit_usage_batch(
            batch_id,
            &request.proxy_id,
            &payload_hash,
            delivery,
            NewUsageBatch::received(batch.records, encoded.clone()),
        )
        .await;
    trace_batch(
        metrics,
        &request.proxy_id,
        batch_id,
        records,
        committing.elapsed(),
        committed.as_ref().map(|commit| commit.outcome),
    );
    let commit = committed.map_err(|error| {
        tracing::error!(%batch_id, %error, "cannot commit a usage batch");
        Status::unavailable("cannot store usage right now; the proxy keeps the batch and retries")
    })?;
    if commit.outcome == BatchOutcome::Committed {
        metrics
            .usage_commit
            .record(u64::try_from(committing.elapsed().as_micros()).unwrap_or(u64::MAX));
        metrics
            .usage_records_committed_total
            .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
        // Keys the upstream refused in live traffic, marked once the batch is stored.
        for &(key_id, status) in &batch.rejected_keys {
            let health = if status == 403 {
                KeyHealth::NoModelAccess
            } else {
                KeyHealth::InvalidCredentials
            };
            let audit = Audit::new(
                &format!("proxy:{}", request.proxy_id),
                "provider_key.rejected",
                key_id.to_owned(),
            )
            .with_detail(format!("the upstream answered {status} to live traffic"));
            if let Err(error) = store.mark_provider_key_health(key_id, health, audit).await {
                tracing::warn!(%error, %key_id, "cannot record a rejected provider key");
            } else {
                tracing::warn!(%key_id, status, "live traffic found a provider key rejected; marked it");
            }
        }
    }
    for alert in &commit.alerts {
        metrics.count_alert(alert);
        tracing::warn!(
            budget = %alert.target,
            period = alert.period.as_str(),
            posture = alert.posture.as_str(),
            percent = alert.percent,
            spent_micros = alert.spent_micros,
            limit_micros = alert.limit_micros,
            "budget alert"
        );
    }
    Ok(match commit.outcome {
        BatchOutcome::Committed | BatchOutcome::Duplicate => {
            metrics
                .usage_batches_committed_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            pb::ReportUsageResponse {
                batch_id: batch_id.to_owned(),
                committed: true,
                error: String::new(),
            }
        }
        BatchOutcome::Conflict => {
            metrics
                .usage_batches_refused_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(%batch_id, proxy_id = %request.proxy_id, "usage batch id reused with a different payload; refused");
            pb::ReportUsageResponse {
                batch_id: batch_id.to_owned(),
                committed: false,
                error: "batch id already committed with a different payload".to_owned(),
            }
        }
    })
}
