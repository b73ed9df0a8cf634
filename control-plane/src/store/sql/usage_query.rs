//! Usage queries in SQL: sums over the usage of one organisation, filtered by name and time and
//! grouped, built from fixed fragments (every value is a bound parameter). Expanded inside
//! `sql_store!`'s module, once per backend.
//!
//! A query reads the hourly roll-up for the whole hours of its range and raw records only for
//! the partial hours at its ends; it sums by the ids its groups need first and joins names to
//! those sums, so its cost follows the number of hour buckets, not of records.

use crate::store::UsageGroup;
use crate::store::sql::usage::{HOUR_US, hour_of};

/// The column of the id-level sums a group needs, and the expression that names it in the
/// answer (as text, so every key has one type).
pub(crate) fn group_columns(group: UsageGroup) -> (&'static str, &'static str) {
    match group {
        UsageGroup::Project => ("project_id", "p.name"),
        UsageGroup::VirtualKey => ("virtual_key_id", "COALESCE(v.name, '')"),
        UsageGroup::Model => ("model", "r.model"),
        UsageGroup::Provider => ("provider_id", "COALESCE(pr.name, '')"),
        UsageGroup::Day => ("day_us", "CAST(r.day_us AS TEXT)"),
        UsageGroup::Source => ("source", "r.source"),
        UsageGroup::Run => ("run_id", "r.run_id"),
    }
}

/// The joins that bring in the names of the groups that need one.
pub(crate) fn group_join(group: UsageGroup) -> Option<&'static str> {
    match group {
        UsageGroup::Project => Some("JOIN projects p ON p.id = r.project_id"),
        UsageGroup::VirtualKey => Some("LEFT JOIN virtual_keys v ON v.id = r.virtual_key_id"),
        UsageGroup::Provider => Some("LEFT JOIN providers pr ON pr.id = r.provider_id"),
        UsageGroup::Model | UsageGroup::Day | UsageGroup::Source | UsageGroup::Run => None,
    }
}

/// What every row of usage carries to sum, whether a record or an hour's roll-up of records.
const SUMMED: &str = "SUM(requests) AS requests, SUM(input_tokens) AS input_tokens, \
     SUM(cached_input_tokens) AS cached_input_tokens, SUM(output_tokens) AS output_tokens, \
     SUM(cost_micros) AS cost_micros, \
     SUM(CASE WHEN source = 'ESTIMATED' THEN cost_micros ELSE 0 END) AS estimated_cost_micros, \
     SUM(CASE WHEN source = 'ESTIMATED' THEN requests ELSE 0 END) AS estimated_requests, \
     SUM(failed_requests) AS failed_requests";

/// The sums every query selects, after its group keys, over the id-level sums.
pub(crate) const USAGE_SUMS: &str = "CAST(COALESCE(SUM(r.requests), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.cached_input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.cost_micros), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.estimated_cost_micros), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.estimated_requests), 0) AS BIGINT), \
     CAST(COALESCE(SUM(r.failed_requests), 0) AS BIGINT)";

const HOURLY_ROWS: &str = "SELECT hour_us AS started_at_us, project_id, virtual_key_id, model, \
     provider_id, source, run_id, requests, failed_requests, input_tokens, cached_input_tokens, \
     output_tokens, cost_micros FROM usage_hourly";
const RAW_ROWS: &str = "SELECT started_at_us, project_id, virtual_key_id, model, provider_id, \
     source, run_id, 1 AS requests, CASE WHEN http_status >= 400 THEN 1 ELSE 0 END AS \
     failed_requests, input_tokens, cached_input_tokens, output_tokens, cost_micros \
     FROM usage_records";

/// Bound parameters every usage query starts with: $1 the organisation's name, [$2, $3) the
/// range, [$4, $5) its whole hours (see [`rolled_up_hours`]); filter values follow from $6.
pub(crate) const FIRST_FILTER_PARAMETER: usize = 6;

/// Which rows a filter keeps, by id, given the parameter holding the name or value.
pub(crate) fn filter_condition(filter: UsageFilter, parameter: usize) -> String {
    match filter {
        UsageFilter::Project => format!(
            "project_id IN (SELECT fp.id FROM projects fp JOIN organizations fo \
             ON fo.id = fp.org_id WHERE fo.name = $1 AND fp.name = ${parameter})"
        ),
        UsageFilter::VirtualKey => format!(
            "virtual_key_id IN (SELECT fv.id FROM virtual_keys fv WHERE fv.name = ${parameter})"
        ),
        UsageFilter::Model => format!("model = ${parameter}"),
        UsageFilter::Provider => format!(
            "provider_id IN (SELECT fr.id FROM providers fr JOIN organizations fo \
             ON fo.id = fr.org_id WHERE fo.name = $1 AND fr.name = ${parameter})"
        ),
        UsageFilter::Run => format!("run_id = ${parameter}"),
    }
}

