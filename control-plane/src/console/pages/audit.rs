//! The audit log, newest first, filtered by actor, action and target.

use axum::extract::{Path, Query};
use axum::response::Response;
use serde::Deserialize;
use sluice_proto::admin::v1 as pb;

use super::super::html::{Markup, html, markup, utc};
use super::super::layout::{self, Section, empty, encode};
use super::super::request::{Failure, Page};

#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
}

pub async fn page(page: Page, Path(org): Path<String>, Query(filters): Query<Filters>) -> Response {
    let content = render(&page, &org, &filters).await;
    layout::page(&page, Some(&org), Section::Audit, "Audit log", content)
}

async fn render(page: &Page, org: &str, filters: &Filters) -> Result<Markup, Failure> {
    // The organisation must be the caller's to reach (the audit RPC itself narrows by
    // token, not by the organisation asked for).
    super::lists::projects(page, org).await?;
    // This organisation's events: their targets start with its name.
    let target = filters.target.trim();
    let target_prefix = if target.is_empty() {
        org.to_owned()
    } else {
        format!("{org}/{target}")
    };
    let events = page
        .answer(
            page.admin()
                .list_audit_events(page.call(pb::ListAuditEventsRequest {
                    actor: filters.actor.trim().to_owned(),
                    action: filters.action.trim().to_owned(),
                    target_prefix,
                    limit: 500,
                }))
                .await,
        )?
        .events
        .into_iter()
        .filter(|event| {
            event.target == org
                || event
                    .target
                    .strip_prefix(org)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .collect::<Vec<_>>();
    let mut body = markup!(
        "<form method=\"get\" action=\"/orgs/{}/audit\" class=\"row\" role=\"search\">\
         <label>Actor<input name=\"actor\" value=\"{}\"></label>\
         <label>Action<input name=\"action\" value=\"{}\" placeholder=\"project.set_posture\">\
         </label><label>Target within {}/<input name=\"target\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        encode(org),
        filters.actor,
        filters.action,
        org,
        filters.target
    );
    if events.is_empty() {
        body.push(&empty(
            "No audit events match.",
            "Every change made through the console, sluicectl or the API is recorded here.",
        ));
        return Ok(body);
    }
    let mut rows = Markup::new();
    for event in &events {
        html!(
            rows,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td class=\"meta\">{}</td></tr>",
            utc(event.at_us),
            event.actor,
            event.action,
            event.target,
            event.detail,
            event.id
        );
    }
    html!(
        body,
        "<div class=\"table-wrap\"><table id=\"audit\"><thead><tr><th scope=\"col\">When (UTC)</th>\
         <th scope=\"col\">Actor</th><th scope=\"col\">Action</th><th scope=\"col\">Target</th>\
         <th scope=\"col\">Detail</th><th scope=\"col\">Event id</th></tr></thead><tbody>{}\
         </tbody></table></div>",
        rows
    );
    Ok(body)
}
