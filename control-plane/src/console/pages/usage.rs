//! Usage: filters, a grouping, spend per day drawn as bars (Sluice's estimates in their own
//! colour), and a run id search that shows one run's calls.

use axum::extract::{Path, Query};
use axum::response::Response;
use serde::Deserialize;
use sluice_proto::admin::v1 as pb;
use sluice_shared::time::now_us;

use super::super::html::{Markup, dollars, html, markup, utc};
use super::super::layout::{self, Section, empty, encode};
use super::super::request::{Failure, Page};

#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    project: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    run: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    group: String,
}

const DAY_US: i64 = 86_400_000_000;

const GROUPS: &[(&str, pb::UsageGroup, &str)] = &[
    ("model", pb::UsageGroup::Model, "Model"),
    ("provider", pb::UsageGroup::Provider, "Provider"),
    ("project", pb::UsageGroup::Project, "Project"),
    ("key", pb::UsageGroup::VirtualKey, "Virtual key"),
    ("source", pb::UsageGroup::Source, "Source"),
    ("run", pb::UsageGroup::Run, "Run"),
];

pub async fn page(page: Page, Path(org): Path<String>, Query(filters): Query<Filters>) -> Response {
    let content = render(&page, &org, &filters).await;
    layout::page(&page, Some(&org), Section::Usage, "Usage", content)
}

async fn render(page: &Page, org: &str, filters: &Filters) -> Result<Markup, Failure> {
    let days: i64 = match filters.days.parse() {
        Ok(days) if (1..=366).contains(&days) => days,
        _ => 30,
    };
    let now = now_us();
    let from_us = sluice_shared::time::day_start_us(now) - (days - 1) * DAY_US;
    let (group_name, group, group_label) = GROUPS
        .iter()
        .find(|(name, _, _)| *name == filters.group)
        .copied()
        .unwrap_or(GROUPS[0]);
    let query = |group_by: Vec<pb::UsageGroup>| pb::QueryUsageRequest {
        organization: org.to_owned(),
        project: filters.project.trim().to_owned(),
        virtual_key: filters.key.trim().to_owned(),
        model: filters.model.trim().to_owned(),
        provider: filters.provider.trim().to_owned(),
        run_id: filters.run.trim().to_owned(),
        from_us,
        to_us: 0,
        group_by: group_by.into_iter().map(|group| group as i32).collect(),
        limit: 0,
    };
    let by_day = page.answer(
        page.admin()
            .query_usage(page.call(query(vec![pb::UsageGroup::Day])))
            .await,
    )?;
    let grouped = vec![group];
    let rows = page.answer(
        page.admin()
            .query_usage(page.call(query(grouped.clone())))
            .await,
    )?;

    let mut body = filter_form(org, filters, days, group_name);
    let total = by_day.total.clone().unwrap_or_default();
    html!(
        body,
        "<p class=\"totals\"><strong>{}</strong> over {} request(s) in the last {} day(s): \
         <strong>{}</strong> verified by providers, <strong>{}</strong> Sluice's estimate \
         ({} request(s) estimated), {} failed.</p>",
        dollars(total.cost_micros),
        total.requests,
        days,
        dollars(total.cost_micros - total.estimated_cost_micros),
        dollars(total.estimated_cost_micros),
        total.estimated_requests,
        total.failed_requests
    );
    if total.requests == 0 {
        body.push(&empty(
            "No usage in this range.",
            "Send a request through a proxy with one of the project's virtual keys; usage \
             appears here within seconds.",
        ));
        return Ok(body);
    }
    body.push(&chart(&by_day.rows, from_us, days));
    let run = filters.run.trim();
    if !run.is_empty() {
        body.push(&run_calls(page, org, run).await?);
    }
    let title = markup!("By {}", group_label.to_ascii_lowercase());
    let headings: Vec<&str> = grouped
        .iter()
        .map(|each| {
            GROUPS
                .iter()
                .find(|(_, group, _)| group == each)
                .map_or("", |(_, _, label)| label)
        })
        .collect();
    let mut head = Markup::new();
    for heading in &headings {
        html!(head, "<th scope=\"col\">{}</th>", heading);
    }
    let mut table = Markup::new();
    for row in &rows.rows {
        let mut cells = Markup::new();
        for key in &row.keys {
            html!(cells, "<td>{}</td>", key);
        }
        html!(
            table,
            "<tr>{}<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            cells,
            row.requests,
            row.input_tokens,
            row.cached_input_tokens,
            row.output_tokens,
            dollars(row.cost_micros),
            dollars(row.estimated_cost_micros),
            row.failed_requests
        );
    }
    html!(
        body,
        "<h2>{}</h2><div class=\"table-wrap\"><table id=\"usage-rows\"><thead><tr>{}\
         <th scope=\"col\" class=\"num\">Requests</th><th scope=\"col\" class=\"num\">Input tokens</th>\
         <th scope=\"col\" class=\"num\">Cached input</th><th scope=\"col\" class=\"num\">Output tokens</th>\
         <th scope=\"col\" class=\"num\">Cost</th><th scope=\"col\" class=\"num\">of which estimated</th>\
         <th scope=\"col\" class=\"num\">Failed</th></tr></thead><tbody>{}</tbody></table></div>",
        title,
        head,
        table
    );
    Ok(body)
}

