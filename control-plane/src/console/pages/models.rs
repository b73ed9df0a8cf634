//! Models: public names, their deployments and prices; create one; sync prices from the
//! catalog after a dry run shows what would change.

use axum::extract::Path;
use axum::response::Response;
use serde::Deserialize;
use sluice_proto::admin::v1 as pb;

use super::super::html::{Markup, dollars, html, markup};
use super::super::layout::{self, Section, csrf_field, empty, encode};
use super::super::request::{Failure, Page, Posted};
use super::super::sessions::Flash;
use super::{guarded, invalid, micros_from_dollars, optional_number};

pub async fn page(page: Page, Path(org): Path<String>) -> Response {
    let content = render(&page, &org).await;
    layout::page(&page, Some(&org), Section::Models, "Models", content)
}

async fn render(page: &Page, org: &str) -> Result<Markup, Failure> {
    let models = super::lists::models(page, org).await?;
    let mut body = Markup::new();
    if models.is_empty() {
        body.push(&empty(
            "No models yet.",
            "Create one below: the public name applications ask for, and the provider and \
             upstream model that serve it.",
        ));
    } else {
        let providers = if page.can_write() {
            super::lists::providers(page, org).await?
        } else {
            Vec::new()
        };
        let mut rows = Markup::new();
        for model in &models {
            rows.push(&model_row(page, org, model, &providers));
        }
        html!(
            body,
            "<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Public name</th>\
             <th scope=\"col\">Deployments (provider → upstream model, weight, priority)</th>\
             <th scope=\"col\" class=\"num\">Input / Mtok</th>\
             <th scope=\"col\" class=\"num\">Cached input / Mtok</th>\
             <th scope=\"col\" class=\"num\">Output / Mtok</th><th scope=\"col\">Prices</th>\
             <th scope=\"col\" class=\"num\">Context window</th></tr></thead><tbody>{}\
             </tbody></table></div>",
            rows
        );
    }
    if page.can_write() {
        let providers = super::lists::providers(page, org).await?;
        body.push(&create_form(page, org, &providers));
        html!(
            body,
            "<h2>Prices from the catalog</h2><form method=\"post\" \
             action=\"/orgs/{}/models/pricing\" class=\"row\">{}\
             <input type=\"hidden\" name=\"apply\" value=\"false\">\
             <button type=\"submit\" class=\"secondary\">Check the catalog (dry run)</button>\
             </form>",
            encode(org),
            csrf_field(page)
        );
    }
    Ok(body)
}

fn model_row(page: &Page, org: &str, model: &pb::Model, providers: &[pb::Provider]) -> Markup {
    let mut deployments = Markup::new();
    for deployment in &model.deployments {
        html!(
            deployments,
            "<li>{} → <code>{}</code>, weight {}, priority {}</li>",
            deployment.provider,
            deployment.upstream_model,
            deployment.weight.max(1),
            deployment.priority
        );
    }
    let source = match pb::PriceSource::try_from(model.price_source) {
        Ok(pb::PriceSource::Catalog) => markup!("catalog {}", model.catalog_id),
        Ok(pb::PriceSource::Operator) => markup!("operator-set"),
        _ => markup!("unset"),
    };
    if page.can_write() && !providers.is_empty() {
        let options = provider_options(providers);
        html!(
            deployments,
            "<li><form method=\"post\" action=\"/orgs/{}/models/{}/deployments\" \
             class=\"row\">{}<label>Provider<select name=\"provider\">{}</select></label>\
             <label>Upstream model<input name=\"upstream_model\" required size=\"14\"></label>\
             <label>Weight<input name=\"weight\" inputmode=\"numeric\" size=\"3\"></label>\
             <label>Priority<input name=\"priority\" inputmode=\"numeric\" size=\"3\"></label>\
             <button type=\"submit\" class=\"secondary\">Add deployment</button></form></li>",
            encode(org),
            encode(&model.name),
            csrf_field(page),
            options
        );
    }
    markup!(
        "<tr id=\"model-{}\"><td>{}</td><td><ul class=\"blockers\">{}</ul></td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td>{}</td><td class=\"num\">{}</td></tr>",
        model.name,
        model.name,
        deployments,
        dollars(model.input_price_micros_per_mtok),
        model
            .cached_input_price_micros_per_mtok
            .map_or_else(|| "as input".to_owned(), dollars),
        dollars(model.output_price_micros_per_mtok),
        source,
        if model.context_window == 0 {
            "unknown".to_owned()
        } else {
            model.context_window.to_string()
        }
    )
}

