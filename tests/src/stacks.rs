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
    caught_up_proxy_with(cp, token, &[]).await
}

/// [`caught_up_proxy`] with extra proxy environment.
pub async fn caught_up_proxy_with(
    cp: &ControlPlane,
    token: &str,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, proxy::Proxy, proxy::Http) {
    let http = proxy::Http::new();
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut builder = proxy::ProxyBuilder::new(dir.path(), &cp.url(), token);
    for (key, value) in env {
        builder = builder.env(key, value);
    }
    let proxy = builder.start();
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

/// What the control plane stored as usage, one row per record in a table `usage_records`
/// (request_id, started_at_us, project_id, virtual_key_id, model, provider_id, the token
/// counts, cost_micros, latency_ms, http_status, source by name, run_id, task_id, tags as a
/// JSON object, lease_epoch) of an in-memory database of its own: the store keeps each batch's
/// records in one row, encoded, and this decodes them so tests can ask for them in SQL.
pub async fn usage_rows(store: &sqlx::SqlitePool) -> sqlx::SqlitePool {
    use prost::Message;
    use sluice_proto::usage::v1 as usage;
    let rows = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("an in-memory database");
    sqlx::query(
        "CREATE TABLE usage_records (request_id TEXT PRIMARY KEY, started_at_us BIGINT, \
         project_id TEXT, virtual_key_id TEXT, model TEXT, provider_id TEXT, \
         input_tokens BIGINT, output_tokens BIGINT, cached_input_tokens BIGINT, \
         reasoning_tokens BIGINT, cost_micros BIGINT, latency_ms BIGINT, http_status BIGINT, \
         source TEXT, run_id TEXT, task_id TEXT, tags TEXT, lease_epoch BIGINT, attempts BIGINT)",
    )
    .execute(&rows)
    .await
    .unwrap();
    let batches: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT records FROM usage_batches")
        .fetch_all(store)
        .await
        .unwrap_or_default();
    for stored in batches {
        let batch = usage::UsageBatch::decode(stored.unwrap_or_default().as_slice())
            .expect("a stored usage batch");
        for r in batch.records {
            let source = match usage::UsageSource::try_from(r.source) {
                Ok(usage::UsageSource::ProviderReported) => "PROVIDER_REPORTED",
                Ok(usage::UsageSource::Estimated) => "ESTIMATED",
                Ok(usage::UsageSource::Mock) => "MOCK",
                _ => "UNSPECIFIED",
            };
            let tags: serde_json::Map<String, serde_json::Value> = r
                .tags
                .into_iter()
                .map(|t| (t.name, serde_json::Value::String(t.value)))
                .collect();
            sqlx::query(
                "INSERT INTO usage_records VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                 $11, $12, $13, $14, $15, $16, $17, $18, $19)",
            )
            .bind(r.request_id)
            .bind(r.started_at_us)
            .bind(r.project_id)
            .bind(r.virtual_key_id)
            .bind(r.model)
            .bind(r.provider_id)
            .bind(r.input_tokens as i64)
            .bind(r.output_tokens as i64)
            .bind(r.cached_input_tokens as i64)
            .bind(r.reasoning_tokens as i64)
            .bind(r.cost_micros)
            .bind(i64::from(r.latency_ms))
            .bind(i64::from(r.http_status))
            .bind(source)
            .bind(r.run_id)
            .bind(r.task_id)
            .bind(serde_json::Value::Object(tags).to_string())
            .bind(r.lease_epoch as i64)
            .bind(i64::from(r.attempts))
            .execute(&rows)
            .await
            .expect("each request stored once");
        }
    }
    rows
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
            .fetch_optional(&usage_rows(pool).await)
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
