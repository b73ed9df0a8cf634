//! Usage records: a proxy's batch committed once (with the budgets' spend in the same transaction),
//! and read back.

use std::sync::OnceLock;

use super::Placeholders;

const USAGE_COLUMNS: usize = 19;
/// Rows per multi-row insert, largest first. Batches are split into these sizes only, so at
/// most five statements exist and each is prepared once and cached; 256 × 19 parameters stays
/// far below both backends' limits.
pub(crate) const USAGE_INSERT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// `INSERT INTO usage_records (...) VALUES (…), (…) ON CONFLICT DO NOTHING` for `rows` rows
/// (one of [`USAGE_INSERT_SIZES`]), built once per process. With `returning`, the statement
/// returns the request ids it inserted (the rows budgets must count).
pub(crate) fn usage_insert_sql(
    rows: usize,
    placeholders: Placeholders,
    returning: bool,
) -> &'static str {
    static CACHE: [OnceLock<Vec<String>>; 4] = [const { OnceLock::new() }; 4];
    let slot = match placeholders {
        Placeholders::Numbered => 0,
        Placeholders::Positional => 2,
    } + usize::from(returning);
    let statements = CACHE[slot].get_or_init(|| {
        USAGE_INSERT_SIZES
            .iter()
            .map(|&rows| {
                let mut sql = build_usage_insert_sql(rows, placeholders);
                if returning {
                    sql.push_str(" RETURNING request_id");
                }
                sql
            })
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
                // Budgets count only records stored now (not ones a proxy re-sent), so
                // when any budget exists the inserts report which rows they stored.
                sqlx::query(Self::LOCK_BUDGETS).execute(&mut *tx).await?;
                let budgets_exist: bool =
                    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM budgets)")
                        .fetch_one(&mut *tx)
                        .await?;
                let mut spends: Vec<(String, Spend)> = if budgets_exist {
                    records
                        .iter()
                        .map(|r| {
                            (
                                r.request_id.clone(),
                                Spend {
                                    lease_epoch: r.lease_epoch,
                                    project_id: r.project_id.clone(),
                                    virtual_key_id: r.virtual_key_id.clone(),
                                    started_at_us: r.started_at_us,
                                    cost_micros: r.cost_micros,
                                    estimated: r.source == UsageSource::Estimated,
                                },
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let mut inserted = std::collections::HashSet::new();
                // Many rows per statement: one round trip per chunk instead of per record.
                // Strings are moved into the statement, not copied.
                let mut remaining = records.len();
                let mut rows = records.into_iter();
                for size in USAGE_INSERT_SIZES {
                    while remaining >= size {
                        remaining -= size;
                        let sql = usage_insert_sql(size, Self::PLACEHOLDERS, budgets_exist);
                        let mut query = sqlx::query(sql);
                        for record in rows.by_ref().take(size) {
                            query = query
                                .bind(record.request_id)
                                .bind(batch_id)
                                .bind(record.started_at_us)
                                .bind(record.project_id)
                                .bind(record.virtual_key_id)
                                .bind(record.model)
                                .bind(record.provider_id)
                                .bind(record.input_tokens)
                                .bind(record.output_tokens)
                                .bind(record.cached_input_tokens)
                                .bind(record.reasoning_tokens)
                                .bind(record.cost_micros)
                                .bind(record.latency_ms)
                                .bind(record.http_status)
                                .bind(record.source.as_str())
                                .bind(record.run_id)
                                .bind(record.task_id)
                                .bind(tags_json(&record.tags))
                                .bind(record.lease_epoch);
                        }
                        if budgets_exist {
                            for row in query.fetch_all(&mut *tx).await? {
                                inserted.insert(row.try_get::<String, _>(0)?);
                            }
                        } else {
                            query.execute(&mut *tx).await?;
                        }
                    }
                }
                spends.retain(|(id, _)| inserted.contains(id));
                let spends: Vec<Spend> = spends.into_iter().map(|(_, s)| s).collect();
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
