//! `sluicectl usage ORG`: spend and tokens from the usage records, filtered and grouped. The
//! part of each cost that is Sluice's own estimate is shown in its own column.

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sluice_proto::admin::v1 as pb;
use sluice_shared::time::{day_us, days_from_civil};

use crate::Client;
use crate::budget::dollars;
use crate::output::{Listing, time};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Group {
    Project,
    Key,
    Model,
    Provider,
    Day,
    Source,
    Run,
}

#[derive(Args)]
pub struct UsageArgs {
    org: String,
    #[arg(long)]
    project: Option<String>,
    /// A virtual key's name (needs --project).
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// A provider's name.
    #[arg(long)]
    provider: Option<String>,
    /// Every call of one run (its x-sluice-run-id).
    #[arg(long)]
    run_id: Option<String>,
    /// From this UTC day, YYYY-MM-DD (inclusive).
    #[arg(long, value_parser = parse_day)]
    from: Option<i64>,
    /// Until this UTC day, YYYY-MM-DD (exclusive).
    #[arg(long, value_parser = parse_day)]
    to: Option<i64>,
    /// Group by these, comma-separated: project, key, model, provider, day, source, run.
    #[arg(long, value_delimiter = ',', value_enum)]
    by: Vec<Group>,
    /// At most this many rows, largest cost first.
    #[arg(long, default_value_t = 1_000)]
    limit: u32,
    /// With --run-id: the run's calls one by one, newest first (at most --limit, up to 1 000).
    #[arg(long, requires = "run_id")]
    calls: bool,
}

fn parse_day(text: &str) -> anyhow::Result<i64> {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        bail!("'{text}' is not a day like 2026-11-24");
    };
    let number = |part: &str| {
        part.parse::<i64>()
            .with_context(|| format!("'{text}' is not a day"))
    };
    let (year, month, day) = (number(year)?, number(month)?, number(day)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        bail!("'{text}' is not a day like 2026-11-24");
    }
    Ok(days_from_civil(year, month, day) * day_us())
}

fn group(group: Group) -> i32 {
    let group = match group {
        Group::Project => pb::UsageGroup::Project,
        Group::Key => pb::UsageGroup::VirtualKey,
        Group::Model => pb::UsageGroup::Model,
        Group::Provider => pb::UsageGroup::Provider,
        Group::Day => pb::UsageGroup::Day,
        Group::Source => pb::UsageGroup::Source,
        Group::Run => pb::UsageGroup::Run,
    };
    group as i32
}

const SUM_COLUMNS: &[&str] = &[
    "requests",
    "failed",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_usd",
    "of_which_estimated_usd",
    "estimated_requests",
];

fn sums(t: &pb::UsageTotals) -> Vec<Value> {
    vec![
        json!(t.requests),
        json!(t.failed_requests),
        json!(t.input_tokens),
        json!(t.cached_input_tokens),
        json!(t.output_tokens),
        json!(dollars(t.cost_micros)),
        json!(dollars(t.estimated_cost_micros)),
        json!(t.estimated_requests),
    ]
}

pub async fn run(client: &mut Client, args: UsageArgs) -> anyhow::Result<Listing> {
    if args.calls {
        return run_calls(client, args).await;
    }
    let groups = args.by.clone();
    let response = client
        .query_usage(pb::QueryUsageRequest {
            organization: args.org,
            project: args.project.unwrap_or_default(),
            virtual_key: args.key.unwrap_or_default(),
            model: args.model.unwrap_or_default(),
            provider: args.provider.unwrap_or_default(),
            run_id: args.run_id.unwrap_or_default(),
            from_us: args.from.unwrap_or(0),
            to_us: args.to.unwrap_or(0),
            group_by: groups.iter().copied().map(group).collect(),
            limit: args.limit,
        })
        .await?
        .into_inner();
    let total = response.total.unwrap_or_default();
    if groups.is_empty() {
        return Ok(Listing::one(SUM_COLUMNS, sums(&total)));
    }
    let mut columns: Vec<&'static str> = groups
        .iter()
        .map(|g| match g {
            Group::Project => "project",
            Group::Key => "key",
            Group::Model => "model",
            Group::Provider => "provider",
            Group::Day => "day",
            Group::Source => "source",
            Group::Run => "run",
        })
        .collect();
    columns.extend_from_slice(SUM_COLUMNS);
    let rows = response
        .rows
        .iter()
        .map(|row| {
            let mut cells: Vec<Value> = row
                .keys
                .iter()
                .zip(&groups)
                .map(|(key, group)| match group {
                    Group::Day => key.parse().map_or(json!(key), |us: i64| {
                        time(us).as_str().map_or(json!(key), |t| json!(&t[..10]))
                    }),
                    _ => json!(key),
                })
                .collect();
            cells.extend(sums(row));
            cells
        })
        .collect();
    Ok(Listing::many_owned(columns, rows))
}

async fn run_calls(client: &mut Client, args: UsageArgs) -> anyhow::Result<Listing> {
    let listed = client
        .list_run_calls(pb::ListRunCallsRequest {
            organization: args.org,
            run_id: args.run_id.unwrap_or_default(),
            limit: args.limit,
        })
        .await?
        .into_inner();
    if listed.truncated {
        eprintln!("more calls than --limit: the newest are listed");
    }
    Ok(Listing::many(
        &[
            "started_at",
            "request_id",
            "project",
            "virtual_key",
            "model",
            "provider",
            "input_tokens",
            "output_tokens",
            "cost",
            "source",
            "http_status",
            "latency_ms",
            "task_id",
        ],
        listed
            .calls
            .into_iter()
            .map(|call| {
                vec![
                    time(call.started_at_us),
                    json!(call.request_id),
                    json!(call.project),
                    json!(call.virtual_key),
                    json!(call.model),
                    json!(call.provider),
                    json!(call.input_tokens),
                    json!(call.output_tokens),
                    json!(dollars(call.cost_micros)),
                    json!(call.source),
                    json!(call.http_status),
                    json!(call.latency_ms),
                    json!(call.task_id),
                ]
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_to_utc_midnight() {
        assert_eq!(parse_day("1970-01-02").unwrap(), day_us());
        assert!(parse_day("2026-13-01").is_err());
        assert!(parse_day("yesterday").is_err());
    }
}
