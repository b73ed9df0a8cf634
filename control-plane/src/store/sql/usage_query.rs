//! Usage queries in SQL: sums over the usage records of one organisation, filtered by name and
//! time and grouped, built from fixed fragments (every value is a bound parameter). Expanded
//! inside `sql_store!`'s module, once per backend.

use crate::store::UsageGroup;

/// The SQL expression a group is keyed by (as text, so every key has one type).
pub(crate) fn group_expression(group: UsageGroup) -> &'static str {
    match group {
        UsageGroup::Project => "p.name",
        UsageGroup::VirtualKey => "COALESCE(v.name, '')",
        UsageGroup::Model => "r.model",
        UsageGroup::Provider => "COALESCE(pr.name, '')",
        UsageGroup::Day => "CAST((r.started_at_us / 86400000000) * 86400000000 AS TEXT)",
        UsageGroup::Source => "r.source",
        UsageGroup::Run => "r.run_id",
    }
}

/// Sums every query selects, after its group keys.
pub(crate) const USAGE_SUMS: &str = "COUNT(*), \
     CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.cached_input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.cost_micros), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN r.source = 'ESTIMATED' THEN r.cost_micros ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN r.source = 'ESTIMATED' THEN 1 ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN r.http_status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT)";

pub(crate) const USAGE_FROM: &str = "usage_records r \
     JOIN projects p ON p.id = r.project_id \
     JOIN organizations o ON o.id = p.org_id \
     LEFT JOIN virtual_keys v ON v.id = r.virtual_key_id \
     LEFT JOIN providers pr ON pr.id = r.provider_id";

macro_rules! usage_query_fns {
    () => {
        fn usage_totals(row: &DbRow, keys: usize) -> StoreResult<UsageTotals> {
            let mut totals = UsageTotals::default();
            for index in 0..keys {
                totals.keys.push(row.try_get(index)?);
            }
            totals.requests = row.try_get(keys)?;
            totals.input_tokens = row.try_get(keys + 1)?;
            totals.cached_input_tokens = row.try_get(keys + 2)?;
            totals.output_tokens = row.try_get(keys + 3)?;
            totals.cost_micros = row.try_get(keys + 4)?;
            totals.estimated_cost_micros = row.try_get(keys + 5)?;
            totals.estimated_requests = row.try_get(keys + 6)?;
            totals.failed_requests = row.try_get(keys + 7)?;
            Ok(totals)
        }

        fn bind_usage_filters<'q>(
            sql: &'q str,
            query: &UsageQuery,
            values: &[&str],
        ) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>> {
            let mut statement = sqlx::query(sql)
                .bind(query.organization.clone())
                .bind(query.from_us)
                .bind(query.to_us);
            for value in values {
                statement = statement.bind((*value).to_owned());
            }
            statement
        }

        async fn query_usage_tx(
            tx: &mut Tx,
            query: &UsageQuery,
        ) -> StoreResult<(Vec<UsageTotals>, UsageTotals)> {
            org_id(tx, &query.organization).await?;
            // Filters, each with its own parameter; values are always bound, never spliced.
            let mut conditions = vec![
                "o.name = $1".to_owned(),
                "r.started_at_us >= $2".to_owned(),
                "r.started_at_us < $3".to_owned(),
            ];
            let mut values: Vec<&str> = Vec::new();
            for (column, value) in [
                ("p.name", &query.project),
                ("v.name", &query.virtual_key),
                ("r.model", &query.model),
                ("pr.name", &query.provider),
                ("r.run_id", &query.run_id),
            ] {
                if let Some(value) = value {
                    values.push(value);
                    conditions.push(format!("{column} = ${}", values.len() + 3));
                }
            }
            let filter = conditions.join(" AND ");
            let total_sql = format!("SELECT {USAGE_SUMS} FROM {USAGE_FROM} WHERE {filter}");
            let total = bind_usage_filters(&total_sql, query, &values)
                .fetch_one(&mut **tx)
                .await?;
            let total = usage_totals(&total, 0)?;
            if query.group_by.is_empty() {
                return Ok((Vec::new(), total));
            }
            let keys: Vec<&str> = query
                .group_by
                .iter()
                .map(|g| group_expression(*g))
                .collect();
            let keys = keys.join(", ");
            let sql = format!(
                "SELECT {keys}, {USAGE_SUMS} FROM {USAGE_FROM} WHERE {filter} \
                 GROUP BY {keys} ORDER BY {cost} DESC, 1 LIMIT {limit}",
                // The cost column: after the keys, the count and three token sums.
                cost = query.group_by.len() + 5,
                limit = query.limit,
            );
            let rows = bind_usage_filters(&sql, query, &values)
                .fetch_all(&mut **tx)
                .await?;
            let rows = rows
                .iter()
                .map(|row| usage_totals(row, query.group_by.len()))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok((rows, total))
        }
    };
}

pub(crate) use usage_query_fns;
