//! Usage queries: sums over the usage of one organisation, filtered by name and time and
//! grouped. The hourly roll-up answers for the whole hours of a range (in SQL, built from fixed
//! fragments, every value a bound parameter); the stored batches of the partial hours at its
//! ends are read and summed here. Both are summed by the ids the groups need first, and names
//! are looked up for those sums only, so a query's cost follows the number of hour buckets and
//! of records in its two edge hours, not of records in its range.

use std::collections::{HashMap, HashSet};

use crate::store::sql::usage::{HOUR_US, add_sums, hour_of, sums_of};
use crate::store::{UsageGroup, UsageRecord, UsageTotals};

const DAY_US: i64 = 86_400_000_000;

/// The column of the id-level sums a group is summed by before names are joined, as the
/// roll-up's SQL selects it (as text, so every key has one type).
pub(crate) fn hourly_sql(group: UsageGroup) -> &'static str {
    match group {
        UsageGroup::Project => "project_id",
        UsageGroup::VirtualKey => "virtual_key_id",
        UsageGroup::Model => "model",
        UsageGroup::Provider => "provider_id",
        UsageGroup::Day => "CAST((hour_us / 86400000000) * 86400000000 AS TEXT)",
        UsageGroup::Source => "source",
        UsageGroup::Run => "run_id",
    }
}

/// A group's id in a stored record.
fn id_of(group: UsageGroup, record: &UsageRecord) -> String {
    match group {
        UsageGroup::Project => record.project_id.clone(),
        UsageGroup::VirtualKey => record.virtual_key_id.clone(),
        UsageGroup::Model => record.model.clone(),
        UsageGroup::Provider => record.provider_id.clone(),
        UsageGroup::Day => (record.started_at_us.div_euclid(DAY_US) * DAY_US).to_string(),
        UsageGroup::Source => record.source.as_str().to_owned(),
        UsageGroup::Run => record.run_id.clone(),
    }
}

/// The table whose `name` the answer shows for a group's ids, where it shows names.
pub(crate) fn names_table(group: UsageGroup) -> Option<&'static str> {
    match group {
        UsageGroup::Project => Some("projects"),
        UsageGroup::VirtualKey => Some("virtual_keys"),
        UsageGroup::Provider => Some("providers"),
        UsageGroup::Model | UsageGroup::Day | UsageGroup::Source | UsageGroup::Run => None,
    }
}

/// The sums of one roll-up query over `columns` (positional groups; none for the total).
pub(crate) const ID_SUMS: &str = "CAST(COALESCE(SUM(requests), 0) AS BIGINT), \
     CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cached_input_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
     CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN source = 'ESTIMATED' THEN cost_micros ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(CASE WHEN source = 'ESTIMATED' THEN requests ELSE 0 END), 0) AS BIGINT), \
     CAST(COALESCE(SUM(failed_requests), 0) AS BIGINT)";

/// Bound parameters every roll-up query starts with: $1 the organisation's name, [$2, $3) its
/// whole hours (see [`rolled_up_hours`]); filter values follow from $4.
pub(crate) const FIRST_FILTER_PARAMETER: usize = 4;

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

/// The roll-up's id-level sums over the whole hours [$2, $3) of the organisation's usage that
/// passes `conditions`, grouped by `columns`.
pub(crate) fn hourly_sums_sql(columns: &[UsageGroup], conditions: &[String]) -> String {
    let mut sql = String::from("SELECT ");
    for column in columns {
        sql.push_str(hourly_sql(*column));
        sql.push_str(", ");
    }
    sql.push_str(ID_SUMS);
    sql.push_str(
        " FROM usage_hourly WHERE project_id IN (SELECT op.id FROM projects op \
         JOIN organizations oo ON oo.id = op.org_id WHERE oo.name = $1) \
         AND hour_us >= $2 AND hour_us < $3",
    );
    for condition in conditions {
        sql.push_str(" AND ");
        sql.push_str(condition);
    }
    if !columns.is_empty() {
        let positions: Vec<String> = (1..=columns.len()).map(|p| p.to_string()).collect();
        sql.push_str(" GROUP BY ");
        sql.push_str(&positions.join(", "));
    }
    sql
}