fn provider_options(providers: &[pb::Provider]) -> Markup {
    let mut options = Markup::new();
    for provider in providers {
        html!(
            options,
            "<option value=\"{}\">{}</option>",
            provider.name,
            provider.name
        );
    }
    options
}

fn create_form(page: &Page, org: &str, providers: &[pb::Provider]) -> Markup {
    if providers.is_empty() {
        return empty(
            "A model needs a provider to serve it.",
            "Add a provider first (Providers).",
        );
    }
    let options = provider_options(providers);
    markup!(
        "<h2>Create a model</h2><form method=\"post\" action=\"/orgs/{}/models\" \
         class=\"stack\">{}<label>Public name<input name=\"name\" required maxlength=\"200\">\
         </label><label>Provider<select name=\"provider\">{}</select></label>\
         <label>Upstream model<input name=\"upstream_model\" required \
         placeholder=\"gpt-4o-mini-2024-07-18\"></label>\
         <label>Input price, $ per million tokens (empty: the catalog's)\
         <input name=\"input_price\" inputmode=\"decimal\"></label>\
         <label>Output price, $ per million tokens (empty: the catalog's)\
         <input name=\"output_price\" inputmode=\"decimal\"></label>\
         <label>Context window, tokens (empty: the catalog's)\
         <input name=\"context_window\" inputmode=\"numeric\"></label>\
         <button type=\"submit\">Create model</button></form>",
        encode(org),
        csrf_field(page),
        options
    )
}

#[derive(Deserialize)]
pub struct NewModel {
    csrf: String,
    name: String,
    provider: String,
    upstream_model: String,
    #[serde(default)]
    input_price: String,
    #[serde(default)]
    output_price: String,
    #[serde(default)]
    context_window: String,
}

#[derive(Deserialize)]
pub struct Sync {
    csrf: String,
    apply: String,
}

#[derive(Deserialize)]
pub struct NewDeployment {
    csrf: String,
    provider: String,
    upstream_model: String,
    #[serde(default)]
    weight: String,
    #[serde(default)]
    priority: String,
}

guarded!(NewModel, Sync, NewDeployment);

/// Adds a deployment beside the model's others (a fallback, or a share of its traffic).
pub async fn add_deployment(
    Path((org, model)): Path<(String, String)>,
    posted: Posted<NewDeployment>,
) -> Response {
    let Posted { page, form } = posted;
    let outcome = async {
        let number = |field: &str, text: &str| {
            optional_number::<u32>(field, text).map_err(|message| invalid(&page, message))
        };
        let weight = number("weight", &form.weight)?.unwrap_or(1);
        let priority = number("priority", &form.priority)?.unwrap_or(0);
        // The API replaces the list whole: the model's own, then the new one.
        let current = page
            .answer(
                page.admin()
                    .get_model(page.call(pb::GetModelRequest {
                        organization: org.clone(),
                        name: model.clone(),
                    }))
                    .await,
            )?
            .model
            .unwrap_or_default();
        let mut deployments = current.deployments;
        deployments.push(pb::Deployment {
            provider: form.provider.clone(),
            upstream_model: form.upstream_model.trim().to_owned(),
            weight,
            priority,
        });
        page.answer(
            page.admin()
                .update_model(page.call(pb::UpdateModelRequest {
                    organization: org.clone(),
                    name: model.clone(),
                    deployments,
                    replace_deployments: true,
                    ..Default::default()
                }))
                .await,
        )?;
        Ok(Flash::Done(format!(
            "'{model}' is also served by {} as '{}'.",
            form.provider,
            form.upstream_model.trim()
        )))
    }
    .await;
    page.then(&format!("/orgs/{}/models", encode(&org)), outcome)
}

