//! Usage: a proxy's batch committed once — its records in one row, the hourly roll-up and the
//! budgets' spend in the same transaction — and read back.

use std::collections::{HashMap, HashSet};

use crate::store::{UsageRecord, UsageSource, UsageTotals};

/// The roll-up's bucket: one UTC hour.
pub(crate) const HOUR_US: i64 = 3_600_000_000;

/// The start of the hour `at_us` falls in.
pub(crate) fn hour_of(at_us: i64) -> i64 {
    at_us.div_euclid(HOUR_US) * HOUR_US
}

/// What one record adds to any sum of usage (a roll-up row, a query's group).
pub(crate) fn sums_of<S>(record: &UsageRecord<S>) -> UsageTotals {
    let estimated = record.source == UsageSource::Estimated;
    UsageTotals {
        keys: Vec::new(),
        requests: 1,
        input_tokens: record.input_tokens,
        cached_input_tokens: record.cached_input_tokens,
        output_tokens: record.output_tokens,
        cost_micros: record.cost_micros,
        estimated_cost_micros: if estimated { record.cost_micros } else { 0 },
        estimated_requests: i64::from(estimated),
        failed_requests: i64::from(record.http_status >= 400),
    }
}

pub(crate) fn add_sums(into: &mut UsageTotals, from: &UsageTotals) {
    into.requests = into.requests.saturating_add(from.requests);
    into.input_tokens = into.input_tokens.saturating_add(from.input_tokens);
    into.cached_input_tokens = into
        .cached_input_tokens
        .saturating_add(from.cached_input_tokens);
    into.output_tokens = into.output_tokens.saturating_add(from.output_tokens);
    into.cost_micros = into.cost_micros.saturating_add(from.cost_micros);
    into.estimated_cost_micros = into
        .estimated_cost_micros
        .saturating_add(from.estimated_cost_micros);
    into.estimated_requests = into
        .estimated_requests
        .saturating_add(from.estimated_requests);
    into.failed_requests = into.failed_requests.saturating_add(from.failed_requests);
}

/// A `usage_hourly` key: project, hour, key, model, provider, source, run.
pub(crate) type HourKey<'r> = (
    &'r str,
    i64,
    &'r str,
    &'r str,
    &'r str,
    &'static str,
    &'r str,
);

/// A batch's records summed per `usage_hourly` key (hashed with foldhash: SipHash over seven
/// strings per record was a tenth of a batch's commit).
pub(crate) fn hourly_sums<'r, S: AsRef<str>>(
    records: &[&'r UsageRecord<S>],
) -> HashMap<HourKey<'r>, UsageTotals, foldhash::fast::RandomState> {
    let mut sums: HashMap<_, UsageTotals, _> = HashMap::default();
    for record in records {
        let sum = sums
            .entry((
                record.project_id.as_ref(),
                hour_of(record.started_at_us),
                record.virtual_key_id.as_ref(),
                record.model.as_ref(),
                record.provider_id.as_ref(),
                record.source.as_str(),
                record.run_id.as_ref(),
            ))
            .or_default();
        add_sums(sum, &sums_of(record));
    }
    sums
}

/// The `tags` column of usage kept per record (before usage was kept per batch): one JSON
/// object of name → value.
pub(crate) fn tags_from_json(text: String) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(object)) => object
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

/// The hours (their starts) `records` started in.
pub(crate) fn hours_of<'r, S: 'r>(
    records: impl IntoIterator<Item = &'r UsageRecord<S>>,
) -> Vec<i64> {
    let mut hours: Vec<i64> = records
        .into_iter()
        .map(|r| hour_of(r.started_at_us))
        .collect();
    hours.sort_unstable();
    hours.dedup();
    hours
}

/// Of `records`, each request once and none that `stored` already holds.
pub(crate) fn not_in<'r, S: AsRef<str>>(
    records: &'r [UsageRecord<S>],
    stored: &HashSet<String>,
) -> Vec<&'r UsageRecord<S>> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| {
            let id = r.request_id.as_ref();
            !stored.contains(id) && seen.insert(id)
        })
        .collect()
}