/// Every call of one run, newest first.
async fn run_calls(page: &Page, org: &str, run: &str) -> Result<Markup, Failure> {
    let listed = page.answer(
        page.admin()
            .list_run_calls(page.call(pb::ListRunCallsRequest {
                organization: org.to_owned(),
                run_id: run.to_owned(),
                limit: 500,
            }))
            .await,
    )?;
    let mut out = markup!("<h2>The calls of run <code>{}</code></h2>", run);
    if listed.calls.is_empty() {
        out.push(&empty(
            "No calls of this run.",
            "Runs are named by the x-sluice-run-id header of each request.",
        ));
        return Ok(out);
    }
    let mut rows = Markup::new();
    for call in &listed.calls {
        html!(
            rows,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td class=\"num\">{}</td><td class=\"num\">{} ms</td><td>{}</td></tr>",
            utc(call.started_at_us),
            call.request_id,
            call.project,
            call.virtual_key,
            call.model,
            call.provider,
            call.input_tokens,
            call.output_tokens,
            dollars(call.cost_micros),
            call.source.to_ascii_lowercase().replace('_', " "),
            call.http_status,
            call.latency_ms,
            call.task_id
        );
    }
    html!(
        out,
        "<div class=\"table-wrap\"><table id=\"run-calls\"><thead><tr>\
         <th scope=\"col\">Started (UTC)</th><th scope=\"col\">Request id</th>\
         <th scope=\"col\">Project</th><th scope=\"col\">Key</th><th scope=\"col\">Model</th>\
         <th scope=\"col\">Provider</th><th scope=\"col\" class=\"num\">Input</th>\
         <th scope=\"col\" class=\"num\">Output</th><th scope=\"col\" class=\"num\">Cost</th>\
         <th scope=\"col\">Source</th><th scope=\"col\" class=\"num\">Status</th>\
         <th scope=\"col\" class=\"num\">Latency</th><th scope=\"col\">Task</th></tr></thead>\
         <tbody>{}</tbody></table></div>{}",
        rows,
        if listed.truncated {
            markup!("<p class=\"meta\">The newest 500 calls are listed.</p>")
        } else {
            Markup::new()
        }
    );
    Ok(out)
}