/// The filters a usage query can carry.
#[derive(Clone, Copy)]
pub(crate) enum UsageFilter {
    Project,
    VirtualKey,
    Model,
    Provider,
    Run,
}

/// The id-level sums, grouped by `columns`, of the organisation's usage in the query's range
/// that passes `conditions`: the roll-up's whole hours [$4, $5) and the raw records of the
/// partial hours [$2, $4) and [$5, $3) at the ends.
pub(crate) fn usage_sums_by(columns: &[&str], conditions: &[String]) -> String {
    let mut scope = "project_id IN (SELECT op.id FROM projects op JOIN organizations oo \
         ON oo.id = op.org_id WHERE oo.name = $1)"
        .to_owned();
    for condition in conditions {
        scope.push_str(" AND ");
        scope.push_str(condition);
    }
    let rows = format!(
        "{HOURLY_ROWS} WHERE {scope} AND hour_us >= $4 AND hour_us < $5 \
         UNION ALL {RAW_ROWS} WHERE {scope} AND started_at_us >= $2 AND started_at_us < $4 \
         UNION ALL {RAW_ROWS} WHERE {scope} AND started_at_us >= $5 AND started_at_us < $3"
    );
    if columns.is_empty() {
        return format!("(SELECT {SUMMED} FROM ({rows}) u) r");
    }
    let selected: Vec<&str> = columns
        .iter()
        .map(|column| match *column {
            "day_us" => "(started_at_us / 86400000000) * 86400000000 AS day_us",
            other => other,
        })
        .collect();
    format!(
        "(SELECT {selected}, {SUMMED} FROM ({rows}) u GROUP BY {grouped}) r",
        selected = selected.join(", "),
        grouped = columns.join(", "),
    )
}

/// The whole hours [$4, $5) of a query's range [from, to) that the roll-up answers for; an
/// empty range at `to` when the range holds no whole hour.
pub(crate) fn rolled_up_hours(from_us: i64, to_us: i64) -> (i64, i64) {
    let first = if hour_of(from_us) == from_us {
        from_us
    } else {
        hour_of(from_us).saturating_add(HOUR_US)
    };
    let end = hour_of(to_us);
    if first >= end {
        (to_us, to_us)
    } else {
        (first, end)
    }
}

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
            let (hours_from, hours_to) = rolled_up_hours(query.from_us, query.to_us);
            let mut statement = sqlx::query(sql)
                .bind(query.organization.clone())
                .bind(query.from_us)
                .bind(query.to_us)
                .bind(hours_from)
                .bind(hours_to);
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
            let mut conditions = Vec::new();
            let mut values: Vec<&str> = Vec::new();
            for (filter, value) in [
                (UsageFilter::Project, &query.project),
                (UsageFilter::VirtualKey, &query.virtual_key),
                (UsageFilter::Model, &query.model),
                (UsageFilter::Provider, &query.provider),
                (UsageFilter::Run, &query.run_id),
            ] {
                if let Some(value) = value {
                    conditions.push(filter_condition(
                        filter,
                        FIRST_FILTER_PARAMETER + values.len(),
                    ));
                    values.push(value);
                }
            }
            let total_sql = format!(
                "SELECT {USAGE_SUMS} FROM {}",
                usage_sums_by(&[], &conditions)
            );
            let total = bind_usage_filters(&total_sql, query, &values)
                .fetch_one(&mut **tx)
                .await?;
            let total = usage_totals(&total, 0)?;
            if query.group_by.is_empty() {
                return Ok((Vec::new(), total));
            }
            let mut columns: Vec<&str> = Vec::new();
            let mut joins: Vec<&str> = Vec::new();
            let mut keys: Vec<&str> = Vec::new();
            for group in &query.group_by {
                let (column, key) = group_columns(*group);
                if !columns.contains(&column) {
                    columns.push(column);
                    joins.extend(group_join(*group));
                }
                keys.push(key);
            }
            let keys = keys.join(", ");
            let sql = format!(
                "SELECT {keys}, {USAGE_SUMS} FROM {sums} {joins} \
                 GROUP BY {keys} ORDER BY {cost} DESC, 1 LIMIT {limit}",
                sums = usage_sums_by(&columns, &conditions),
                joins = joins.join(" "),
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
