//! Signing in exchanges an admin or organisation token for a session; signing out ends it.

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sluice_shared::secret::SecretString;
use tonic::Code;

use super::super::Console;
use super::super::html::{Markup, html, markup};
use super::super::layout::bare;
use super::super::request::{Guarded, Posted, caller_of, cross_origin, session_cookie};
use super::FormSecret;

#[derive(Deserialize)]
pub struct Ended {
    ended: Option<String>,
}

pub async fn form(Query(ended): Query<Ended>) -> Response {
    let note = if ended.ended.is_some() {
        markup!(
            "<div class=\"notice warn\" role=\"status\"><p>Your session ended (signed out, \
             expired, or its token was revoked). Sign in again.</p></div>"
        )
    } else {
        Markup::new()
    };
    sign_in_page(StatusCode::OK, note)
}

fn sign_in_page(status: StatusCode, note: Markup) -> Response {
    let mut body = note;
    html!(
        body,
        "<p>Sign in with an admin token, or one limited to an organisation \
         (<code>sluicectl token create NAME --scope org-admin --org ORG</code>). The token \
         stays on the server for this session; the browser only holds a session cookie.</p>\
         <form method=\"post\" action=\"/sign-in\" class=\"stack\">\
         <label>Admin token<input type=\"password\" name=\"token\" autocomplete=\"off\" \
         required autofocus></label><button type=\"submit\">Sign in</button></form>"
    );
    bare(status, "Sign in to the Provider Vault", body)
}

#[derive(Deserialize)]
pub struct SignIn {
    token: FormSecret,
}

pub async fn submit(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    // A forged sign-in would put the victim in the forger's session.
    if cross_origin(&headers) {
        return (StatusCode::FORBIDDEN, "sign in from the console's own page").into_response();
    }
    let token = SecretString::new(form.token.0.expose().trim().to_owned());
    match caller_of(&console, &token).await {
        Ok(caller) => {
            tracing::info!(caller = %caller.name, scope = caller.scope_label, "console sign-in");
            let id = console.inner.sessions.open(token, caller);
            (
                [(header::SET_COOKIE, session_cookie(&console, &id))],
                Redirect::to("/"),
            )
                .into_response()
        }
        Err(status) => {
            tracing::info!(code = ?status.code(), "console sign-in refused");
            let why = match status.code() {
                Code::Unauthenticated => "That token is not valid (or was revoked).".to_owned(),
                Code::PermissionDenied => {
                    "That token may not use the admin API (a proxy's data-plane token?).".to_owned()
                }
                _ => format!("Cannot check the token right now: {}", status.message()),
            };
            sign_in_page(
                StatusCode::UNAUTHORIZED,
                markup!(
                    "<div class=\"notice bad\" role=\"alert\"><p>{}</p></div>",
                    why
                ),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct SignOut {
    csrf: String,
}

impl Guarded for SignOut {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub async fn sign_out(State(console): State<Console>, posted: Posted<SignOut>) -> Response {
    let page = posted.page;
    tracing::info!(caller = %page.session.caller.name, "console sign-out");
    page.sessions().close(&page.session.id);
    (
        [(header::SET_COOKIE, session_cookie(&console, ""))],
        Redirect::to("/sign-in"),
    )
        .into_response()
}
