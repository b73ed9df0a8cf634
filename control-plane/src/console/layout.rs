//! The frame around every page (navigation, who is signed in, the last action's outcome), the
//! embedded stylesheet and script, and the headers every response carries.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::errors::{KeyTestShown, ShownError};
use super::html::{Markup, html, markup};
use super::request::{Failure, Page, sign_in_again};
use super::sessions::Flash;

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// Scripts and styles from this origin only, no inline code, no framing, forms only to here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

pub async fn stylesheet() -> Response {
    asset(STYLESHEET, "text/css; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

pub async fn not_found() -> Response {
    bare(
        StatusCode::NOT_FOUND,
        "Not found",
        markup!("<p>There is no console page here. <a href=\"/\">Go to the overview</a>.</p>"),
    )
}

/// The sections of an organisation's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Providers,
    Models,
    Projects,
    Budgets,
    Usage,
    Audit,
    Fleet,
    Organizations,
}

const ORG_SECTIONS: &[(Section, &str, &str)] = &[
    (Section::Overview, "", "Overview"),
    (Section::Providers, "/providers", "Providers"),
    (Section::Models, "/models", "Models"),
    (Section::Projects, "/projects", "Projects"),
    (Section::Budgets, "/budgets", "Budgets"),
    (Section::Usage, "/usage", "Usage"),
    (Section::Audit, "/audit", "Audit log"),
];

/// A whole page: `content`, or the failure that stopped it.
pub fn page(
    page: &Page,
    org: Option<&str>,
    section: Section,
    title: &str,
    content: Result<Markup, Failure>,
) -> Response {
    let (status, body) = match content {
        Ok(body) => (StatusCode::OK, body),
        Err(Failure::SignIn) => return sign_in_again(),
        Err(Failure::Shown(error)) => (status_of(&error), error_panel(&error)),
    };
    let mut nav = Markup::new();
    if let Some(org) = org {
        for (each, path, label) in ORG_SECTIONS {
            nav_link(
                &mut nav,
                &format!("/orgs/{}{path}", encode(org)),
                label,
                *each == section,
            );
        }
    }
    if page.session.caller.organization.is_none() {
        nav_link(&mut nav, "/fleet", "Fleet", section == Section::Fleet);
        nav_link(
            &mut nav,
            "/orgs",
            "Organisations",
            section == Section::Organizations,
        );
    }
    let caller = &page.session.caller;
    let mut main = Markup::new();
    if let Some(flash) = &page.flash {
        main.push(&flash_panel(flash));
    }
    html!(main, "<h1>{}</h1>{}", title, body);
    let header = markup!(
        "<header class=\"top\"><a class=\"brand\" href=\"/\">Sluice</a>\
         <span class=\"org\">{}</span>\
         <form method=\"post\" action=\"/sign-out\" class=\"who\">\
         <span>{} <span class=\"scope\">{}</span></span>{}\
         <button type=\"submit\" class=\"link\">Sign out</button></form></header>",
        org.map(|org| markup!("Provider Vault · {}", org))
            .unwrap_or_else(|| markup!("Provider Vault")),
        caller.name,
        caller.scope_label,
        csrf_field(page),
    );
    let document = markup!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Sluice</title><link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>{}\
         <div class=\"frame\"><nav aria-label=\"Sections\"><ul>{}</ul></nav>\
         <main id=\"main\" tabindex=\"-1\">{}</main></div></body></html>",
        title,
        header,
        nav,
        main,
    );
    html_response(status, document)
}

/// A page outside a session (sign-in, not found).
pub fn bare(status: StatusCode, title: &str, body: Markup) -> Response {
    let document = markup!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Sluice</title><link rel=\"stylesheet\" href=\"/assets/console.css\">\
         </head><body><main id=\"main\" class=\"narrow\"><h1>{}</h1>{}</main></body></html>",
        title,
        title,
        body,
    );
    html_response(status, document)
}

fn html_response(status: StatusCode, document: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        document.into_string(),
    )
        .into_response()
}

fn nav_link(nav: &mut Markup, href: &str, label: &str, current: bool) {
    if current {
        html!(
            nav,
            "<li><a href=\"{}\" aria-current=\"page\">{}</a></li>",
            href,
            label
        );
    } else {
        html!(nav, "<li><a href=\"{}\">{}</a></li>", href, label);
    }
}

/// The hidden field every form of the session carries.
pub fn csrf_field(page: &Page) -> Markup {
    markup!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        page.session.csrf
    )
}

fn status_of(error: &ShownError) -> StatusCode {
    match error.code {
        "not_found" => StatusCode::NOT_FOUND,
        "permission_denied" => StatusCode::FORBIDDEN,
        "invalid_argument" | "failed_precondition" | "already_exists" => StatusCode::BAD_REQUEST,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub fn error_panel(error: &ShownError) -> Markup {
    markup!(
        "<div class=\"notice bad\" role=\"alert\"><p><strong>{}</strong>: {}</p>\
         <p class=\"next\">Next move — {}</p><p class=\"meta\">request id {}</p></div>",
        error.code,
        error.message,
        error.next_move,
        error.request_id,
    )
}

fn flash_panel(flash: &Flash) -> Markup {
    match flash {
        Flash::Done(what) => markup!(
            "<div class=\"notice good\" role=\"status\"><p>{}</p></div>",
            what
        ),
        Flash::Failed(error) => error_panel(error),
        Flash::Secret { what, value } => markup!(
            "<div class=\"notice secret\" role=\"status\"><p>{} It is shown this once: \
             copy it now.</p><p><code id=\"new-secret\">{}</code> \
             <button type=\"button\" class=\"copy\" data-copy=\"new-secret\">Copy</button></p></div>",
            what,
            value.expose(),
        ),
        Flash::KeyTest(test) => key_test_panel(test),
    }
}

fn key_test_panel(test: &KeyTestShown) -> Markup {
    let upstream = if test.upstream_status == 0 {
        markup!("no answer")
    } else {
        markup!("HTTP {}", test.upstream_status)
    };
    markup!(
        "<div class=\"notice {}\" role=\"status\" id=\"key-test\"><p>Key <strong>{}</strong>: \
         <strong class=\"health\">{}</strong> ({})</p><p>The provider said: <q>{}</q></p>\
         <p class=\"next\">Next move — {}</p></div>",
        if test.good { "good" } else { "bad" },
        test.key,
        test.health,
        upstream,
        test.message,
        test.next_move,
    )
}

/// A path segment, percent-encoded (names are letters, digits, `.`, `_`, `-`, but a hostile
/// one must not change the path).
pub fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// An empty state: what is missing and the first thing to do.
pub fn empty(what: &str, first: &str) -> Markup {
    markup!(
        "<div class=\"empty\"><p><strong>{}</strong></p><p>{}</p></div>",
        what,
        first
    )
}
