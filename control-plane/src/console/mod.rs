//! The Provider Vault console: server-rendered pages on a listener of their own.
//!
//! Every action is an admin RPC made in-process through the very service stack the gRPC
//! listener serves (token check, tenancy, validation, audit, the publisher's nudge), with the
//! signed-in session's token as its bearer: the console adds no second implementation of
//! anything and cannot do what the token could not. Pages are plain HTML forms (one small
//! script copies a new key to the clipboard), so a strict Content-Security-Policy holds and
//! the console works without JavaScript.

mod errors;
pub mod html;
mod layout;
mod pages;
mod request;
mod sessions;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sluice_shared::tls::server::ServerTls;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tower::util::BoxCloneSyncService;

pub use sessions::Expiry;

/// The admin service stack, callable in-process.
pub type AdminStack = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
>;

/// Where and how the console serves.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub listen_addr: SocketAddr,
    pub expiry: Expiry,
}

/// The most a form may send (a pricing catalog is the largest).
const MAX_FORM_BYTES: usize = 256 * 1024;
/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    admin: AdminStack,
    sessions: sessions::Sessions,
    /// Cookies are `Secure` when the console speaks TLS.
    tls: bool,
}

impl Console {
    pub fn new(admin: AdminStack, expiry: Expiry, tls: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                admin,
                sessions: sessions::Sessions::new(expiry),
                tls,
            }),
        }
    }

    fn router(self) -> Router {
        use pages::*;
        Router::new()
            .route("/", get(overview::home))
            .route("/sign-in", get(sign_in::form).post(sign_in::submit))
            .route("/sign-out", post(sign_in::sign_out))
            .route("/assets/console.css", get(layout::stylesheet))
            .route("/assets/console.js", get(layout::script))
            .route(
                "/orgs",
                get(organizations::list).post(organizations::create),
            )
            .route("/orgs/{org}", get(overview::page))
            .route(
                "/orgs/{org}/providers",
                get(providers::page).post(providers::create),
            )
            .route(
                "/orgs/{org}/providers/{provider}/active",
                post(providers::set_active),
            )
            .route(
                "/orgs/{org}/providers/{provider}/keys",
                post(providers::add_key),
            )
            .route(
                "/orgs/{org}/providers/{provider}/keys/{key}/{action}",
                post(providers::key_action),
            )
            .route("/orgs/{org}/models", get(models::page).post(models::create))
            .route("/orgs/{org}/models/pricing", post(models::sync_pricing))
            .route(
                "/orgs/{org}/models/{model}/deployments",
                post(models::add_deployment),
            )
            .route(
                "/orgs/{org}/projects",
                get(projects::page).post(projects::create),
            )
            .route(
                "/orgs/{org}/projects/{project}/default-model",
                post(projects::set_default_model),
            )
            .route(
                "/orgs/{org}/projects/{project}/posture",
                get(projects::confirm_posture).post(projects::set_posture),
            )
            .route(
                "/orgs/{org}/projects/{project}/keys",
                post(projects::create_key),
            )
            .route(
                "/orgs/{org}/projects/{project}/keys/{key}/revoke",
                post(projects::revoke_key),
            )
            .route(
                "/orgs/{org}/budgets",
                get(budgets::page).post(budgets::create),
            )
            .route("/orgs/{org}/usage", get(usage::page))
            .route("/orgs/{org}/audit", get(audit::page))
            .route("/fleet", get(fleet::page))
            .fallback(layout::not_found)
            .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
            .layer(axum::middleware::map_response(layout::security_headers))
            .with_state(self)
    }

    /// Serves the console on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<ServerTls>>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let service = TowerToHyperService::new(self.router());
        let mut incoming = crate::listener::incoming(listener, tls);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let connection = tokio::select! {
                next = incoming.next() => match next {
                    Some(Ok(connection)) => connection,
                    Some(Err(_)) => continue,
                    None => return,
                },
                () = &mut shutdown => return,
            };
            let service = service.clone();
            tokio::spawn(async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(connection), service)
                    .await;
                if let Err(error) = served {
                    tracing::debug!(%error, "console connection ended");
                }
            });
        }
    }
}
