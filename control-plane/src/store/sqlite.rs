//! The embedded backend: one SQLite file, WAL mode, created on first start.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreResult;
use super::migrations::migrator;
use super::sql::{SqlBackend, sql_store};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "fleet_and_usage",
        include_str!("../../migrations/sqlite/0002_fleet_and_usage.sql"),
    ),
    (
        3,
        "drop_usage_batch_index",
        include_str!("../../migrations/sqlite/0003_drop_usage_batch_index.sql"),
    ),
    (
        4,
        "usage_metadata",
        include_str!("../../migrations/sqlite/0004_usage_metadata.sql"),
    ),
    (
        5,
        "model_pricing",
        include_str!("../../migrations/sqlite/0005_model_pricing.sql"),
    ),
    (
        6,
        "budgets",
        include_str!("../../migrations/sqlite/0006_budgets.sql"),
    ),
    (
        7,
        "budget_leases",
        include_str!("../../migrations/sqlite/0007_budget_leases.sql"),
    ),
    (
        8,
        "usage_hourly",
        include_str!("../../migrations/sqlite/0008_usage_hourly.sql"),
    ),
    (
        9,
        "virtual_key_versions",
        include_str!("../../migrations/sqlite/0009_virtual_key_versions.sql"),
    ),
    (
        10,
        "usage_per_batch",
        include_str!("../../migrations/sqlite/0010_usage_per_batch.sql"),
    ),
    (
        11,
        "retry_policies",
        include_str!("../../migrations/sqlite/0011_retry_policies.sql"),
    ),
    (
        12,
        "proxy_left_out",
        include_str!("../../migrations/sqlite/0012_proxy_left_out.sql"),
    ),
    (
        13,
        "timeout_policies",
        include_str!("../../migrations/sqlite/0013_timeout_policies.sql"),
    ),
    (
        14,
        "rate_limits",
        include_str!("../../migrations/sqlite/0014_rate_limits.sql"),
    ),
    (
        15,
        "provider_trace_context",
        include_str!("../../migrations/sqlite/0015_provider_trace_context.sql"),
    ),
    (
        16,
        "project_content_capture",
        include_str!("../../migrations/sqlite/0016_project_content_capture.sql"),
    ),
    (
        17,
        "project_metrics_by_key",
        include_str!("../../migrations/sqlite/0017_project_metrics_by_key.sql"),
    ),
    (
        18,
        "admin_tokens_per_organization",
        include_str!("../../migrations/sqlite/0018_admin_tokens_per_organization.sql"),
    ),
    (
        19,
        "provider_key_health_source",
        include_str!("../../migrations/sqlite/0019_provider_key_health_source.sql"),
    ),
];

pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    /// SQLite has one writer at a time; a one-connection pool queues writers fairly in the
    /// process instead of letting them sleep in SQLite's busy handler.
    writer: sqlx::SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if absent) the database at `url` and runs pending migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before it is acknowledged, so a usage batch the
            // control plane has ACKed (and the proxy has deleted) survives power loss too.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // A connection to a file cannot go stale the way one to a server can: no ping (a round
        // trip to the connection's thread) before each use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        migrator(MIGRATIONS).run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let store = Self { pool, writer };
        store.convert_per_record_usage().await?;
        Ok(store)
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

impl SqlBackend for SqliteStore {
    type Db = sqlx::Sqlite;
    /// A SQLite read transaction is already one consistent snapshot in WAL mode.
    const SNAPSHOT_ISOLATION: Option<&'static str> = None;
    /// Writers take the write lock up front: a deferred transaction that reads and then writes
    /// fails at once with SQLITE_BUSY when another writer got there first, whatever the busy
    /// timeout.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    /// One writer at a time already.
    const LOCK_BUDGETS: Option<&'static str> = None;
    const TABLE_EXISTS: &'static str =
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1";

    fn readers(&self) -> &sqlx::SqlitePool {
        &self.pool
    }

    fn writer(&self) -> &sqlx::SqlitePool {
        &self.writer
    }
}

sql_store!(SqliteStore);