fn filter_form(org: &str, filters: &Filters, days: i64, group: &str) -> Markup {
    let mut day_options = Markup::new();
    for each in [1i64, 7, 30, 90] {
        if each == days {
            html!(
                day_options,
                "<option value=\"{}\" selected>{} day(s)</option>",
                each,
                each
            );
        } else {
            html!(
                day_options,
                "<option value=\"{}\">{} day(s)</option>",
                each,
                each
            );
        }
    }
    let mut group_options = Markup::new();
    for (name, _, label) in GROUPS {
        if *name == group {
            html!(
                group_options,
                "<option value=\"{}\" selected>{}</option>",
                name,
                label
            );
        } else {
            html!(
                group_options,
                "<option value=\"{}\">{}</option>",
                name,
                label
            );
        }
    }
    markup!(
        "<form method=\"get\" action=\"/orgs/{}/usage\" class=\"row\" role=\"search\">\
         <label>Project<input name=\"project\" value=\"{}\" size=\"10\"></label>\
         <label>Virtual key<input name=\"key\" value=\"{}\" size=\"10\"></label>\
         <label>Model<input name=\"model\" value=\"{}\" size=\"12\"></label>\
         <label>Provider<input name=\"provider\" value=\"{}\" size=\"10\"></label>\
         <label>Run id<input name=\"run\" value=\"{}\" size=\"14\"></label>\
         <label>Range<select name=\"days\">{}</select></label>\
         <label>Group by<select name=\"group\">{}</select></label>\
         <button type=\"submit\">Show</button></form>",
        encode(org),
        filters.project,
        filters.key,
        filters.model,
        filters.provider,
        filters.run,
        day_options,
        group_options
    )
}

/// Spend per UTC day as stacked bars: provider-reported below, estimated on top.
fn chart(rows: &[pb::UsageTotals], from_us: i64, days: i64) -> Markup {
    let mut per_day = vec![(0i64, 0i64); usize::try_from(days).unwrap_or(0)];
    for row in rows {
        let Some(day_us) = row.keys.first().and_then(|key| key.parse::<i64>().ok()) else {
            continue;
        };
        let index = (day_us - from_us).div_euclid(DAY_US);
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| per_day.get_mut(i)) {
            slot.0 += row.cost_micros - row.estimated_cost_micros;
            slot.1 += row.estimated_cost_micros;
        }
    }
    let peak = per_day
        .iter()
        .map(|(reported, estimated)| reported + estimated)
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height) = (720i64, 160i64);
    let slot = (width / days.max(1)).max(1);
    let bar = (slot * 3 / 4).max(1);
    let mut bars = Markup::new();
    for (index, (reported, estimated)) in per_day.iter().enumerate() {
        let x = i64::try_from(index).unwrap_or(0) * slot;
        let reported_h = reported * height / peak;
        let estimated_h = estimated * height / peak;
        let day =
            sluice_shared::time::rfc3339(from_us + i64::try_from(index).unwrap_or(0) * DAY_US);
        let label = markup!(
            "{}: {} verified, {} estimated",
            day.get(..10).unwrap_or_default(),
            dollars(*reported),
            dollars(*estimated)
        );
        html!(
            bars,
            "<g><title>{}</title><rect class=\"provider\" x=\"{}\" y=\"{}\" width=\"{}\" \
             height=\"{}\"></rect><rect class=\"estimate\" x=\"{}\" y=\"{}\" width=\"{}\" \
             height=\"{}\"></rect></g>",
            label,
            x,
            height - reported_h,
            bar,
            reported_h,
            x,
            height - reported_h - estimated_h,
            bar,
            estimated_h
        );
    }
    markup!(
        "<figure class=\"chart\"><svg viewBox=\"0 0 {} {}\" role=\"img\" \
         aria-label=\"Spend per day, peak {}\">{}</svg><figcaption class=\"legend\">\
         <span><span class=\"swatch provider\"></span>Verified by Provider</span>\
         <span><span class=\"swatch estimate\"></span>Sluice's estimate</span>\
         <span class=\"meta\">peak day {}</span></figcaption></figure>",
        width,
        height,
        dollars(peak),
        bars,
        dollars(peak)
    )
}
