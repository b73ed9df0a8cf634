//! Budgets: what each limits, how much is spent (Sluice's estimate apart from what providers
//! reported), leased to proxies, and the alert thresholds; create one.

use axum::extract::Path;
use axum::response::Response;
use serde::Deserialize;
use sluice_proto::admin::v1 as pb;
use sluice_proto::common::v1 as common;

use super::super::html::{Markup, dollars, html, markup, utc};
use super::super::layout::{self, Section, csrf_field, empty, encode};
use super::super::request::{Failure, Page, Posted};
use super::super::sessions::Flash;
use super::{guarded, invalid, micros_from_dollars};

pub async fn page(page: Page, Path(org): Path<String>) -> Response {
    let content = render(&page, &org).await;
    layout::page(&page, Some(&org), Section::Budgets, "Budgets", content)
}

fn period_label(period: i32) -> &'static str {
    match common::BudgetPeriod::try_from(period) {
        Ok(common::BudgetPeriod::Day) => "day (UTC)",
        Ok(common::BudgetPeriod::Month) => "month (UTC)",
        Ok(common::BudgetPeriod::Total) => "total",
        _ => "unknown",
    }
}

async fn render(page: &Page, org: &str) -> Result<Markup, Failure> {
    let budgets = page
        .answer(
            page.admin()
                .list_budgets(page.call(pb::ListBudgetsRequest {
                    organization: org.to_owned(),
                }))
                .await,
        )?
        .budgets;
    let mut body = markup!(
        "<p>A <strong>HARD</strong> budget refuses requests once spent (proxies hold leases \
         on it, so it holds across the fleet); a <strong>SOFT</strong> one only alerts. Spend \
         is what providers reported (<em>Verified by Provider</em>) plus Sluice's estimate \
         where they reported nothing.</p>"
    );
    if budgets.is_empty() {
        body.push(&empty(
            "No budgets yet: spend is unlimited.",
            "Set a HARD budget on the organisation or a project below before going LIVE.",
        ));
    } else {
        let mut rows = Markup::new();
        for budget in &budgets {
            rows.push(&budget_row(budget));
        }
        html!(
            body,
            "<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Scope</th>\
             <th scope=\"col\">Window</th><th scope=\"col\">Posture</th>\
             <th scope=\"col\" class=\"num\">Limit</th><th scope=\"col\" class=\"num\">Spent</th>\
             <th scope=\"col\" class=\"num\">Verified by Provider</th>\
             <th scope=\"col\" class=\"num\">Sluice's estimate</th>\
             <th scope=\"col\" class=\"num\">Used</th><th scope=\"col\" class=\"num\">Leased</th>\
             <th scope=\"col\">Alerts at</th></tr></thead><tbody>{}</tbody></table></div>",
            rows
        );
    }
    if page.can_write() {
        let projects = super::lists::projects(page, org).await?;
        let mut options = markup!("<option value=\"\">the whole organisation</option>");
        for project in &projects {
            html!(
                options,
                "<option value=\"{}\">project {}</option>",
                project.name,
                project.name
            );
        }
        html!(
            body,
            "<h2>Set a budget</h2><form method=\"post\" action=\"/orgs/{}/budgets\" \
             class=\"stack\">{}<label>Scope<select name=\"project\">{}</select></label>\
             <label>Window<select name=\"period\"><option value=\"month\">month (UTC)</option>\
             <option value=\"day\">day (UTC)</option><option value=\"total\">total</option>\
             </select></label><label>Posture<select name=\"posture\">\
             <option value=\"hard\">HARD: refuse when spent</option>\
             <option value=\"soft\">SOFT: alert only</option></select></label>\
             <label>Limit in dollars<input name=\"limit\" required inputmode=\"decimal\">\
             </label><button type=\"submit\">Set budget</button></form>",
            encode(org),
            csrf_field(page),
            options
        );
    }
    Ok(body)
}

fn budget_row(budget: &pb::Budget) -> Markup {
    let target = budget.target.clone().unwrap_or_default();
    let scope = match (target.project.is_empty(), target.virtual_key.is_empty()) {
        (true, _) => markup!("organisation {}", target.organization),
        (false, true) => markup!("project {}", target.project),
        (false, false) => markup!("key {}/{}", target.project, target.virtual_key),
    };
    let hard = budget.posture == pb::BudgetPosture::Hard as i32;
    let used = if budget.limit_micros > 0 {
        let percent = budget.spent_micros.saturating_mul(100) / budget.limit_micros;
        markup!("{}%", percent)
    } else {
        markup!("—")
    };
    let window = if budget.window_end_us == 0 {
        markup!(
            "{} since {}",
            period_label(budget.period),
            utc(budget.window_start_us)
        )
    } else {
        markup!(
            "{}: {} – {}",
            period_label(budget.period),
            utc(budget.window_start_us),
            utc(budget.window_end_us)
        )
    };
    let alerts: Vec<String> = budget
        .alert_percents
        .iter()
        .map(|percent| format!("{percent}%"))
        .collect();
    markup!(
        "<tr><td>{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} \
         <span class=\"meta\">({} leases)</span></td><td>{}</td></tr>",
        scope,
        window,
        if hard { "bad" } else { "warn" },
        if hard { "HARD" } else { "SOFT" },
        dollars(budget.limit_micros),
        dollars(budget.spent_micros),
        dollars(budget.spent_micros - budget.estimated_micros),
        dollars(budget.estimated_micros),
        used,
        dollars(budget.leased_micros),
        budget.leases,
        alerts.join(", ")
    )
}

#[derive(Deserialize)]
pub struct NewBudget {
    csrf: String,
    #[serde(default)]
    project: String,
    period: String,
    posture: String,
    limit: String,
}

guarded!(NewBudget);

pub async fn create(Path(org): Path<String>, posted: Posted<NewBudget>) -> Response {
    let Posted { page, form } = posted;
    let outcome = async {
        let limit = micros_from_dollars("limit", &form.limit)
            .map_err(|message| invalid(&page, message))?
            .ok_or_else(|| invalid(&page, "limit: is required".into()))?;
        let period = match form.period.as_str() {
            "day" => common::BudgetPeriod::Day,
            "total" => common::BudgetPeriod::Total,
            _ => common::BudgetPeriod::Month,
        };
        let posture = match form.posture.as_str() {
            "soft" => pb::BudgetPosture::Soft,
            _ => pb::BudgetPosture::Hard,
        };
        page.answer(
            page.admin()
                .create_budget(page.call(pb::CreateBudgetRequest {
                    target: Some(pb::BudgetTarget {
                        organization: org.clone(),
                        project: form.project.clone(),
                        virtual_key: String::new(),
                    }),
                    period: period as i32,
                    limit_micros: limit,
                    posture: posture as i32,
                    alert_percents: Vec::new(),
                }))
                .await,
        )?;
        Ok(Flash::Done(format!(
            "{} budget of {} per {} set.",
            if posture == pb::BudgetPosture::Hard {
                "HARD"
            } else {
                "SOFT"
            },
            super::super::html::dollars(limit),
            period_label(period as i32)
        )))
    }
    .await;
    page.then(&format!("/orgs/{}/budgets", encode(&org)), outcome)
}