/// The whole hours [first, end) of a query's range [from, to) that the roll-up answers for; an
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

/// The parts of [from, to) the roll-up does not answer for, non-empty ones only.
pub(crate) fn edge_ranges(from_us: i64, to_us: i64) -> Vec<(i64, i64)> {
    let (first, end) = rolled_up_hours(from_us, to_us);
    [(from_us, first.min(to_us)), (end.max(from_us), to_us)]
        .into_iter()
        .filter(|(start, stop)| start < stop)
        .collect()
}

/// The hours (their starts) the edge ranges touch.
pub(crate) fn edge_hours(ranges: &[(i64, i64)]) -> Vec<i64> {
    let mut hours = Vec::new();
    for &(start, stop) in ranges {
        let mut hour = hour_of(start);
        while hour < stop {
            if !hours.contains(&hour) {
                hours.push(hour);
            }
            hour = hour.saturating_add(HOUR_US);
        }
    }
    hours
}

/// Which stored records of the edge hours a query counts, by id.
pub(crate) struct EdgeFilter {
    pub ranges: Vec<(i64, i64)>,
    /// The organisation's projects (those the project filter names, when it is set).
    pub projects: HashSet<String>,
    pub virtual_keys: Option<HashSet<String>>,
    pub model: Option<String>,
    pub providers: Option<HashSet<String>>,
    pub run_id: Option<String>,
}

impl EdgeFilter {
    pub(crate) fn keeps(&self, record: &UsageRecord) -> bool {
        self.ranges
            .iter()
            .any(|&(start, stop)| record.started_at_us >= start && record.started_at_us < stop)
            && self.projects.contains(&record.project_id)
            && self
                .virtual_keys
                .as_ref()
                .is_none_or(|keys| keys.contains(&record.virtual_key_id))
            && self
                .model
                .as_ref()
                .is_none_or(|model| *model == record.model)
            && self
                .providers
                .as_ref()
                .is_none_or(|providers| providers.contains(&record.provider_id))
            && self.run_id.as_ref().is_none_or(|run| *run == record.run_id)
    }
}

/// Sums by id tuple, from the roll-up and from edge records alike.
#[derive(Default)]
pub(crate) struct IdSums {
    pub columns: Vec<UsageGroup>,
    pub sums: HashMap<Vec<String>, UsageTotals>,
}

impl IdSums {
    pub(crate) fn new(columns: Vec<UsageGroup>) -> Self {
        Self {
            columns,
            sums: HashMap::new(),
        }
    }

    pub(crate) fn add(&mut self, ids: Vec<String>, sums: &UsageTotals) {
        add_sums(self.sums.entry(ids).or_default(), sums);
    }

    pub(crate) fn add_record(&mut self, record: &UsageRecord) {
        let ids = self
            .columns
            .iter()
            .map(|column| id_of(*column, record))
            .collect();
        self.add(ids, &sums_of(record));
    }

    /// The ids of `column` that appear in the sums.
    pub(crate) fn ids_of(&self, column: usize) -> HashSet<&str> {
        self.sums.keys().map(|ids| ids[column].as_str()).collect()
    }

    /// The answer: sums by the groups asked for (in their order, named through `names` per
    /// column), largest cost first and then by the first key, at most `limit`; and the total.
    pub(crate) fn answer(
        self,
        groups: &[usize],
        names: &[Option<HashMap<String, String>>],
        limit: usize,
    ) -> (Vec<UsageTotals>, UsageTotals) {
        let mut total = UsageTotals::default();
        let mut grouped: HashMap<Vec<String>, UsageTotals> = HashMap::new();
        for (ids, sums) in self.sums {
            add_sums(&mut total, &sums);
            if groups.is_empty() {
                continue;
            }
            let keys: Vec<String> = groups
                .iter()
                .map(|&column| match &names[column] {
                    Some(names) => names.get(&ids[column]).cloned().unwrap_or_default(),
                    None => ids[column].clone(),
                })
                .collect();
            add_sums(grouped.entry(keys).or_default(), &sums);
        }
        let mut rows: Vec<UsageTotals> = grouped
            .into_iter()
            .map(|(keys, mut sums)| {
                sums.keys = keys;
                sums
            })
            .collect();
        rows.sort_by(|a, b| {
            b.cost_micros
                .cmp(&a.cost_micros)
                .then_with(|| a.keys.cmp(&b.keys))
        });
        rows.truncate(limit);
        (rows, total)
    }
}

