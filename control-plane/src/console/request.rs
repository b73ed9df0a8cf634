//! What every console request carries: its session (or a redirect to sign in), a request id,
//! and — for changes — proof that it came from a console page (same origin, the session's
//! CSRF token). Admin calls go through [`Page::admin`] with the session's token.

use axum::extract::{Form, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use sluice_proto::admin::v1::admin_service_client::AdminServiceClient;
use sluice_shared::ids::new_id;
use tonic::{Code, Status};

use super::errors::ShownError;
use super::sessions::{Current, Flash};
use super::{AdminStack, Console};

pub const COOKIE: &str = "sluice_console";

/// A signed-in request.
pub struct Page {
    pub console: Console,
    pub session: Current,
    /// Logged with every failure and shown beside it, for support.
    pub request_id: String,
    /// What the previous action left to say (GET pages only).
    pub flash: Option<Flash>,
}

/// Why a page or an action could not go on.
pub enum Failure {
    /// The session's token no longer authenticates: sign in again.
    SignIn,
    Shown(ShownError),
}

impl Page {
    pub fn admin(&self) -> AdminServiceClient<AdminStack> {
        AdminServiceClient::new(self.console.inner.admin.clone())
    }

    /// `message` as an admin call of this session: its token, this request's id.
    pub fn call<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        if let Ok(value) = format!("Bearer {}", self.session.token.expose()).parse() {
            metadata.insert("authorization", value);
        }
        if let Ok(value) = self.request_id.parse() {
            metadata.insert("x-request-id", value);
        }
        request
    }

    /// An admin call's answer, or the failure to show.
    pub fn answer<T>(&self, reply: Result<tonic::Response<T>, Status>) -> Result<T, Failure> {
        match reply {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if status.code() == Code::Unauthenticated => {
                tracing::info!(
                    request_id = %self.request_id,
                    caller = %self.session.caller.name,
                    "console session ended: its token no longer authenticates"
                );
                self.console.inner.sessions.close(&self.session.id);
                Err(Failure::SignIn)
            }
            Err(status) => {
                tracing::info!(
                    request_id = %self.request_id,
                    caller = %self.session.caller.name,
                    code = ?status.code(),
                    message = status.message(),
                    "console action refused"
                );
                Err(Failure::Shown(ShownError::from_status(
                    &status,
                    &self.request_id,
                )))
            }
        }
    }

    pub fn sessions(&self) -> &super::sessions::Sessions {
        &self.console.inner.sessions
    }

    /// After a change: back to `to`, with `outcome` shown there.
    pub fn then(&self, to: &str, outcome: Result<Flash, Failure>) -> Response {
        let flash = match outcome {
            Ok(flash) => flash,
            Err(Failure::SignIn) => return sign_in_again(),
            Err(Failure::Shown(error)) => Flash::Failed(error),
        };
        self.console
            .inner
            .sessions
            .set_flash(&self.session.id, flash);
        Redirect::to(to).into_response()
    }

    pub fn can_write(&self) -> bool {
        self.session.caller.can_write
    }
}

/// Who `token` is, asked of the admin service as any call would be.
pub async fn caller_of(
    console: &Console,
    token: &sluice_shared::secret::SecretString,
) -> Result<super::sessions::Caller, Status> {
    let mut request = tonic::Request::new(sluice_proto::admin::v1::GetCallerRequest {});
    let bearer = format!("Bearer {}", token.expose())
        .parse()
        .map_err(|_| Status::unauthenticated("a token is letters and digits only"))?;
    request.metadata_mut().insert("authorization", bearer);
    let who = AdminServiceClient::new(console.inner.admin.clone())
        .get_caller(request)
        .await?
        .into_inner();
    use sluice_proto::admin::v1::TokenScope;
    let (can_write, scope_label) = match TokenScope::try_from(who.scope) {
        Ok(TokenScope::Admin) => (true, "admin"),
        Ok(TokenScope::OrgAdmin) => (true, "org admin"),
        Ok(TokenScope::OrgReadOnly) => (false, "org read-only"),
        _ => (false, "read-only"),
    };
    Ok(super::sessions::Caller {
        name: who.name,
        can_write,
        organization: Some(who.organization).filter(|org| !org.is_empty()),
        scope_label,
    })
}

pub fn sign_in_again() -> Response {
    Redirect::to("/sign-in?ended=1").into_response()
}

impl FromRequestParts<Console> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let Some(session) =
            session_id(&parts.headers).and_then(|id| console.inner.sessions.find(id))
        else {
            return Err(if parts.method == Method::GET {
                Redirect::to("/sign-in").into_response()
            } else {
                sign_in_again()
            });
        };
        if parts.method != Method::GET && cross_origin(&parts.headers) {
            tracing::warn!(
                caller = %session.caller.name,
                path = parts.uri.path(),
                "console refused a cross-origin form"
            );
            return Err(refused("this change did not come from a console page"));
        }
        let flash = if parts.method == Method::GET {
            console.inner.sessions.take_flash(&session.id)
        } else {
            None
        };
        Ok(Self {
            console: console.clone(),
            session,
            request_id: new_id(),
            flash,
        })
    }
}

/// A form every change posts: the page's CSRF token beside the fields.
pub trait Guarded {
    fn csrf(&self) -> &str;
}

/// A signed-in change with its form, from a console page of this session.
pub struct Posted<T> {
    pub page: Page,
    pub form: T,
}

impl<T: DeserializeOwned + Guarded + Send> FromRequest<Console> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Console) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let page = Page::from_request_parts(&mut parts, console).await?;
        let Form(form) = Form::<T>::from_request(Request::from_parts(parts, body), console)
            .await
            .map_err(|rejection| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("the form could not be read: {}", rejection.body_text()),
                )
                    .into_response()
            })?;
        if !super::sessions::same_token(form.csrf(), &page.session.csrf) {
            tracing::warn!(
                caller = %page.session.caller.name,
                request_id = %page.request_id,
                "console refused a form without this session's CSRF token"
            );
            return Err(refused(
                "this form is stale or forged (its CSRF token does not match your session); \
                 reload the page and try again",
            ));
        }
        Ok(Self { page, form })
    }
}

fn refused(why: &str) -> Response {
    (StatusCode::FORBIDDEN, why.to_owned()).into_response()
}

/// The session cookie's value.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether the browser says the request came from another origin: Fetch metadata where the
/// browser sends it, else the `Origin` header against `Host`.
pub fn cross_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site != "same-origin";
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            authority != Some(host)
        }
        // Neither header: not a browser's cross-site form (those carry Origin on POST).
        _ => false,
    }
}

/// The session cookie for `id`; an empty id ends it.
pub fn session_cookie(console: &Console, id: &str) -> String {
    let max_age = if id.is_empty() {
        0
    } else {
        console.inner.sessions.expiry().lifetime.as_secs()
    };
    let secure = if console.inner.tls { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn cross_origin_forms_are_recognised() {
        assert!(!cross_origin(&headers(&[(
            "sec-fetch-site",
            "same-origin"
        )])));
        assert!(cross_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(cross_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!cross_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(cross_origin(&headers(&[
            ("origin", "http://127.0.0.1:9999"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(cross_origin(&headers(&[
            ("origin", "null"),
            ("host", "127.0.0.1:8080")
        ])));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=b; sluice_console=xyz; c=d")]);
        assert_eq!(session_id(&map), Some("xyz"));
        assert_eq!(session_id(&headers(&[("cookie", "a=b")])), None);
    }
}
