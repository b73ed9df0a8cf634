//! Token authentication as a tower layer in front of a whole gRPC service, so no RPC can forget
//! it.
//!
//! On the admin service, Get*, List* and Query* need a read-only or admin token and every other method
//! an admin token (the organisation scopes likewise, within their organisation: see
//! `tenancy`); data-plane tokens never pass. On the config and usage services only
//! data-plane tokens pass. The token's name rides on the request as the audit actor, and a
//! successful admin write nudges the snapshot publisher.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

use crate::store::{Store, TokenScope};
use sluice_shared::tls::accepted::Peer;

/// Who is calling: the admin token's name and scope, and the organisation an `ORG_*` token
/// is limited to.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_name: String,
    pub scope: TokenScope,
    pub organization: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    DataPlane,
}

/// What an admin method needs, from its name alone: reads are exactly the Get*, List* and
/// Query* methods.
pub fn admin_access(method: &str) -> Access {
    if ["Get", "List", "Query"]
        .iter()
        .any(|prefix| method.starts_with(prefix))
    {
        Access::Read
    } else {
        Access::Write
    }
}

fn allows(scope: TokenScope, access: Access) -> bool {
    match scope {
        TokenScope::Admin | TokenScope::OrgAdmin => access != Access::DataPlane,
        TokenScope::ReadOnly | TokenScope::OrgReadOnly => access == Access::Read,
        TokenScope::DataPlane => access == Access::DataPlane,
    }
}

/// Checks the bearer token of one request against the store.
pub async fn authenticate<S: Store>(
    store: &S,
    headers: &http::HeaderMap,
    method: &str,
    access: Access,
) -> Result<Principal, Status> {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated(
                "missing token: send `authorization: Bearer <token>` (sluicectl: --token or \
                 SLUICE_TOKEN; proxies: their data-plane token)",
            )
        })?;
    let found = store
        .find_admin_token(&sluice_shared::token::hash(token))
        .await
        .map_err(|error| {
            tracing::error!(%error, "admin token lookup failed");
            Status::unavailable("cannot check the admin token right now; retry")
        })?
        .ok_or_else(|| Status::unauthenticated("invalid or revoked token"))?;
    if found.scope.is_per_organization() && found.organization.is_none() {
        return Err(Status::unauthenticated(format!(
            "token '{}' belonged to an organisation that was deleted",
            found.name
        )));
    }
    if !allows(found.scope, access) {
        return Err(Status::permission_denied(format!(
            "token '{}' has scope {} and may not call {method}",
            found.name,
            found.scope.as_str()
        )));
    }
    Ok(Principal {
        token_name: found.name,
        scope: found.scope,
        organization: found.organization,
    })
}

/// Wraps a generated server; see the module docs.
pub struct TokenAuth<Inner, S> {
    inner: Inner,
    store: Arc<S>,
    access_for: fn(&str) -> Access,
    after_write: Option<Arc<Notify>>,
    /// mTLS: callers must have presented a client certificate the CA bundle vouched for,
    /// besides their token.
    require_certificate: bool,
}

impl<Inner: Clone, S> Clone for TokenAuth<Inner, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: self.store.clone(),
            access_for: self.access_for,
            after_write: self.after_write.clone(),
            require_certificate: self.require_certificate,
        }
    }
}

impl<Inner, S> TokenAuth<Inner, S> {
    /// The admin service: per-method read/write access; `after_write` is nudged after every
    /// write call.
    pub fn admin(inner: Inner, store: Arc<S>, after_write: Arc<Notify>) -> Self {
        Self {
            inner,
            store,
            access_for: admin_access,
            after_write: Some(after_write),
            require_certificate: false,
        }
    }

    /// A service for proxies: data-plane tokens only, and with `require_certificate` only
    /// over a connection that presented a verified client certificate.
    pub fn data_plane(inner: Inner, store: Arc<S>, require_certificate: bool) -> Self {
        Self {
            inner,
            store,
            access_for: |_| Access::DataPlane,
            after_write: None,
            require_certificate,
        }
    }
}

impl<Inner: NamedService, S> NamedService for TokenAuth<Inner, S> {
    const NAME: &'static str = Inner::NAME;
}

impl<Inner, S> Service<http::Request<Body>> for TokenAuth<Inner, S>
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
        let access_for = self.access_for;
        let after_write = self.after_write.clone();
        let uncertified = self.require_certificate
            && !request
                .extensions()
                .get::<Peer>()
                .is_some_and(|peer| peer.verified_certificate);
        if uncertified {
            let peer = request
                .extensions()
                .get::<Peer>()
                .and_then(|peer| peer.tcp.remote_addr);
            tracing::warn!(
                peer = ?peer,
                path = request.uri().path(),
                "refused a proxy without a client certificate"
            );
            return Box::pin(async {
                Ok(Status::unauthenticated(
                    "this control plane requires proxies to present a client certificate \
                     signed by its proxy CA (SLUICE_PROXY_CONTROL_PLANE_CERT_FILE and _KEY_FILE)",
                )
                .into_http())
            });
        }
        Box::pin(async move {
            let method = request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let access = access_for(&method);
            match authenticate(store.as_ref(), request.headers(), &method, access).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    let response = inner.call(request).await;
                    // A failed write changed nothing; a spurious nudge costs one version check.
                    if let (Access::Write, Some(changed)) = (access, after_write) {
                        changed.notify_one();
                    }
                    response
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
