//! The shared backend: PostgreSQL, for several control-plane replicas.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use super::StoreResult;
use super::migrations::migrator;
use super::sql::{SqlBackend, sql_store};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "fleet_and_usage",
        include_str!("../../migrations/postgres/0002_fleet_and_usage.sql"),
    ),
    (
        3,
        "drop_usage_batch_index",
        include_str!("../../migrations/postgres/0003_drop_usage_batch_index.sql"),
    ),
    (
        4,
        "usage_metadata",
        include_str!("../../migrations/postgres/0004_usage_metadata.sql"),
    ),
    (
        5,
        "model_pricing",
        include_str!("../../migrations/postgres/0005_model_pricing.sql"),
    ),
    (
        6,
        "budgets",
        include_str!("../../migrations/postgres/0006_budgets.sql"),
    ),
    (
        7,
        "budget_leases",
        include_str!("../../migrations/postgres/0007_budget_leases.sql"),
    ),
    (
        8,
        "usage_hourly",
        include_str!("../../migrations/postgres/0008_usage_hourly.sql"),
    ),
    (
        9,
        "virtual_key_versions",
        include_str!("../../migrations/postgres/0009_virtual_key_versions.sql"),
    ),
    (
        10,
        "usage_per_batch",
        include_str!("../../migrations/postgres/0010_usage_per_batch.sql"),
    ),
    (
        11,
        "retry_policies",
        include_str!("../../migrations/postgres/0011_retry_policies.sql"),
    ),
    (
        12,
        "proxy_left_out",
        include_str!("../../migrations/postgres/0012_proxy_left_out.sql"),
    ),
    (
        13,
        "timeout_policies",
        include_str!("../../migrations/postgres/0013_timeout_policies.sql"),
    ),
    (
        14,
        "rate_limits",
        include_str!("../../migrations/postgres/0014_rate_limits.sql"),
    ),
    (
        15,
        "provider_trace_context",
        include_str!("../../migrations/postgres/0015_provider_trace_context.sql"),
    ),
    (
        16,
        "project_content_capture",
        include_str!("../../migrations/postgres/0016_project_content_capture.sql"),
    ),
    (
        17,
        "project_metrics_by_key",
        include_str!("../../migrations/postgres/0017_project_metrics_by_key.sql"),
    ),
    (
        18,
        "admin_tokens_per_organization",
        include_str!("../../migrations/postgres/0018_admin_tokens_per_organization.sql"),
    ),
    (
        19,
        "provider_key_health_source",
        include_str!("../../migrations/postgres/0019_provider_key_health_source.sql"),
    ),
];

pub struct PostgresStore {
    pool: sqlx::PgPool,
}

impl PostgresStore {
    /// Connects to `url` and runs pending migrations (sqlx takes an advisory lock, so replicas
    /// starting together migrate once).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        migrator(MIGRATIONS).run(&pool).await?;
        let store = Self { pool };
        store.convert_per_record_usage().await?;
        Ok(store)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqlBackend for PostgresStore {
    type Db = sqlx::Postgres;
    /// Without it each statement of a PostgreSQL transaction sees its own snapshot, and a
    /// config load could mix two versions.
    const SNAPSHOT_ISOLATION: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// Serialises across control-plane replicas, not only within this process.
    const LOCK_BUDGETS: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7340033)");
    const TABLE_EXISTS: &'static str = "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1";

    fn readers(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Every PostgreSQL connection can write; row locks order the writers.
    fn writer(&self) -> &sqlx::PgPool {
        &self.pool
    }
}

sql_store!(PostgresStore);
