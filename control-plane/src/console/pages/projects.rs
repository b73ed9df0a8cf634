//! Projects: posture (MOCK or LIVE, switched deliberately and audited), default model, and
//! virtual keys (a new key is shown once).

use axum::extract::{Path, Query};
use axum::response::Response;
use serde::Deserialize;
use sluice_proto::admin::v1 as pb;
use sluice_proto::common::v1 as common;
use sluice_shared::secret::SecretString;

use super::super::html::{Markup, html, markup, utc};
use super::super::layout::{self, Section, csrf_field, empty, encode};
use super::super::request::{Failure, Page, Posted};
use super::super::sessions::Flash;
use super::{Button, guarded, invalid, posture_label};

pub async fn page(page: Page, Path(org): Path<String>) -> Response {
    let content = render(&page, &org).await;
    layout::page(&page, Some(&org), Section::Projects, "Projects", content)
}

async fn render(page: &Page, org: &str) -> Result<Markup, Failure> {
    let projects = super::lists::projects(page, org).await?;
    let models = super::lists::models(page, org).await?;
    let mut body = Markup::new();
    if projects.is_empty() {
        body.push(&empty(
            "No projects yet.",
            "Create one below; it starts in MOCK, so nothing it does costs money until you \
             switch it to LIVE.",
        ));
    }
    for project in &projects {
        let keys = page
            .answer(
                page.admin()
                    .list_virtual_keys(page.call(pb::ListVirtualKeysRequest {
                        organization: org.to_owned(),
                        project: project.name.clone(),
                        prefix: String::new(),
                    }))
                    .await,
            )?
            .virtual_keys;
        body.push(&project_card(page, org, project, &models, &keys));
    }
    if page.can_write() {
        html!(
            body,
            "<h2>Create a project</h2><form method=\"post\" action=\"/orgs/{}/projects\" \
             class=\"stack\">{}<label>Name<input name=\"name\" required \
             pattern=\"[A-Za-z0-9._-]+\" maxlength=\"63\"></label>\
             <label>Display name<input name=\"display_name\" maxlength=\"200\"></label>\
             <button type=\"submit\">Create project</button></form>",
            encode(org),
            csrf_field(page)
        );
    }
    Ok(body)
}

