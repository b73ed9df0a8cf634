//! Execution readiness: each project's posture, default model, and what blocks LIVE.

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use sluice_proto::admin::v1 as pb;

use super::super::html::{Markup, html, markup};
use super::super::layout::{self, Section, empty, encode};
use super::super::request::{Failure, Page};
use super::posture_label;

/// Where a signed-in operator starts: their organisation, or the list of them.
pub async fn home(page: Page) -> Response {
    match &page.session.caller.organization {
        Some(org) => Redirect::to(&format!("/orgs/{}", encode(org))).into_response(),
        None => Redirect::to("/orgs").into_response(),
    }
}

pub async fn page(page: Page, Path(org): Path<String>) -> Response {
    let content = render(&page, &org).await;
    layout::page(
        &page,
        Some(&org),
        Section::Overview,
        "Execution readiness",
        content,
    )
}

async fn render(page: &Page, org: &str) -> Result<Markup, Failure> {
    let projects = super::lists::projects(page, org).await?;
    let mut body = markup!(
        "<p>Every project starts in <strong>MOCK</strong>: synthetic answers, no provider \
         call, no cost. <strong>LIVE</strong> sends real requests the provider account bills; \
         a project goes LIVE only when an operator switches it (Projects), and only when \
         nothing below blocks it.</p>"
    );
    if projects.is_empty() {
        body.push(&empty(
            "No projects yet.",
            "Start with Providers: add a provider and its key, then a model (Models), then a \
             project (Projects).",
        ));
        return Ok(body);
    }
    let mut rows = Markup::new();
    for project in &projects {
        let readiness = page.answer(
            page.admin()
                .get_project_readiness(page.call(pb::GetProjectReadinessRequest {
                    organization: org.to_owned(),
                    name: project.name.clone(),
                }))
                .await,
        )?;
        let posture = posture_label(project.posture);
        let blockers = if readiness.blockers.is_empty() {
            let mut ready = markup!("<span class=\"badge good\">ready for LIVE</span>");
            if page.can_write() && posture == "MOCK" {
                html!(
                    ready,
                    " <a class=\"posture-switch\" href=\"/orgs/{}/projects/{}/posture?to=live\">\
                     Switch to LIVE…</a>",
                    encode(org),
                    encode(&project.name)
                );
            }
            ready
        } else {
            let mut list = Markup::new();
            for blocker in &readiness.blockers {
                html!(
                    list,
                    "<li><span class=\"blocker\" data-code=\"{}\">{}</span> \
                     <br><span class=\"next\">Fix: {}</span></li>",
                    blocker.code,
                    blocker.message,
                    blocker.fix
                );
            }
            markup!("<ul class=\"blockers\">{}</ul>", list)
        };
        html!(
            rows,
            "<tr><td><a href=\"/orgs/{}/projects#project-{}\">{}</a></td>\
             <td><span class=\"badge {}\">{}</span></td><td>{}</td><td>{}</td></tr>",
            encode(org),
            project.name,
            project.name,
            posture.to_ascii_lowercase(),
            posture,
            if project.default_model.is_empty() {
                "none".to_owned()
            } else {
                project.default_model.clone()
            },
            blockers
        );
    }
    html!(
        body,
        "<div class=\"table-wrap\"><table><caption class=\"meta\">Projects of {}</caption>\
         <thead><tr><th scope=\"col\">Project</th><th scope=\"col\">Posture</th>\
         <th scope=\"col\">Default model</th><th scope=\"col\">What blocks LIVE</th></tr>\
         </thead><tbody>{}</tbody></table></div>",
        org,
        rows
    );
    Ok(body)
}
