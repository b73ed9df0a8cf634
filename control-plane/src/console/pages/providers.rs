//! Providers and their keys: add a key (the value never comes back), rotate, revoke, and test
//! it against the provider, with the provider's own answer and the next move.

use axum::extract::Path;
use axum::response::Response;
use serde::Deserialize;
use sluice_proto::admin::v1 as pb;
use sluice_proto::common::v1 as common;

use super::super::errors::{KeyTestShown, health_label};
use super::super::html::{Markup, html, markup, utc};
use super::super::layout::{self, Section, csrf_field, empty, encode};
use super::super::request::{Failure, Page, Posted};
use super::super::sessions::Flash;
use super::{FormSecret, PROVIDER_TYPES, guarded, invalid, optional_number, provider_type_label};

pub async fn page(page: Page, Path(org): Path<String>) -> Response {
    let content = render(&page, &org).await;
    layout::page(&page, Some(&org), Section::Providers, "Providers", content)
}

async fn render(page: &Page, org: &str) -> Result<Markup, Failure> {
    let providers = super::lists::providers(page, org).await?;
    let keys = page
        .answer(
            page.admin()
                .list_provider_keys(page.call(pb::ListProviderKeysRequest {
                    organization: org.to_owned(),
                    provider: String::new(),
                }))
                .await,
        )?
        .provider_keys;
    let mut body = Markup::new();
    if providers.is_empty() {
        body.push(&empty(
            "No providers yet.",
            "Add the first one below: where Sluice sends this organisation's requests (OpenAI, \
             Anthropic, Google, Azure OpenAI, vLLM or any OpenAI-compatible server).",
        ));
    }
    for provider in &providers {
        let own: Vec<&pb::ProviderKey> = keys
            .iter()
            .filter(|key| key.provider == provider.name)
            .collect();
        body.push(&provider_card(page, org, provider, &own));
    }
    if page.can_write() {
        body.push(&create_form(page, org));
    }
    Ok(body)
}