fn project_card(
    page: &Page,
    org: &str,
    project: &pb::Project,
    models: &[pb::Model],
    keys: &[pb::VirtualKey],
) -> Markup {
    let base = format!("/orgs/{}/projects/{}", encode(org), encode(&project.name));
    let posture = posture_label(project.posture);
    let mut card = markup!(
        "<section class=\"card\" id=\"project-{}\" aria-labelledby=\"project-{}-name\">\
         <div class=\"card-head\"><h2 id=\"project-{}-name\">{}</h2>\
         <span class=\"badge {}\" data-posture=\"{}\">{}</span><span class=\"meta\">{}</span>\
         </div>",
        project.name,
        project.name,
        project.name,
        project.name,
        posture.to_ascii_lowercase(),
        posture,
        posture,
        project.display_name,
    );
    if page.can_write() {
        let (to, label) = if posture == "LIVE" {
            ("mock", "Switch to MOCK…")
        } else {
            ("live", "Switch to LIVE…")
        };
        html!(
            card,
            "<p><a class=\"posture-switch\" href=\"{}/posture?to={}\">{}</a></p>",
            base,
            to,
            label
        );
        let mut options = markup!("<option value=\"\">none</option>");
        for model in models {
            if model.name == project.default_model {
                html!(
                    options,
                    "<option value=\"{}\" selected>{}</option>",
                    model.name,
                    model.name
                );
            } else {
                html!(
                    options,
                    "<option value=\"{}\">{}</option>",
                    model.name,
                    model.name
                );
            }
        }
        html!(
            card,
            "<form method=\"post\" action=\"{}/default-model\" class=\"row\">{}\
             <label>Default model<select name=\"model\">{}</select></label>\
             <button type=\"submit\" class=\"secondary\">Set default model</button></form>",
            base,
            csrf_field(page),
            options
        );
    } else {
        html!(
            card,
            "<p>Default model: {}</p>",
            if project.default_model.is_empty() {
                "none".to_owned()
            } else {
                project.default_model.clone()
            }
        );
    }
    html!(card, "<h3>Virtual keys</h3>");
    if keys.is_empty() {
        card.push(&empty(
            "No virtual keys.",
            "Create one for each application: it is what the application sends as its API key.",
        ));
    } else {
        let mut rows = Markup::new();
        for key in keys {
            let revoked = key.revoked_at_us != 0;
            let action = if !page.can_write() {
                Markup::new()
            } else if revoked {
                markup!("<td></td>")
            } else {
                markup!(
                    "<td><form method=\"post\" action=\"{}/keys/{}/revoke\" class=\"inline\">{}\
                     <button type=\"submit\" class=\"danger\">Revoke</button></form></td>",
                    base,
                    encode(&key.name),
                    csrf_field(page)
                )
            };
            html!(
                rows,
                "<tr><td>{}</td><td><code>{}…</code></td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                key.name,
                key.prefix,
                if key.allowed_models.is_empty() {
                    "every model".to_owned()
                } else {
                    key.allowed_models.join(", ")
                },
                if key.expires_at_us == 0 {
                    "never".to_owned()
                } else {
                    utc(key.expires_at_us)
                },
                if revoked {
                    markup!(
                        "<span class=\"badge bad\">revoked {}</span>",
                        utc(key.revoked_at_us)
                    )
                } else {
                    markup!("<span class=\"badge good\">active</span>")
                },
                action
            );
        }
        html!(
            card,
            "<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Name</th>\
             <th scope=\"col\">Prefix</th><th scope=\"col\">Models</th>\
             <th scope=\"col\">Expires</th><th scope=\"col\">State</th>{}</tr></thead>\
             <tbody>{}</tbody></table></div>",
            if page.can_write() {
                markup!("<th scope=\"col\">Actions</th>")
            } else {
                Markup::new()
            },
            rows
        );
    }
    if page.can_write() {
        html!(
            card,
            "<form method=\"post\" action=\"{}/keys\" class=\"row\">{}\
             <label>New key name<input name=\"name\" required pattern=\"[A-Za-z0-9._-]+\" \
             maxlength=\"63\"></label><button type=\"submit\">Create virtual key</button></form>",
            base,
            csrf_field(page)
        );
    }
    html!(card, "</section>");
    card
}

#[derive(Deserialize)]
pub struct To {
    to: String,
}

/// What switching means, before it happens.
pub async fn confirm_posture(
    page: Page,
    Path((org, project)): Path<(String, String)>,
    Query(to): Query<To>,
) -> Response {
    let content = async {
        if !page.can_write() {
            return Err(invalid(
                &page,
                "this session's token is read-only: it cannot switch posture".into(),
            ));
        }
        let readiness = page.answer(
            page.admin()
                .get_project_readiness(page.call(pb::GetProjectReadinessRequest {
                    organization: org.clone(),
                    name: project.clone(),
                }))
                .await,
        )?;
        let live = to.to == "live";
        let mut body = if live {
            markup!(
                "<div class=\"notice warn\"><p><strong>LIVE means real money.</strong> Requests \
                 to <strong>{}</strong> will reach the providers, and each provider account \
                 bills the usage; budgets and rate limits still apply. The switch is recorded \
                 in the audit log with your name.</p></div>",
                project
            )
        } else {
            markup!(
                "<p>MOCK answers every request of <strong>{}</strong> with synthetic content: no \
                 provider is called and nothing is billed. Applications keep working, on fake \
                 answers. The switch is recorded in the audit log.</p>",
                project
            )
        };
        if live && !readiness.blockers.is_empty() {
            let mut list = Markup::new();
            for blocker in &readiness.blockers {
                html!(
                    list,
                    "<li>{}<br><span class=\"next\">Fix: {}</span></li>",
                    blocker.message,
                    blocker.fix
                );
            }
            html!(
                body,
                "<div class=\"notice bad\" role=\"alert\"><p>LIVE will be refused until these \
                 are fixed:</p><ul class=\"blockers\">{}</ul></div>",
                list
            );
        }
        html!(
            body,
            "<form method=\"post\" action=\"/orgs/{}/projects/{}/posture\" class=\"row\">{}\
             <input type=\"hidden\" name=\"posture\" value=\"{}\">\
             <button type=\"submit\" class=\"{}\">Yes, switch {} to {}</button>\
             <a href=\"/orgs/{}/projects\">Cancel</a></form>",
            encode(&org),
            encode(&project),
            csrf_field(&page),
            to.to,
            if live { "danger" } else { "secondary" },
            project,
            if live { "LIVE" } else { "MOCK" },
            encode(&org)
        );
        Ok(body)
    }
    .await;
    layout::page(
        &page,
        Some(&org),
        Section::Projects,
        "Switch posture",
        content,
    )
}

