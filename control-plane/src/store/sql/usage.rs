//! Usage records: a proxy's batch committed once (with the budgets' spend in the same transaction),
//! and read back.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::Placeholders;
use crate::store::UsageRecord;

const USAGE_COLUMNS: usize = 19;
/// Rows per multi-row insert, largest first. Batches are split into these sizes only, so at
/// most five statements exist and each is prepared once and cached; 256 × 19 parameters stays
/// far below both backends' limits.
pub(crate) const USAGE_INSERT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// `INSERT INTO usage_records (...) VALUES (…), (…) ON CONFLICT DO NOTHING` for `rows` rows
/// (one of [`USAGE_INSERT_SIZES`]), built once per process.
pub(crate) fn usage_insert_sql(rows: usize, placeholders: Placeholders) -> &'static str {
    static CACHE: [OnceLock<Vec<String>>; 2] = [const { OnceLock::new() }; 2];
    let slot = match placeholders {
        Placeholders::Numbered => 0,
        Placeholders::Positional => 1,
    };
    let statements = CACHE[slot].get_or_init(|| {
        USAGE_INSERT_SIZES
            .iter()
            .map(|&rows| build_usage_insert_sql(rows, placeholders))
            .collect()
    });
    let index = USAGE_INSERT_SIZES
        .iter()
        .position(|&size| size == rows)
        .unwrap_or(USAGE_INSERT_SIZES.len() - 1);
    &statements[index]
}

fn build_usage_insert_sql(rows: usize, placeholders: Placeholders) -> String {
    let mut sql = String::with_capacity(300 + rows * 100);
    sql.push_str(
        "INSERT INTO usage_records (request_id, batch_id, started_at_us, project_id, \
         virtual_key_id, model, provider_id, input_tokens, output_tokens, cached_input_tokens, \
         reasoning_tokens, cost_micros, latency_ms, http_status, source, run_id, task_id, \
         tags, lease_epoch) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..USAGE_COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            match placeholders {
                Placeholders::Numbered => {
                    sql.push('$');
                    sql.push_str(&(row * USAGE_COLUMNS + column + 1).to_string());
                }
                Placeholders::Positional => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
    sql
}

/// The `tags` of a record without tags, bound without building a JSON object.
pub(crate) const EMPTY_TAGS: &str = "{}";

/// The roll-up's bucket: one UTC hour.
pub(crate) const HOUR_US: i64 = 3_600_000_000;

/// The start of the hour `at_us` falls in.
pub(crate) fn hour_of(at_us: i64) -> i64 {
    at_us.div_euclid(HOUR_US) * HOUR_US
}

/// What one `usage_hourly` row adds up.
#[derive(Default)]
pub(crate) struct HourSums {
    pub requests: i64,
    pub failed_requests: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
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

/// A batch's records summed per `usage_hourly` key.
pub(crate) fn hourly_sums<'r>(records: &[&'r UsageRecord]) -> HashMap<HourKey<'r>, HourSums> {
    let mut sums: HashMap<_, HourSums> = HashMap::new();
    for record in records {
        let sum = sums
            .entry((
                record.project_id.as_str(),
                hour_of(record.started_at_us),
                record.virtual_key_id.as_str(),
                record.model.as_str(),
                record.provider_id.as_str(),
                record.source.as_str(),
                record.run_id.as_str(),
            ))
            .or_default();
        sum.requests += 1;
        sum.failed_requests += i64::from(record.http_status >= 400);
        sum.input_tokens = sum.input_tokens.saturating_add(record.input_tokens);
        sum.cached_input_tokens = sum
            .cached_input_tokens
            .saturating_add(record.cached_input_tokens);
        sum.output_tokens = sum.output_tokens.saturating_add(record.output_tokens);
        sum.cost_micros = sum.cost_micros.saturating_add(record.cost_micros);
    }
    sums
}