macro_rules! usage_sql {
    ($store:ty) => {
        /// The records of every stored batch that holds records of one of `hours` (of one
        /// proxy's batches only, when `proxy_id` says which), each batch once.
        async fn records_of_hours(
            tx: &mut Tx,
            hours: &[i64],
            proxy_id: Option<&str>,
        ) -> StoreResult<Vec<UsageRecord>> {
            let mut batches = std::collections::HashSet::new();
            let mut records = Vec::new();
            for hour_us in hours {
                let query = match proxy_id {
                    Some(proxy_id) => sqlx::query_as(
                        "SELECT b.batch_id, b.records FROM usage_batch_hours h \
                         JOIN usage_batches b ON b.batch_id = h.batch_id \
                         WHERE h.hour_us = $1 AND b.proxy_id = $2",
                    )
                    .bind(hour_us)
                    .bind(proxy_id),
                    None => sqlx::query_as(
                        "SELECT b.batch_id, b.records FROM usage_batch_hours h \
                         JOIN usage_batches b ON b.batch_id = h.batch_id WHERE h.hour_us = $1",
                    )
                    .bind(hour_us),
                };
                let stored: Vec<(String, Option<Vec<u8>>)> = query.fetch_all(&mut **tx).await?;
                for (batch_id, encoded) in stored {
                    if batches.insert(batch_id) {
                        records.extend(usage_wire::decode(encoded.as_deref().unwrap_or_default())?);
                    }
                }
            }
            Ok(records)
        }

        /// Adds the records to the hourly roll-up, one upsert per (project, hour, key, model,
        /// provider, source, run) they fall in.
        async fn add_to_usage_hourly<S: AsRef<str>>(
            tx: &mut Tx,
            records: &[&UsageRecord<S>],
        ) -> StoreResult<()> {
            for ((project_id, hour_us, virtual_key_id, model, provider_id, source, run_id), sum) in
                hourly_sums(records)
            {
                sqlx::query(
                    "INSERT INTO usage_hourly (project_id, hour_us, virtual_key_id, model, \
                     provider_id, source, run_id, requests, failed_requests, input_tokens, \
                     cached_input_tokens, output_tokens, cost_micros) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (project_id, hour_us, virtual_key_id, model, provider_id, source, \
                     run_id) \
                     DO UPDATE SET requests = usage_hourly.requests + excluded.requests, \
                     failed_requests = usage_hourly.failed_requests + excluded.failed_requests, \
                     input_tokens = usage_hourly.input_tokens + excluded.input_tokens, \
                     cached_input_tokens = \
                     usage_hourly.cached_input_tokens + excluded.cached_input_tokens, \
                     output_tokens = usage_hourly.output_tokens + excluded.output_tokens, \
                     cost_micros = usage_hourly.cost_micros + excluded.cost_micros",
                )
                .bind(project_id)
                .bind(hour_us)
                .bind(virtual_key_id)
                .bind(model)
                .bind(provider_id)
                .bind(source)
                .bind(run_id)
                .bind(sum.requests)
                .bind(sum.failed_requests)
                .bind(sum.input_tokens)
                .bind(sum.cached_input_tokens)
                .bind(sum.output_tokens)
                .bind(sum.cost_micros)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }

        /// Stores one batch's records (its row with `encoded`, their stored form, and the hours
        /// it holds); the caller adds them to the roll-up and the budgets. `false`, and nothing
        /// stored, when a batch of that id is stored already.
        async fn insert_usage_batch<S>(
            tx: &mut Tx,
            batch_id: &str,
            proxy_id: &str,
            payload_hash: &str,
            received_at_us: i64,
            records: &[&UsageRecord<S>],
            encoded: &[u8],
        ) -> StoreResult<bool> {
            let inserted = sqlx::query(
                "INSERT INTO usage_batches \
                 (batch_id, proxy_id, payload_hash, record_count, received_at_us, records) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (batch_id) DO NOTHING",
            )
            .bind(batch_id)
            .bind(proxy_id)
            .bind(payload_hash)
            .bind(i64::try_from(records.len()).unwrap_or(i64::MAX))
            .bind(received_at_us)
            .bind(encoded)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
            record_batch_hours(tx, batch_id, records).await?;
            Ok(true)
        }

        async fn record_batch_hours<S>(
            tx: &mut Tx,
            batch_id: &str,
            records: &[&UsageRecord<S>],
        ) -> StoreResult<()> {
            for hour_us in hours_of(records.iter().copied()) {
                sqlx::query(
                    "INSERT INTO usage_batch_hours (hour_us, batch_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(hour_us)
                .bind(batch_id)
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        }

        impl $store {
            /// Moves usage kept one row per record (before usage was kept per batch) into its
            /// batches, once, and drops the old table.
            pub(crate) async fn convert_per_record_usage(&self) -> StoreResult<()> {
                let mut tx = begin_budget_write(self).await?;
                let exists: i64 = sqlx::query_scalar(Self::TABLE_EXISTS)
                    .bind("usage_records")
                    .fetch_one(&mut *tx)
                    .await?;
                if exists == 0 {
                    return Ok(());
                }
                let rows = sqlx::query(
                    "SELECT batch_id, request_id, started_at_us, project_id, virtual_key_id, \
                     model, provider_id, input_tokens, output_tokens, cached_input_tokens, \
                     reasoning_tokens, cost_micros, latency_ms, http_status, source, run_id, \
                     task_id, tags, lease_epoch FROM usage_records ORDER BY batch_id",
                )
                .fetch_all(&mut *tx)
                .await?;
                let mut batches: Vec<(String, Vec<UsageRecord>)> = Vec::new();
                for row in &rows {
                    let batch_id: String = row.try_get("batch_id")?;
                    let record = UsageRecord {
                        request_id: row.try_get("request_id")?,
                        started_at_us: row.try_get("started_at_us")?,
                        project_id: row.try_get("project_id")?,
                        virtual_key_id: row.try_get("virtual_key_id")?,
                        model: row.try_get("model")?,
                        provider_id: row.try_get("provider_id")?,
                        input_tokens: row.try_get("input_tokens")?,
                        output_tokens: row.try_get("output_tokens")?,
                        cached_input_tokens: row.try_get("cached_input_tokens")?,
                        reasoning_tokens: row.try_get("reasoning_tokens")?,
                        cost_micros: row.try_get("cost_micros")?,
                        latency_ms: row.try_get("latency_ms")?,
                        http_status: row.try_get("http_status")?,
                        source: UsageSource::parse(row.try_get("source")?)?,
                        run_id: row.try_get("run_id")?,
                        task_id: row.try_get("task_id")?,
                        tags: tags_from_json(row.try_get("tags")?),
                        lease_epoch: row.try_get("lease_epoch")?,
                        // Stored before attempts were counted.
                        attempts: 0,
                    };
                    match batches.last_mut() {
                        Some((last, records)) if *last == batch_id => records.push(record),
                        _ => batches.push((batch_id, vec![record])),
                    }
                }
                drop(rows);
                for (batch_id, records) in &batches {
                    let records: Vec<&UsageRecord> = records.iter().collect();
                    sqlx::query("UPDATE usage_batches SET records = $1 WHERE batch_id = $2")
                        .bind(usage_wire::encode(records.iter().copied()))
                        .bind(batch_id)
                        .execute(&mut *tx)
                        .await?;
                    record_batch_hours(&mut tx, batch_id, &records).await?;
                }
                sqlx::query("DROP TABLE usage_records").execute(&mut *tx).await?;
                tx.commit().await?;
                tracing::info!(
                    batches = batches.len(),
                    "moved usage kept per record into its batches"
                );
                Ok(())
            }
        }

        impl UsageStore for $store {
            async fn commit_usage_batch<T: AsRef<str> + Send + Sync>(
                &self,
                batch_id: &str,
                proxy_id: &str,
                payload_hash: &str,
                delivery: Delivery,
                batch: NewUsageBatch<T>,
            ) -> StoreResult<BatchCommit> {
                let NewUsageBatch { records, encoded } = batch;
                let mut tx = begin_budget_write(self).await?;
                let received_at_us = now_us();
                // The roll-up and the budgets count only the records stored now, not ones a
                // proxy sent before under another batch id.
                let stored: Vec<&UsageRecord<T>> = match delivery {
                    Delivery::First => records.iter().collect(),
                    Delivery::MayRepeat => {
                        // An earlier copy of a record is in a batch of the same proxy that holds
                        // records of the record's hour.
                        let hours = hours_of(&records);
                        let stored: std::collections::HashSet<String> =
                            records_of_hours(&mut tx, &hours, Some(proxy_id))
                                .await?
                                .into_iter()
                                .map(|r| r.request_id)
                                .collect();
                        not_in(&records, &stored)
                    }
                };
                // The encoding that came with the batch holds exactly its records; one without
                // the records stored before is made anew.
                let encoded = if stored.len() == records.len() {
                    encoded
                } else {
                    usage_wire::encode(stored.iter().copied()).into()
                };
                // Inserted first, looked up only when the id is taken: a batch seen before is
                // rare, and a lookup on every batch was one more round trip each.
                let inserted = insert_usage_batch(
                    &mut tx,
                    batch_id,
                    proxy_id,
                    payload_hash,
                    received_at_us,
                    &stored,
                    &encoded,
                )
                .await?;
                if !inserted {
                    let earlier: String = sqlx::query_scalar(
                        "SELECT payload_hash FROM usage_batches WHERE batch_id = $1",
                    )
                    .bind(batch_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    return Ok(BatchCommit {
                        outcome: if earlier == payload_hash {
                            BatchOutcome::Duplicate
                        } else {
                            BatchOutcome::Conflict
                        },
                        alerts: Vec::new(),
                    });
                }
                add_to_usage_hourly(&mut tx, &stored).await?;
                let spends: Vec<Spend> = stored
                    .iter()
                    .map(|r| Spend {
                        lease_epoch: r.lease_epoch,
                        project_id: r.project_id.as_ref(),
                        virtual_key_id: r.virtual_key_id.as_ref(),
                        started_at_us: r.started_at_us,
                        cost_micros: r.cost_micros,
                        estimated: r.source == UsageSource::Estimated,
                    })
                    .collect();
                let alerts = roll_up_budgets(&mut tx, proxy_id, &spends).await?;
                tx.commit().await?;
                Ok(BatchCommit {
                    outcome: BatchOutcome::Committed,
                    alerts,
                })
            }

            async fn query_usage(
                &self,
                query: UsageQuery,
            ) -> StoreResult<(Vec<UsageTotals>, UsageTotals)> {
                let mut tx = begin_snapshot(self).await?;
                query_usage_tx(&mut tx, &query).await
            }

            async fn run_calls(
                &self,
                org: &str,
                run_id: &str,
                limit: usize,
            ) -> StoreResult<(Vec<RunCall>, bool)> {
                // The hours a run spans, newest first: a week of them bounds the batches read.
                const MOST_HOURS: i64 = 168;
                let mut tx = begin_snapshot(self).await?;
                org_id(&mut tx, org).await?;
                let projects: std::collections::HashMap<String, String> = sqlx::query_as(
                    "SELECT p.id, p.name FROM projects p JOIN organizations o ON o.id = p.org_id \
                     WHERE o.name = $1",
                )
                .bind(org)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
                let hours: Vec<i64> = sqlx::query_scalar(
                    "SELECT DISTINCT h.hour_us FROM usage_hourly h \
                     JOIN projects p ON p.id = h.project_id \
                     JOIN organizations o ON o.id = p.org_id \
                     WHERE o.name = $1 AND h.run_id = $2 ORDER BY h.hour_us DESC LIMIT $3",
                )
                .bind(org)
                .bind(run_id)
                .bind(MOST_HOURS)
                .fetch_all(&mut *tx)
                .await?;
                let mut records: Vec<UsageRecord> = records_of_hours(&mut tx, &hours, None)
                    .await?
                    .into_iter()
                    .filter(|record| {
                        record.run_id == run_id && projects.contains_key(&record.project_id)
                    })
                    .collect();
                records.sort_by(|a, b| {
                    (b.started_at_us, &b.request_id).cmp(&(a.started_at_us, &a.request_id))
                });
                let truncated = records.len() > limit;
                records.truncate(limit);
                let keys = names_of(
                    &mut tx,
                    "virtual_keys",
                    records.iter().map(|r| r.virtual_key_id.as_str()).collect(),
                )
                .await?;
                let providers = names_of(
                    &mut tx,
                    "providers",
                    records.iter().map(|r| r.provider_id.as_str()).collect(),
                )
                .await?;
                let named = |names: &std::collections::HashMap<String, String>, id: &str| {
                    names.get(id).cloned().unwrap_or_else(|| id.to_owned())
                };
                let calls = records
                    .into_iter()
                    .map(|record| RunCall {
                        project: named(&projects, &record.project_id),
                        virtual_key: named(&keys, &record.virtual_key_id),
                        provider: named(&providers, &record.provider_id),
                        record,
                    })
                    .collect();
                Ok((calls, truncated))
            }

            async fn list_usage_records(&self, project_id: &str) -> StoreResult<Vec<UsageRecord>> {
                let batches: Vec<Option<Vec<u8>>> =
                    sqlx::query_scalar("SELECT records FROM usage_batches")
                        .fetch_all(self.readers())
                        .await?;
                let mut records = Vec::new();
                for stored in batches {
                    records.extend(
                        usage_wire::decode_in_place(stored.as_deref().unwrap_or_default())?
                            .iter()
                            .filter(|r| r.project_id == project_id)
                            .map(UsageRecord::to_owned_record),
                    );
                }
                records.sort_by(|a, b| {
                    (a.started_at_us, &a.request_id).cmp(&(b.started_at_us, &b.request_id))
                });
                Ok(records)
            }
        }
    };
}

pub(crate) use usage_sql;
