//! For global tokens: the organisations to choose from, and a new one.

use axum::response::Response;
use serde::Deserialize;
use sluice_proto::admin::v1 as pb;

use super::super::html::{Markup, html};
use super::super::layout::{self, Section, csrf_field, empty, encode};
use super::super::request::{Failure, Page, Posted};
use super::super::sessions::Flash;
use super::guarded;

pub async fn list(page: Page) -> Response {
    let content = render(&page).await;
    layout::page(
        &page,
        None,
        Section::Organizations,
        "Organisations",
        content,
    )
}

async fn render(page: &Page) -> Result<Markup, Failure> {
    let organizations = page
        .answer(
            page.admin()
                .list_organizations(page.call(pb::ListOrganizationsRequest::default()))
                .await,
        )?
        .organizations;
    let mut body = Markup::new();
    if organizations.is_empty() {
        body.push(&empty(
            "No organisations yet.",
            "Create the first one below; providers, models and projects live inside it.",
        ));
    } else {
        let mut list = Markup::new();
        for organization in &organizations {
            html!(
                list,
                "<li><a href=\"/orgs/{}\">{}</a> <span class=\"meta\">{}</span></li>",
                encode(&organization.name),
                organization.name,
                organization.display_name
            );
        }
        html!(body, "<ul class=\"orgs\">{}</ul>", list);
    }
    if page.can_write() {
        html!(
            body,
            "<h2>Create an organisation</h2><form method=\"post\" action=\"/orgs\" \
             class=\"stack\">{}<label>Name<input name=\"name\" required \
             pattern=\"[A-Za-z0-9._-]+\" maxlength=\"63\"></label>\
             <label>Display name<input name=\"display_name\" maxlength=\"200\"></label>\
             <button type=\"submit\">Create organisation</button></form>",
            csrf_field(page)
        );
    }
    Ok(body)
}

#[derive(Deserialize)]
pub struct NewOrganization {
    csrf: String,
    name: String,
    #[serde(default)]
    display_name: String,
}

guarded!(NewOrganization);

pub async fn create(posted: Posted<NewOrganization>) -> Response {
    let Posted { page, form } = posted;
    let name = form.name.trim().to_owned();
    let outcome = page
        .answer(
            page.admin()
                .create_organization(page.call(pb::CreateOrganizationRequest {
                    name: name.clone(),
                    display_name: form.display_name.trim().to_owned(),
                }))
                .await,
        )
        .map(|_| Flash::Done(format!("Organisation '{name}' created.")));
    let to = if outcome.is_ok() {
        format!("/orgs/{}", encode(&name))
    } else {
        "/orgs".to_owned()
    };
    page.then(&to, outcome)
}