/// Tags are stored as one JSON object, so a query can read them without a join.
pub(crate) fn tags_json(tags: &[(String, String)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

pub(crate) fn tags_from_json(text: String) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(object)) => object
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

macro_rules! usage_sql {
    ($store:ty) => {
        fn usage_record(row: &DbRow) -> StoreResult<UsageRecord> {
            Ok(UsageRecord {
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
            })
        }

        /// Of records some of which were already stored (sent before under another batch id),
        /// the ones this batch stored: those whose row now carries this batch's id, each
        /// request once (a repeat inside the batch was not stored).
        async fn stored_by_batch<'r>(
            tx: &mut Tx,
            batch_id: &str,
            records: &'r [UsageRecord],
        ) -> StoreResult<Vec<&'r UsageRecord>> {
            let mut seen = std::collections::HashSet::new();
            let mut stored = Vec::new();
            for record in records {
                if !seen.insert(record.request_id.as_str()) {
                    continue;
                }
                let owner: String =
                    sqlx::query_scalar("SELECT batch_id FROM usage_records WHERE request_id = $1")
                        .bind(record.request_id.as_str())
                        .fetch_one(&mut **tx)
                        .await?;
                if owner == batch_id {
                    stored.push(record);
                }
            }
            Ok(stored)
        }

        /// Adds the records to the hourly roll-up, one upsert per (project, hour, key, model,
        /// provider, source, run) they fall in.
        async fn add_to_usage_hourly(tx: &mut Tx, records: &[&UsageRecord]) -> StoreResult<()> {
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

        impl UsageStore for $store {
            async fn commit_usage_batch(
                &self,
                batch_id: &str,
                proxy_id: &str,
                payload_hash: &str,
                records: Vec<UsageRecord>,
            ) -> StoreResult<BatchCommit> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let inserted = sqlx::query(
                    "INSERT INTO usage_batches \
                     (batch_id, proxy_id, payload_hash, record_count, received_at_us) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (batch_id) DO NOTHING",
                )
                .bind(batch_id)
                .bind(proxy_id)
                .bind(payload_hash)
                .bind(i64::try_from(records.len()).unwrap_or(i64::MAX))
                .bind(now_us())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    let stored: String = sqlx::query_scalar(
                        "SELECT payload_hash FROM usage_batches WHERE batch_id = $1",
                    )
                    .bind(batch_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    return Ok(BatchCommit {
                        outcome: if stored == payload_hash {
                            BatchOutcome::Duplicate
                        } else {
                            BatchOutcome::Conflict
                        },
                        alerts: Vec::new(),
                    });
                }
                sqlx::query(Self::LOCK_BUDGETS).execute(&mut *tx).await?;
                // Many rows per statement: one round trip per chunk instead of per record.
                // Values are borrowed from the records, not copied.
                let mut stored = 0_u64;
                let mut chunks = records.as_slice();
                for size in USAGE_INSERT_SIZES {
                    while chunks.len() >= size {
                        let (chunk, rest) = chunks.split_at(size);
                        chunks = rest;
                        let mut query = sqlx::query(usage_insert_sql(size, Self::PLACEHOLDERS));
                        for record in chunk {
                            query = query
                                .bind(record.request_id.as_str())
                                .bind(batch_id)
                                .bind(record.started_at_us)
                                .bind(record.project_id.as_str())
                                .bind(record.virtual_key_id.as_str())
                                .bind(record.model.as_str())
                                .bind(record.provider_id.as_str())
                                .bind(record.input_tokens)
                                .bind(record.output_tokens)
                                .bind(record.cached_input_tokens)
                                .bind(record.reasoning_tokens)
                                .bind(record.cost_micros)
                                .bind(record.latency_ms)
                                .bind(record.http_status)
                                .bind(record.source.as_str())
                                .bind(record.run_id.as_str())
                                .bind(record.task_id.as_str());
                            query = if record.tags.is_empty() {
                                query.bind(EMPTY_TAGS)
                            } else {
                                query.bind(tags_json(&record.tags))
                            };
                            query = query.bind(record.lease_epoch);
                        }
                        stored += query.execute(&mut *tx).await?.rows_affected();
                    }
                }
                // The roll-up and the budgets count only the records stored now, not ones a
                // proxy sent before under another batch id.
                let stored: Vec<&UsageRecord> = if stored == records.len() as u64 {
                    records.iter().collect()
                } else {
                    stored_by_batch(&mut tx, batch_id, &records).await?
                };
                add_to_usage_hourly(&mut tx, &stored).await?;
                let spends: Vec<Spend> = stored
                    .iter()
                    .map(|r| Spend {
                        lease_epoch: r.lease_epoch,
                        project_id: r.project_id.clone(),
                        virtual_key_id: r.virtual_key_id.clone(),
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
                let mut tx = self.readers().begin().await?;
                sqlx::query(Self::SNAPSHOT_ISOLATION)
                    .execute(&mut *tx)
                    .await?;
                query_usage_tx(&mut tx, &query).await
            }

            async fn list_usage_records(&self, project_id: &str) -> StoreResult<Vec<UsageRecord>> {
                let rows = sqlx::query(
                    "SELECT request_id, started_at_us, project_id, virtual_key_id, model, \
                     provider_id, input_tokens, output_tokens, cached_input_tokens, \
                     reasoning_tokens, cost_micros, latency_ms, http_status, source, \
                     run_id, task_id, tags, lease_epoch \
                     FROM usage_records WHERE project_id = $1 \
                     ORDER BY started_at_us, request_id",
                )
                .bind(project_id)
                .fetch_all(self.readers())
                .await?;
                rows.iter().map(usage_record).collect()
            }
        }
    };
}

pub(crate) use usage_sql;
