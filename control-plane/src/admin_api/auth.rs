//! Admin-token authentication for the admin service, as a tower layer so no RPC can forget
//! it: every call to `sluice.admin.v1.AdminService` passes here first.
//!
//! Get* and List* need a read-only or admin token; every other method needs an admin token.
//! Data-plane tokens never pass. The token's name rides on the request as the audit actor.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::store::{Store, TokenScope};

/// Who is calling: the admin token's name and scope.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_name: String,
    pub scope: TokenScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// What a method needs, from its name alone: reads are exactly the Get* and List* methods.
pub fn required_access(method: &str) -> Access {
    if method.starts_with("Get") || method.starts_with("List") {
        Access::Read
    } else {
        Access::Write
    }
}

fn allows(scope: TokenScope, access: Access) -> bool {
    match scope {
        TokenScope::Admin => true,
        TokenScope::ReadOnly => access == Access::Read,
        TokenScope::DataPlane => false,
    }
}

/// Checks the bearer token of one request against the store.
pub async fn authenticate<S: Store>(
    store: &S,
    headers: &http::HeaderMap,
    method: &str,
) -> Result<Principal, Status> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated(
                "missing admin token: send `authorization: Bearer <token>` (sluicectl: --token \
                 or SLUICE_TOKEN)",
            )
        })?;
    let found = store
        .find_admin_token(&sluice_shared::token::hash(token))
        .await
        .map_err(|error| {
            tracing::error!(%error, "admin token lookup failed");
            Status::unavailable("cannot check the admin token right now; retry")
        })?
        .ok_or_else(|| Status::unauthenticated("invalid or revoked admin token"))?;
    if !allows(found.scope, required_access(method)) {
        return Err(Status::permission_denied(format!(
            "admin token '{}' has scope {} and may not call {method}",
            found.name,
            found.scope.as_str()
        )));
    }
    Ok(Principal {
        token_name: found.name,
        scope: found.scope,
    })
}

/// Wraps the generated admin server; see the module docs.
pub struct AdminAuth<Inner, S> {
    inner: Inner,
    store: Arc<S>,
}

impl<Inner: Clone, S> Clone for AdminAuth<Inner, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: self.store.clone(),
        }
    }
}

impl<Inner, S> AdminAuth<Inner, S> {
    pub fn new(inner: Inner, store: Arc<S>) -> Self {
        Self { inner, store }
    }
}

impl<Inner: NamedService, S> NamedService for AdminAuth<Inner, S> {
    const NAME: &'static str = Inner::NAME;
}

impl<Inner, S> Service<http::Request<Body>> for AdminAuth<Inner, S>
where
    Inner: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    Inner::Future: Send,
    S: Store,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone is fresh and may not be ready; the ready one goes with this request.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let store = self.store.clone();
        Box::pin(async move {
            let method = request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            match authenticate(store.as_ref(), request.headers(), &method).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
