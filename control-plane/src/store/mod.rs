//! Persistence: the [`Store`] traits, one implementation per backend (SQLite embedded,
//! PostgreSQL for several control-plane replicas), each with its own migrations folder.
//!
//! Every change runs in one transaction that also bumps the config version and appends an
//! audit event, so a proxy can never see a change without its version, nor an operator a
//! change without its audit line. All SQL uses bound parameters only.

mod contract;
mod migrations;
mod model;
pub mod postgres;
mod rate_limit;
mod sql;
pub mod sqlite;
pub mod usage_wire;

pub use contract::*;
pub use model::*;
pub use rate_limit::*;

/// Defaults the admin API applies to new budgets.
pub mod budget_defaults {
    pub fn alert_percents() -> Vec<u32> {
        super::sql::DEFAULT_ALERT_PERCENTS.to_vec()
    }
}

/// What went wrong in the store, in terms an API can map to a precise status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `what` names the resource, e.g. `project 'acme/web'`.
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// A rule about the current state forbids the change.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Backend(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the backend a database URL names: `sqlite:` or `postgres:`/`postgresql:`.
pub enum AnyStore {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl AnyStore {
    pub async fn open(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(sqlite::SqliteStore::open(url).await?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres(postgres::PostgresStore::open(url).await?))
        } else {
            Err(StoreError::FailedPrecondition(
                "database_url must start with sqlite: or postgres:".to_owned(),
            ))
        }
    }
}

/// Who made a change and what it was, recorded with the change in the same transaction.
/// Never holds a secret value.
#[derive(Debug, Clone)]
pub struct Audit {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub detail: String,
}

impl Audit {
    pub fn new(actor: &str, action: &'static str, target: impl Into<String>) -> Self {
        Self {
            actor: actor.to_owned(),
            action,
            target: target.into(),
            detail: String::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}