#[derive(Deserialize)]
pub struct NewProject {
    csrf: String,
    name: String,
    #[serde(default)]
    display_name: String,
}

#[derive(Deserialize)]
pub struct Posture {
    csrf: String,
    posture: String,
}

#[derive(Deserialize)]
pub struct DefaultModel {
    csrf: String,
    model: String,
}

#[derive(Deserialize)]
pub struct NewKey {
    csrf: String,
    name: String,
}

guarded!(NewProject, Posture, DefaultModel, NewKey);

fn back(org: &str) -> String {
    format!("/orgs/{}/projects", encode(org))
}

pub async fn create(Path(org): Path<String>, posted: Posted<NewProject>) -> Response {
    let Posted { page, form } = posted;
    let outcome = page
        .answer(
            page.admin()
                .create_project(page.call(pb::CreateProjectRequest {
                    organization: org.clone(),
                    name: form.name.trim().to_owned(),
                    display_name: form.display_name.trim().to_owned(),
                    ..Default::default()
                }))
                .await,
        )
        .map(|_| Flash::Done(format!("Project '{}' created, in MOCK.", form.name.trim())));
    page.then(&back(&org), outcome)
}

pub async fn set_posture(
    Path((org, project)): Path<(String, String)>,
    posted: Posted<Posture>,
) -> Response {
    let Posted { page, form } = posted;
    let posture = match form.posture.as_str() {
        "live" => common::Posture::Live,
        _ => common::Posture::Mock,
    };
    let outcome = page
        .answer(
            page.admin()
                .set_project_posture(page.call(pb::SetProjectPostureRequest {
                    organization: org.clone(),
                    name: project.clone(),
                    posture: posture as i32,
                }))
                .await,
        )
        .map(|_| {
            Flash::Done(format!(
                "Project '{project}' is now {} (recorded in the audit log).",
                posture_label(posture as i32)
            ))
        });
    page.then(&back(&org), outcome)
}

pub async fn set_default_model(
    Path((org, project)): Path<(String, String)>,
    posted: Posted<DefaultModel>,
) -> Response {
    let Posted { page, form } = posted;
    let outcome = page
        .answer(
            page.admin()
                .update_project(page.call(pb::UpdateProjectRequest {
                    organization: org.clone(),
                    name: project.clone(),
                    default_model: Some(form.model.clone()),
                    ..Default::default()
                }))
                .await,
        )
        .map(|_| {
            Flash::Done(if form.model.is_empty() {
                format!("Project '{project}' has no default model now.")
            } else {
                format!("'{}' is the default model of '{project}'.", form.model)
            })
        });
    page.then(&back(&org), outcome)
}

pub async fn create_key(
    Path((org, project)): Path<(String, String)>,
    posted: Posted<NewKey>,
) -> Response {
    let Posted { page, form } = posted;
    let outcome = page
        .answer(
            page.admin()
                .create_virtual_key(page.call(pb::CreateVirtualKeyRequest {
                    organization: org.clone(),
                    project: project.clone(),
                    name: form.name.trim().to_owned(),
                    ..Default::default()
                }))
                .await,
        )
        .map(|created| Flash::Secret {
            what: format!("Virtual key '{}' of '{project}' created.", form.name.trim()),
            value: SecretString::new(created.key),
        });
    page.then(&back(&org), outcome)
}

pub async fn revoke_key(
    Path((org, project, key)): Path<(String, String, String)>,
    posted: Posted<Button>,
) -> Response {
    let page = posted.page;
    let outcome = page
        .answer(
            page.admin()
                .revoke_virtual_key(page.call(pb::RevokeVirtualKeyRequest {
                    organization: org.clone(),
                    project: project.clone(),
                    name: key.clone(),
                }))
                .await,
        )
        .map(|_| Flash::Done(format!("Virtual key '{key}' revoked.")));
    page.then(&back(&org), outcome)
}
