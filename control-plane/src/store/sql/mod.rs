//! The SQL both backends run. The schema and statements are portable (TEXT ids, BIGINT times
//! and money, `$n` parameters, `RETURNING`, `ON CONFLICT`), so one body of code serves both.
//!
//! sqlx runs a query only on a concrete database type, and generic executor bounds would cost
//! more clarity than they save, so each aggregate's SQL is a macro that [`sql_store!`] expands
//! once per backend. The contract between them is explicit: a backend implements
//! [`SqlBackend`] (its database, its pools, the four statements where SQLite and PostgreSQL
//! differ); `sql_store!` opens one module per backend holding `Db` (the database), `Tx` (a
//! transaction) and `DbRow` (a row), the shared steps of [`common`], and every aggregate;
//! each aggregate implements its `store` trait for the backend from those names, the
//! backend's [`SqlBackend`] items and the helpers of this module alone.

pub(super) mod access;
pub(super) mod budgets;
pub(super) mod common;
pub(super) mod fleet;
pub(super) mod models;
pub(super) mod providers;
pub(super) mod rate_limits;
pub(super) mod tenancy;
pub(super) mod usage;
pub(super) mod usage_query;
pub(super) mod vault;
pub(super) mod virtual_keys;

use std::collections::BTreeMap;

use super::{StoreError, StoreResult};

pub(super) use budgets::DEFAULT_ALERT_PERCENTS;

/// What the SQL needs of a backend: where reads and writes go, and the statements whose
/// spelling differs between SQLite and PostgreSQL.
pub(super) trait SqlBackend {
    type Db: sqlx::Database;
    /// Makes a read transaction one consistent snapshot (`None`: it already is one).
    const SNAPSHOT_ISOLATION: Option<&'static str>;
    /// Opens a transaction that will write.
    const BEGIN_WRITE: &'static str;
    /// Serialises, within a write transaction, usage commits with budget creation and lease
    /// grants, so a budget never misses a batch committed as it is created (`None`: a write
    /// transaction already excludes every other). Each statement is a round trip to the
    /// database, which on SQLite is a hand-off to its worker thread and back.
    const LOCK_BUDGETS: Option<&'static str>;
    /// Counts the tables named $1 (0 or 1) in the store's schema.
    const TABLE_EXISTS: &'static str;

    fn readers(&self) -> &sqlx::Pool<Self::Db>;
    fn writer(&self) -> &sqlx::Pool<Self::Db>;
}

pub(super) const ORGANIZATION_COLUMNS: &str =
    "o.id, o.name, o.display_name, o.created_at_us, o.updated_at_us";
pub(super) const PROJECT_COLUMNS: &str = "p.id, o.name AS organization, p.name, p.display_name, \
     p.posture, p.default_model, p.content_capture_bytes, p.metrics_by_key, p.created_at_us, \
     p.updated_at_us";
pub(super) const PROVIDER_COLUMNS: &str = "p.id, o.name AS organization, p.name, p.kind, \
     p.base_url, p.api_version, p.timeout_ms, p.extra_headers, p.active, \
     p.allow_private_network, p.created_at_us, p.updated_at_us, p.retry_policy, p.timeout_policy, \
     p.send_trace_context";
pub(super) const PROVIDER_KEY_COLUMNS: &str = "k.id, o.name AS organization, p.name AS provider, \
     k.name, k.state, k.last_four, k.fingerprint, k.health, k.master_key_version, \
     k.created_at_us, k.updated_at_us, k.health_learned_at_us, k.health_source";
pub(super) const PROVIDER_KEY_FROM: &str = "provider_keys k \
     JOIN providers p ON p.id = k.provider_id JOIN organizations o ON o.id = p.org_id";
pub(super) const MODEL_COLUMNS: &str = "m.id, o.name AS organization, m.name, \
     m.input_price_micros_per_mtok, m.output_price_micros_per_mtok, m.context_window, \
     m.created_at_us, m.updated_at_us, m.cached_input_price_micros_per_mtok, m.price_source, \
     m.catalog_id, m.retry_policy, m.timeout_policy";
pub(super) const VIRTUAL_KEY_COLUMNS: &str = "v.id, o.name AS organization, p.name AS project, \
     v.name, v.prefix, v.allowed_models, v.expires_at_us, v.revoked_at_us, v.created_at_us, \
     v.updated_at_us";
pub(super) const VIRTUAL_KEY_FROM: &str = "virtual_keys v \
     JOIN projects p ON p.id = v.project_id JOIN organizations o ON o.id = p.org_id";
pub(super) const ADMIN_TOKEN_COLUMNS: &str = "id, name, scope, prefix, created_at_us, \
     revoked_at_us, (SELECT o.name FROM organizations o WHERE o.id = admin_tokens.organization_id) \
     AS organization";

/// Maps a failed write to the error an operator should see: a duplicate becomes
/// `AlreadyExists`, a dangling or still-referenced row a `FailedPrecondition`.
pub(super) fn write_error(
    error: sqlx::Error,
    what: impl FnOnce() -> String,
    still_referenced: &str,
) -> StoreError {
    match error.as_database_error() {
        Some(db) if db.is_unique_violation() => StoreError::AlreadyExists { what: what() },
        Some(db) if db.is_foreign_key_violation() => {
            StoreError::FailedPrecondition(format!("{} {still_referenced}", what()))
        }
        _ => StoreError::Backend(error),
    }
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A JSON column read back; what does not read is corruption, named by its column.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    column: &str,
) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(super) fn headers_from_json(text: &str) -> StoreResult<BTreeMap<String, String>> {
    from_json(text, "extra_headers")
}

pub(super) fn models_from_json(text: &str) -> StoreResult<Vec<String>> {
    from_json(text, "allowed_models")
}

pub(super) fn to_u32(value: i64, column: &str) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

pub(super) fn to_u64(value: i64, column: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

pub(super) fn to_i64(value: u64, column: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

/// Implements every `store` trait for `$store`, a [`SqlBackend`].
macro_rules! sql_store {
    ($store:ty) => {
        mod sql_impl {
            use std::sync::Arc;

            use sluice_shared::{ids::new_id, time::now_us};
            use sqlx::Row;

            use super::*;
            use crate::store::sql::budgets::{percents_from_text, percents_text, reached_percent};
            use crate::store::sql::usage::{hourly_sums, hours_of, not_in, tags_from_json};
            use crate::store::sql::usage_query::{
                EdgeFilter, FIRST_FILTER_PARAMETER, IdSums, UsageFilter, edge_hours, edge_ranges,
                filter_condition, hourly_sums_sql, names_table, rolled_up_hours,
            };
            use crate::store::sql::*;
            use crate::store::usage_wire;
            use crate::store::*;

            type Db = <$store as SqlBackend>::Db;
            type Tx = sqlx::Transaction<'static, Db>;
            type DbRow = <Db as sqlx::Database>::Row;

            crate::store::sql::common::common_sql!($store);
            crate::store::sql::tenancy::tenancy_sql!($store);
            crate::store::sql::providers::providers_sql!($store);
            crate::store::sql::vault::vault_sql!($store);
            crate::store::sql::models::models_sql!($store);
            crate::store::sql::virtual_keys::virtual_keys_sql!($store);
            crate::store::sql::access::access_sql!($store);
            crate::store::sql::fleet::fleet_sql!($store);
            crate::store::sql::usage::usage_sql!($store);
            crate::store::sql::usage_query::usage_query_fns!();
            crate::store::sql::budgets::budgets_sql!($store);
            crate::store::sql::rate_limits::rate_limits_sql!($store);
        }
    };
}

pub(super) use sql_store;