fn provider_card(
    page: &Page,
    org: &str,
    provider: &pb::Provider,
    keys: &[&pb::ProviderKey],
) -> Markup {
    let base = format!("/orgs/{}/providers/{}", encode(org), encode(&provider.name));
    let active = if provider.active {
        markup!("<span class=\"badge good\">Active</span>")
    } else {
        markup!("<span class=\"badge warn\">Inactive</span>")
    };
    let mut card = markup!(
        "<section class=\"card\" id=\"provider-{}\" aria-labelledby=\"provider-{}-name\">\
         <div class=\"card-head\"><h2 id=\"provider-{}-name\">{}</h2>{}\
         <span class=\"meta\">{} · {} · timeout {} ms</span></div>",
        provider.name,
        provider.name,
        provider.name,
        provider.name,
        active,
        provider_type_label(provider.r#type),
        provider.base_url,
        provider.timeout_ms,
    );
    if page.can_write() {
        html!(
            card,
            "<form method=\"post\" action=\"{}/active\" class=\"inline\">{}\
             <input type=\"hidden\" name=\"active\" value=\"{}\">\
             <button type=\"submit\" class=\"secondary\">{}</button></form>",
            base,
            csrf_field(page),
            if provider.active { "false" } else { "true" },
            if provider.active {
                "Deactivate"
            } else {
                "Activate"
            },
        );
    }
    if keys.is_empty() {
        card.push(&empty(
            "No keys on this provider.",
            "Add the provider's API key below: it is encrypted at once and never shown again.",
        ));
    } else {
        let mut rows = Markup::new();
        for key in keys {
            rows.push(&key_row(page, &base, key));
        }
        html!(
            card,
            "<h3>Keys</h3><div class=\"table-wrap\"><table><thead><tr>\
             <th scope=\"col\">Name</th><th scope=\"col\">Last four</th>\
             <th scope=\"col\">Fingerprint</th><th scope=\"col\">State</th>\
             <th scope=\"col\">Health</th>{}</tr></thead><tbody>{}</tbody></table></div>",
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
            "<form method=\"post\" action=\"{}/keys\" class=\"row\" autocomplete=\"off\">{}\
             <label>Key name<input name=\"name\" required pattern=\"[A-Za-z0-9._-]+\" \
             maxlength=\"63\"></label>\
             <label>API key<input type=\"password\" name=\"secret\" required \
             autocomplete=\"new-password\"></label>\
             <button type=\"submit\">Add key</button></form>",
            base,
            csrf_field(page),
        );
    }
    html!(card, "</section>");
    card
}

fn key_row(page: &Page, base: &str, key: &pb::ProviderKey) -> Markup {
    let state = match common::ProviderKeyState::try_from(key.state) {
        Ok(common::ProviderKeyState::Active) => "active",
        Ok(common::ProviderKeyState::Retiring) => "retiring",
        Ok(common::ProviderKeyState::Revoked) => "revoked",
        _ => "unknown",
    };
    let health = health_label(key.health);
    let health_class = match common::ProviderKeyHealth::try_from(key.health) {
        Ok(common::ProviderKeyHealth::Valid) => "good",
        Ok(common::ProviderKeyHealth::Unknown | common::ProviderKeyHealth::Unspecified) => "mock",
        _ => "bad",
    };
    let learned = match pb::HealthSource::try_from(key.health_source) {
        Ok(pb::HealthSource::KeyTest) => {
            markup!("by a key test, {}", utc(key.health_learned_at_us))
        }
        Ok(pb::HealthSource::Traffic) => {
            markup!("from live traffic, {}", utc(key.health_learned_at_us))
        }
        _ => markup!("never checked"),
    };
    let key_base = format!("{base}/keys/{}", encode(&key.name));
    let actions = if !page.can_write() {
        Markup::new()
    } else if state == "revoked" {
        markup!("<td></td>")
    } else {
        markup!(
            "<td><form method=\"post\" action=\"{}/test\" class=\"row\">{}\
             <label>Model (optional)<input name=\"model\" size=\"14\"></label>\
             <button type=\"submit\" class=\"secondary\">Test key</button></form>\
             <form method=\"post\" action=\"{}/rotate\" class=\"row\" autocomplete=\"off\">{}\
             <label>New key name<input name=\"new_name\" required size=\"10\"></label>\
             <label>New API key<input type=\"password\" name=\"new_secret\" required \
             autocomplete=\"new-password\" size=\"12\"></label>\
             <button type=\"submit\" class=\"secondary\">Rotate</button></form>\
             <form method=\"post\" action=\"{}/revoke\" class=\"row\">{}\
             <button type=\"submit\" class=\"danger\">Revoke</button></form></td>",
            key_base,
            csrf_field(page),
            key_base,
            csrf_field(page),
            key_base,
            csrf_field(page),
        )
    };
    markup!(
        "<tr id=\"key-{}\"><td>{}</td><td><code>…{}</code></td><td><code>{}</code></td>\
         <td>{}</td><td><span class=\"badge {}\">{}</span><br><span class=\"meta\">{}</span>\
         </td>{}</tr>",
        key.name,
        key.name,
        key.last_four,
        key.fingerprint,
        state,
        health_class,
        health,
        learned,
        actions
    )
}

fn create_form(page: &Page, org: &str) -> Markup {
    let mut options = Markup::new();
    for (_, value, label) in PROVIDER_TYPES {
        html!(options, "<option value=\"{}\">{}</option>", value, label);
    }
    markup!(
        "<h2>Add a provider</h2><form method=\"post\" action=\"/orgs/{}/providers\" \
         class=\"stack\">{}<label>Name<input name=\"name\" required \
         pattern=\"[A-Za-z0-9._-]+\" maxlength=\"63\"></label>\
         <label>Type<select name=\"kind\">{}</select></label>\
         <label>Base URL<input name=\"base_url\" type=\"url\" required \
         placeholder=\"https://api.openai.com/v1\"></label>\
         <label>Timeout (ms, empty: 60 000)<input name=\"timeout_ms\" inputmode=\"numeric\">\
         </label><label><span><input type=\"checkbox\" name=\"allow_private_network\" \
         value=\"true\"> Allow a private or loopback address (a self-hosted server)</span>\
         </label><button type=\"submit\">Add provider</button></form>",
        encode(org),
        csrf_field(page),
        options
    )
}

#[derive(Deserialize)]
pub struct NewProvider {
    csrf: String,
    name: String,
    kind: String,
    base_url: String,
    #[serde(default)]
    timeout_ms: String,
    #[serde(default)]
    allow_private_network: Option<String>,
}

#[derive(Deserialize)]
pub struct Activation {
    csrf: String,
    active: String,
}

#[derive(Deserialize)]
pub struct NewKey {
    csrf: String,
    name: String,
    secret: FormSecret,
}

#[derive(Deserialize)]
pub struct KeyAction {
    csrf: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    new_name: String,
    new_secret: Option<FormSecret>,
}

guarded!(NewProvider, Activation, NewKey, KeyAction);

fn back(org: &str) -> String {
    format!("/orgs/{}/providers", encode(org))
}

pub async fn create(Path(org): Path<String>, posted: Posted<NewProvider>) -> Response {
    let Posted { page, form } = posted;
    let outcome = async {
        let kind = PROVIDER_TYPES
            .iter()
            .find(|(_, value, _)| *value == form.kind)
            .map(|(kind, _, _)| *kind as i32)
            .ok_or_else(|| {
                invalid(
                    &page,
                    format!("kind: '{}' is not a provider type", form.kind),
                )
            })?;
        let timeout_ms = optional_number::<u32>("timeout_ms", &form.timeout_ms)
            .map_err(|message| invalid(&page, message))?
            .unwrap_or(0);
        page.answer(
            page.admin()
                .create_provider(page.call(pb::CreateProviderRequest {
                    organization: org.clone(),
                    name: form.name.trim().to_owned(),
                    r#type: kind,
                    base_url: form.base_url.trim().to_owned(),
                    timeout_ms,
                    allow_private_network: form.allow_private_network.is_some(),
                    ..Default::default()
                }))
                .await,
        )?;
        Ok(Flash::Done(format!(
            "Provider '{}' added.",
            form.name.trim()
        )))
    }
    .await;
    page.then(&back(&org), outcome)
}

pub async fn set_active(
    Path((org, provider)): Path<(String, String)>,
    posted: Posted<Activation>,
) -> Response {
    let Posted { page, form } = posted;
    let active = form.active == "true";
    let outcome = page
        .answer(
            page.admin()
                .update_provider(page.call(pb::UpdateProviderRequest {
                    organization: org.clone(),
                    name: provider.clone(),
                    active: Some(active),
                    ..Default::default()
                }))
                .await,
        )
        .map(|_| {
            Flash::Done(format!(
                "Provider '{provider}' is now {}.",
                if active { "active" } else { "inactive" }
            ))
        });
    page.then(&back(&org), outcome)
}

pub async fn add_key(
    Path((org, provider)): Path<(String, String)>,
    posted: Posted<NewKey>,
) -> Response {
    let Posted { page, form } = posted;
    let outcome = page
        .answer(
            page.admin()
                .create_provider_key(page.call(pb::CreateProviderKeyRequest {
                    organization: org.clone(),
                    provider: provider.clone(),
                    name: form.name.trim().to_owned(),
                    secret: form.secret.0.expose().trim().to_owned(),
                }))
                .await,
        )
        .map(|created| {
            let key = created.provider_key.unwrap_or_default();
            Flash::Done(format!(
                "Key '{}' added to '{provider}' (ending …{}); it is encrypted and will not be \
                 shown again. Test it next.",
                key.name, key.last_four
            ))
        });
    page.then(&back(&org), outcome)
}

pub async fn key_action(
    Path((org, provider, key, action)): Path<(String, String, String, String)>,
    posted: Posted<KeyAction>,
) -> Response {
    let Posted { page, form } = posted;
    let outcome = match action.as_str() {
        "test" => page
            .answer(
                page.admin()
                    .test_provider_key(page.call(pb::TestProviderKeyRequest {
                        organization: org.clone(),
                        provider: provider.clone(),
                        name: key.clone(),
                        model: form.model.trim().to_owned(),
                    }))
                    .await,
            )
            .map(|tested| Flash::KeyTest(KeyTestShown::from_response(key.clone(), &tested))),
        "rotate" => {
            let secret = form
                .new_secret
                .as_ref()
                .map(|secret| secret.0.expose().trim().to_owned())
                .unwrap_or_default();
            page.answer(
                page.admin()
                    .rotate_provider_key(page.call(pb::RotateProviderKeyRequest {
                        organization: org.clone(),
                        provider: provider.clone(),
                        name: key.clone(),
                        new_name: form.new_name.trim().to_owned(),
                        new_secret: secret,
                    }))
                    .await,
            )
            .map(|_| {
                Flash::Done(format!(
                    "Rotated: '{}' is the active key; '{key}' is retiring until you revoke it.",
                    form.new_name.trim()
                ))
            })
        }
        "revoke" => page
            .answer(
                page.admin()
                    .revoke_provider_key(page.call(pb::RevokeProviderKeyRequest {
                        organization: org.clone(),
                        provider: provider.clone(),
                        name: key.clone(),
                        force: false,
                    }))
                    .await,
            )
            .map(|_| Flash::Done(format!("Key '{key}' revoked."))),
        other => Err(invalid(&page, format!("no key action '{other}'"))),
    };
    page.then(&back(&org), outcome)
}