macro_rules! usage_query_fns {
    () => {
        fn id_sums_row(row: &DbRow, keys: usize) -> StoreResult<(Vec<String>, UsageTotals)> {
            let mut ids = Vec::with_capacity(keys);
            for index in 0..keys {
                ids.push(row.try_get(index)?);
            }
            let totals = UsageTotals {
                keys: Vec::new(),
                requests: row.try_get(keys)?,
                input_tokens: row.try_get(keys + 1)?,
                cached_input_tokens: row.try_get(keys + 2)?,
                output_tokens: row.try_get(keys + 3)?,
                cost_micros: row.try_get(keys + 4)?,
                estimated_cost_micros: row.try_get(keys + 5)?,
                estimated_requests: row.try_get(keys + 6)?,
                failed_requests: row.try_get(keys + 7)?,
            };
            Ok((ids, totals))
        }

        /// The ids a scalar query over one bound value returns.
        async fn id_set(
            tx: &mut Tx,
            sql: &str,
            values: &[&str],
        ) -> StoreResult<std::collections::HashSet<String>> {
            let mut query = sqlx::query_scalar::<_, String>(sql);
            for value in values {
                query = query.bind((*value).to_owned());
            }
            Ok(query.fetch_all(&mut **tx).await?.into_iter().collect())
        }

        async fn edge_filter(
            tx: &mut Tx,
            query: &UsageQuery,
            ranges: Vec<(i64, i64)>,
        ) -> StoreResult<EdgeFilter> {
            let projects = match &query.project {
                Some(project) => {
                    id_set(
                        tx,
                        "SELECT p.id FROM projects p JOIN organizations o ON o.id = p.org_id \
                         WHERE o.name = $1 AND p.name = $2",
                        &[&query.organization, project],
                    )
                    .await?
                }
                None => {
                    id_set(
                        tx,
                        "SELECT p.id FROM projects p JOIN organizations o ON o.id = p.org_id \
                         WHERE o.name = $1",
                        &[&query.organization],
                    )
                    .await?
                }
            };
            let virtual_keys = match &query.virtual_key {
                Some(name) => {
                    Some(id_set(tx, "SELECT id FROM virtual_keys WHERE name = $1", &[name]).await?)
                }
                None => None,
            };
            let providers = match &query.provider {
                Some(name) => Some(
                    id_set(
                        tx,
                        "SELECT r.id FROM providers r JOIN organizations o ON o.id = r.org_id \
                         WHERE o.name = $1 AND r.name = $2",
                        &[&query.organization, name],
                    )
                    .await?,
                ),
                None => None,
            };
            Ok(EdgeFilter {
                ranges,
                projects,
                virtual_keys,
                model: query.model.clone(),
                providers,
                run_id: query.run_id.clone(),
            })
        }

        /// Adds the records of the edge ranges that pass the query's filters, read from the
        /// batches that hold records of those hours.
        async fn add_edge_records(
            tx: &mut Tx,
            query: &UsageQuery,
            sums: &mut IdSums,
        ) -> StoreResult<()> {
            let ranges = edge_ranges(query.from_us, query.to_us);
            if ranges.is_empty() {
                return Ok(());
            }
            let hours = edge_hours(&ranges);
            let filter = edge_filter(tx, query, ranges).await?;
            if filter.projects.is_empty() {
                return Ok(());
            }
            for record in records_of_hours(tx, &hours, None).await? {
                if filter.keeps(&record) {
                    sums.add_record(&record);
                }
            }
            Ok(())
        }

        /// The names of the ids of a table, looked up in chunks.
        async fn names_of(
            tx: &mut Tx,
            table: &str,
            ids: std::collections::HashSet<&str>,
        ) -> StoreResult<std::collections::HashMap<String, String>> {
            const CHUNK: usize = 500;
            let ids: Vec<&str> = ids.into_iter().collect();
            let mut names = std::collections::HashMap::with_capacity(ids.len());
            for chunk in ids.chunks(CHUNK) {
                let placeholders: Vec<String> =
                    (1..=chunk.len()).map(|n| format!("${n}")).collect();
                let sql = format!(
                    "SELECT id, name FROM {table} WHERE id IN ({})",
                    placeholders.join(", ")
                );
                let mut lookup = sqlx::query_as::<_, (String, String)>(&sql);
                for id in chunk {
                    lookup = lookup.bind((*id).to_owned());
                }
                names.extend(lookup.fetch_all(&mut **tx).await?);
            }
            Ok(names)
        }

        async fn query_usage_tx(
            tx: &mut Tx,
            query: &UsageQuery,
        ) -> StoreResult<(Vec<UsageTotals>, UsageTotals)> {
            org_id(tx, &query.organization).await?;
            // Each group's column, once; `groups` maps the groups asked for to those columns.
            let mut columns: Vec<UsageGroup> = Vec::new();
            let mut groups = Vec::with_capacity(query.group_by.len());
            for group in &query.group_by {
                let column = *group;
                let index = match columns.iter().position(|c| *c == column) {
                    Some(index) => index,
                    None => {
                        columns.push(column);
                        columns.len() - 1
                    }
                };
                groups.push(index);
            }
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
            let mut sums = IdSums::new(columns.clone());
            let (hours_from, hours_to) = rolled_up_hours(query.from_us, query.to_us);
            if hours_from < hours_to {
                let sql = hourly_sums_sql(&columns, &conditions);
                let mut statement = sqlx::query(&sql)
                    .bind(query.organization.clone())
                    .bind(hours_from)
                    .bind(hours_to);
                for value in &values {
                    statement = statement.bind((*value).to_owned());
                }
                for row in statement.fetch_all(&mut **tx).await? {
                    let (ids, totals) = id_sums_row(&row, columns.len())?;
                    sums.add(ids, &totals);
                }
            }
            add_edge_records(tx, query, &mut sums).await?;
            let mut names = Vec::with_capacity(columns.len());
            for (index, column) in columns.iter().enumerate() {
                names.push(match names_table(*column) {
                    Some(table) => Some(names_of(tx, table, sums.ids_of(index)).await?),
                    None => None,
                });
            }
            let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
            Ok(sums.answer(&groups, &names, limit))
        }
    };
}

pub(crate) use usage_query_fns;

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_US;

    #[test]
    fn the_roll_up_answers_for_whole_hours_and_batches_for_the_edges() {
        // 10:30 to 13:15: 11:00-13:00 rolled up, both ends read from batches.
        let (from, to) = (10 * H + H / 2, 13 * H + H / 4);
        assert_eq!(rolled_up_hours(from, to), (11 * H, 13 * H));
        assert_eq!(edge_ranges(from, to), vec![(from, 11 * H), (13 * H, to)]);
        assert_eq!(edge_hours(&edge_ranges(from, to)), vec![10 * H, 13 * H]);
        // Whole hours only: nothing read from batches.
        assert!(edge_ranges(10 * H, 12 * H).is_empty());
        // Inside no whole hour, across an hour's end: both hours read.
        let (from, to) = (10 * H + H / 2, 11 * H + H / 4);
        assert_eq!(edge_ranges(from, to), vec![(from, to)]);
        assert_eq!(edge_hours(&edge_ranges(from, to)), vec![10 * H, 11 * H]);
    }
}