pub async fn create(Path(org): Path<String>, posted: Posted<NewModel>) -> Response {
    let Posted { page, form } = posted;
    let outcome = async {
        let price = |field: &str, text: &str| {
            micros_from_dollars(field, text).map_err(|message| invalid(&page, message))
        };
        let input = price("input price", &form.input_price)?;
        let output = price("output price", &form.output_price)?;
        let context_window = optional_number::<u32>("context window", &form.context_window)
            .map_err(|message| invalid(&page, message))?;
        page.answer(
            page.admin()
                .create_model(page.call(pb::CreateModelRequest {
                    organization: org.clone(),
                    name: form.name.trim().to_owned(),
                    deployments: vec![pb::Deployment {
                        provider: form.provider.clone(),
                        upstream_model: form.upstream_model.trim().to_owned(),
                        weight: 1,
                        priority: 0,
                    }],
                    input_price_micros_per_mtok: input,
                    output_price_micros_per_mtok: output,
                    context_window,
                    ..Default::default()
                }))
                .await,
        )?;
        Ok(Flash::Done(format!(
            "Model '{}' created. Make it a project's default model under Projects.",
            form.name.trim()
        )))
    }
    .await;
    page.then(&format!("/orgs/{}/models", encode(&org)), outcome)
}

/// A dry run shows the diff with a button to apply it; applying returns to the models.
pub async fn sync_pricing(Path(org): Path<String>, posted: Posted<Sync>) -> Response {
    let Posted { page, form } = posted;
    let apply = form.apply == "true";
    let synced = page.answer(
        page.admin()
            .sync_model_pricing(page.call(pb::SyncModelPricingRequest {
                organization: org.clone(),
                dry_run: !apply,
                ..Default::default()
            }))
            .await,
    );
    if apply {
        let outcome = synced.map(|response| {
            let applied = response
                .changes
                .iter()
                .filter(|change| change.skipped.is_empty())
                .count();
            Flash::Done(format!(
                "Catalog of {} applied to {applied} model(s).",
                response.catalog_as_of
            ))
        });
        return page.then(&format!("/orgs/{}/models", encode(&org)), outcome);
    }
    let content = synced.map(|response| diff(&page, &org, &response));
    layout::page(
        &page,
        Some(&org),
        Section::Models,
        "Prices from the catalog: what would change",
        content,
    )
}

fn diff(page: &Page, org: &str, response: &pb::SyncModelPricingResponse) -> Markup {
    let mut rows = Markup::new();
    for change in &response.changes {
        html!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            change.model,
            change.catalog_id,
            dollars(change.input_price_micros_per_mtok),
            dollars(change.output_price_micros_per_mtok),
            change.context_window,
            if change.skipped.is_empty() {
                "will be applied".to_owned()
            } else {
                format!("kept: {}", change.skipped)
            }
        );
    }
    let mut body = markup!(
        "<p>The catalog dated <strong>{}</strong> says this of the organisation's models. \
         Nothing has changed yet.</p>",
        response.catalog_as_of
    );
    if response.changes.is_empty() {
        body.push(&empty(
            "The catalog knows none of these models.",
            "Set their prices by hand when creating them.",
        ));
    } else {
        html!(
            body,
            "<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Model</th>\
             <th scope=\"col\">Catalog entry</th><th scope=\"col\" class=\"num\">Input / Mtok</th>\
             <th scope=\"col\" class=\"num\">Output / Mtok</th>\
             <th scope=\"col\" class=\"num\">Context window</th><th scope=\"col\">Outcome</th>\
             </tr></thead><tbody>{}</tbody></table></div>",
            rows
        );
    }
    if !response.unknown.is_empty() {
        html!(
            body,
            "<p class=\"meta\">Not in the catalog: {}</p>",
            response.unknown.join(", ")
        );
    }
    html!(
        body,
        "<form method=\"post\" action=\"/orgs/{}/models/pricing\" class=\"row\">{}\
         <input type=\"hidden\" name=\"apply\" value=\"true\">\
         <button type=\"submit\">Apply these prices</button>\
         <a href=\"/orgs/{}/models\">Cancel</a></form>",
        encode(org),
        csrf_field(page),
        encode(org)
    );
    body
}
