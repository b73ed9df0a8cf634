//! Whole stacks a test starts from: a mock upstream, a control plane seeded with a LIVE project,
//! and a proxy caught up with its config; and reading what the control plane stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use crate::control_plane::{Acme, ControlPlane, ControlPlaneBuilder};
use crate::{mock_openai, proxy};

/// A fresh mock OpenAI upstream, control plane (SQLite in `cp_dir`) and LIVE project
/// `acme/web`, the provider holding `provider_key`.
pub struct LiveStack {
    pub upstream: mock_openai::MockOpenAi,
    pub cp_dir: tempfile::TempDir,
    pub cp: ControlPlane,
    pub acme: Acme,
}

/// A [`LiveStack`] with a proxy on it, caught up with the newest config.
pub struct FamilyStack {
    pub stack: LiveStack,
    pub proxy_dir: tempfile::TempDir,
    pub proxy: proxy::Proxy,
    pub http: proxy::Http,
}

pub fn live_stack(provider_key: &str) -> LiveStack {
    live_stack_with(provider_key, &[], &[])
}

/// A [`live_stack`] whose model `acme/{model}` is served by provider `acme/{kind}` of that
/// family (key `main` = `secret`) as `upstream_model`, and one proxy on it, caught up.
pub async fn family_stack(
    kind: &str,
    secret: &str,
    model: &str,
    upstream_model: &str,
) -> FamilyStack {
    let stack = live_stack("sk-openai-side");
    let LiveStack {
        upstream, cp, acme, ..
    } = &stack;
    cp.add_provider_model(
        &format!("acme/{kind}"),
        kind,
        &format!("http://{}", upstream.addr),
        &[("main", secret)],
        &format!("acme/{model}"),
        upstream_model,
    );
    let (proxy_dir, proxy, http) = caught_up_proxy(cp, &acme.token).await;
    FamilyStack {
        stack,
        proxy_dir,
        proxy,
        http,
    }
}

/// A proxy on `cp` with `token`, caught up with its newest config: its data directory (kept
/// for as long as the proxy runs), the proxy, and a client.
pub async fn caught_up_proxy(
    cp: &ControlPlane,
    token: &str,
) -> (tempfile::TempDir, proxy::Proxy, proxy::Http) {
    let http = proxy::Http::new();
    let dir = tempfile::tempdir().expect("a temp dir");
    let proxy = proxy::ProxyBuilder::new(dir.path(), &cp.url(), token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    (dir, proxy, http)
}

/// [`live_stack`] with extra provider flags (e.g. `--timeout-ms`) and control-plane
/// environment.
pub fn live_stack_with(
    provider_key: &str,
    provider_flags: &[&str],
    env: &[(&str, &str)],
) -> LiveStack {
    let upstream = mock_openai::MockOpenAi::start();
    let cp_dir = tempfile::tempdir().expect("temp dir");
    let mut builder = ControlPlaneBuilder::new(cp_dir.path());
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let cp = builder.start();
    let acme = cp.seed_acme(&upstream.base_url(), Some(provider_key), provider_flags);
    cp.go_live("acme/web");
    LiveStack {
        upstream,
        cp_dir,
        cp,
        acme,
    }
}

/// The control plane's SQLite store in `data_dir`, for reading what it recorded.
pub async fn store_of(data_dir: &Path) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", data_dir.join("sluice.db").display());
    sqlx::SqlitePool::connect(&url)
        .await
        .expect("the control plane's store")
}

/// Waits (bounded) for the usage record of `request_id` to reach the control plane's SQLite
/// store and returns `columns` of it.
pub async fn await_usage<T>(pool: &sqlx::SqlitePool, columns: &str, request_id: &str) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let sql = format!("SELECT {columns} FROM usage_records WHERE request_id = $1");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let row = sqlx::query_as::<_, T>(&sql)
            .bind(request_id)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
        if let Some(row) = row {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "usage of {request_id} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
