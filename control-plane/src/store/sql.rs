//! The SQL both backends run. The schema and statements are portable (TEXT ids, BIGINT times
//! and money, `$n` parameters, `RETURNING`, `ON CONFLICT`), so one body of code serves both;
//! [`sql_store!`] instantiates it for each backend's concrete types, because sqlx's generic
//! executor bounds cost more clarity than a macro does.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::{StoreError, StoreResult};

pub(super) const ORGANIZATION_COLUMNS: &str =
    "o.id, o.name, o.display_name, o.created_at_us, o.updated_at_us";
pub(super) const PROJECT_COLUMNS: &str = "p.id, o.name AS organization, p.name, p.display_name, \
     p.posture, p.default_model, p.created_at_us, p.updated_at_us";
pub(super) const PROVIDER_COLUMNS: &str = "p.id, o.name AS organization, p.name, p.kind, \
     p.base_url, p.api_version, p.timeout_ms, p.extra_headers, p.active, \
     p.allow_private_network, p.created_at_us, p.updated_at_us";
pub(super) const PROVIDER_KEY_COLUMNS: &str = "k.id, o.name AS organization, p.name AS provider, \
     k.name, k.state, k.last_four, k.fingerprint, k.health, k.master_key_version, \
     k.created_at_us, k.updated_at_us";
pub(super) const PROVIDER_KEY_FROM: &str = "provider_keys k \
     JOIN providers p ON p.id = k.provider_id JOIN organizations o ON o.id = p.org_id";
pub(super) const MODEL_COLUMNS: &str = "m.id, o.name AS organization, m.name, \
     m.input_price_micros_per_mtok, m.output_price_micros_per_mtok, m.context_window, \
     m.created_at_us, m.updated_at_us, m.cached_input_price_micros_per_mtok, m.price_source, \
     m.catalog_id";
pub(super) const VIRTUAL_KEY_COLUMNS: &str = "v.id, o.name AS organization, p.name AS project, \
     v.name, v.prefix, v.allowed_models, v.expires_at_us, v.revoked_at_us, v.created_at_us, \
     v.updated_at_us";
pub(super) const VIRTUAL_KEY_FROM: &str = "virtual_keys v \
     JOIN projects p ON p.id = v.project_id JOIN organizations o ON o.id = p.org_id";
pub(super) const ADMIN_TOKEN_COLUMNS: &str =
    "id, name, scope, prefix, created_at_us, revoked_at_us";

const USAGE_COLUMNS: usize = 19;
/// Rows per multi-row insert, largest first. Batches are split into these sizes only, so at
/// most five statements exist and each is prepared once and cached; 256 × 19 parameters stays
/// far below both backends' limits.
pub(super) const USAGE_INSERT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// How a backend's SQL names bound parameters in generated statements.
#[derive(Clone, Copy)]
pub(super) enum Placeholders {
    /// `$1, $2, ...` (PostgreSQL).
    Numbered,
    /// `?, ?, ...` (SQLite): SQLite resolves a named or numbered parameter by scanning a list,
    /// which makes binding thousands of them quadratic; bare `?` skips that.
    Positional,
}

/// `INSERT INTO usage_records (...) VALUES (…), (…) ON CONFLICT DO NOTHING` for `rows` rows
/// (one of [`USAGE_INSERT_SIZES`]), built once per process. With `returning`, the statement
/// returns the request ids it inserted (the rows budgets must count).
pub(super) fn usage_insert_sql(
    rows: usize,
    placeholders: Placeholders,
    returning: bool,
) -> &'static str {
    static CACHE: [OnceLock<Vec<String>>; 4] = [const { OnceLock::new() }; 4];
    let slot = match placeholders {
        Placeholders::Numbered => 0,
        Placeholders::Positional => 2,
    } + usize::from(returning);
    let statements = CACHE[slot].get_or_init(|| {
        USAGE_INSERT_SIZES
            .iter()
            .map(|&rows| {
                let mut sql = build_usage_insert_sql(rows, placeholders);
                if returning {
                    sql.push_str(" RETURNING request_id");
                }
                sql
            })
            .collect()
    });
    let index = USAGE_INSERT_SIZES
        .iter()
        .position(|&size| size == rows)
        .unwrap_or(USAGE_INSERT_SIZES.len() - 1);
    &statements[index]
}

fn build_usage_insert_sql(rows: usize, placeholders: Placeholders) -> String {
    let mut sql = String::with_capacity(300 + rows * 100);
    sql.push_str(
        "INSERT INTO usage_records (request_id, batch_id, started_at_us, project_id, \
         virtual_key_id, model, provider_id, input_tokens, output_tokens, cached_input_tokens, \
         reasoning_tokens, cost_micros, latency_ms, http_status, source, run_id, task_id, \
         tags, lease_epoch) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..USAGE_COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            match placeholders {
                Placeholders::Numbered => {
                    sql.push('$');
                    sql.push_str(&(row * USAGE_COLUMNS + column + 1).to_string());
                }
                Placeholders::Positional => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
    sql
}

/// Tags are stored as one JSON object, so a query can read them without a join.
pub(super) fn tags_json(tags: &[(String, String)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::Value::String(value.clone())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

pub(super) fn tags_from_json(text: String) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(object)) => object
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

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

pub(super) fn headers_from_json(text: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("extra_headers: {e}")))
}

pub(super) fn models_from_json(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("allowed_models: {e}")))
}

pub(super) fn to_u32(value: i64, column: &str) -> StoreResult<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

pub(super) fn to_u64(value: i64, column: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} out of range: {value}")))
}

/// Implements [`super::Store`] for `$store` (a struct with a `pool: sqlx::Pool<$db>` field for
/// reads and a `writer()` method returning the pool writes go through).
/// `$snapshot_isolation` is the statement that makes a read transaction one consistent snapshot;
/// `$begin_write` opens a transaction that will write; `$placeholders` names parameters in
/// generated statements; `$lock_budgets` serialises, within a write transaction, usage
/// commits with budget creation, so a budget never misses a batch committed as it is created.
macro_rules! sql_store {
    ($store:ident, $db:ty, $snapshot_isolation:expr, $begin_write:expr, $placeholders:expr, $lock_budgets:expr) => {
        mod sql_impl {
            use sqlx::Row;
            use sluice_shared::{ids::new_id, time::now_us};

            use super::$store;
            use crate::store::sql::*;
            use crate::store::*;

            type Db = $db;
            type Tx = sqlx::Transaction<'static, $db>;
            type DbRow = <$db as sqlx::Database>::Row;

            use crate::store::budget_sql::{percents_from_text, percents_text, reached_percent};
            crate::store::budget_sql::budget_sql_fns!();
            use crate::store::usage_query_sql::{USAGE_FROM, USAGE_SUMS, group_expression};
            crate::store::usage_query_sql::usage_query_fns!();

            // === row mapping ===

            fn organization(row: &DbRow) -> StoreResult<Organization> {
                Ok(Organization {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    display_name: row.try_get("display_name")?,
                    created_at_us: row.try_get("created_at_us")?,
                    updated_at_us: row.try_get("updated_at_us")?,
                })
            }

            fn project(row: &DbRow) -> StoreResult<Project> {
                Ok(Project {
                    id: row.try_get("id")?,
                    organization: row.try_get("organization")?,
                    name: row.try_get("name")?,
                    display_name: row.try_get("display_name")?,
                    posture: Posture::parse(row.try_get("posture")?)?,
                    default_model: row.try_get("default_model")?,
                    created_at_us: row.try_get("created_at_us")?,
                    updated_at_us: row.try_get("updated_at_us")?,
                })
            }

            fn provider(row: &DbRow) -> StoreResult<Provider> {
                Ok(Provider {
                    id: row.try_get("id")?,
                    organization: row.try_get("organization")?,
                    name: row.try_get("name")?,
                    kind: ProviderKind::parse(row.try_get("kind")?)?,
                    base_url: row.try_get("base_url")?,
                    api_version: row.try_get("api_version")?,
                    timeout_ms: to_u32(row.try_get("timeout_ms")?, "timeout_ms")?,
                    extra_headers: headers_from_json(row.try_get("extra_headers")?)?,
                    active: row.try_get("active")?,
                    allow_private_network: row.try_get("allow_private_network")?,
                    created_at_us: row.try_get("created_at_us")?,
                    updated_at_us: row.try_get("updated_at_us")?,
                })
            }

            fn provider_key(row: &DbRow) -> StoreResult<ProviderKey> {
                Ok(ProviderKey {
                    id: row.try_get("id")?,
                    organization: row.try_get("organization")?,
                    provider: row.try_get("provider")?,
                    name: row.try_get("name")?,
                    state: KeyState::parse(row.try_get("state")?)?,
                    last_four: row.try_get("last_four")?,
                    fingerprint: row.try_get("fingerprint")?,
                    health: KeyHealth::parse(row.try_get("health")?)?,
                    master_key_version: to_u32(
                        row.try_get("master_key_version")?,
                        "master_key_version",
                    )?,
                    created_at_us: row.try_get("created_at_us")?,
                    updated_at_us: row.try_get("updated_at_us")?,
                })
            }

            fn model(row: &DbRow) -> StoreResult<Model> {
                Ok(Model {
                    id: row.try_get("id")?,
                    organization: row.try_get("organization")?,
                    name: row.try_get("name")?,
                    deployments: Vec::new(),
                    input_price_micros_per_mtok: row.try_get("input_price_micros_per_mtok")?,
                    output_price_micros_per_mtok: row.try_get("output_price_micros_per_mtok")?,
                    context_window: to_u32(row.try_get("context_window")?, "context_window")?,
                    created_at_us: row.try_get("created_at_us")?,
                    updated_at_us: row.try_get("updated_at_us")?,
                    cached_input_price_micros_per_mtok: row
                        .try_get("cached_input_price_micros_per_mtok")?,
                    price_source: PriceSource::parse(row.try_get("price_source")?)?,
                    catalog_id: row.try_get("catalog_id")?,
                })
            }

            fn virtual_key(row: &DbRow) -> StoreResult<VirtualKey> {
                Ok(VirtualKey {
                    id: row.try_get("id")?,
                    organization: row.try_get("organization")?,
                    project: row.try_get("project")?,
                    name: row.try_get("name")?,
                    prefix: row.try_get("prefix")?,
                    allowed_models: models_from_json(row.try_get("allowed_models")?)?,
                    expires_at_us: row.try_get("expires_at_us")?,
                    revoked_at_us: row.try_get("revoked_at_us")?,
                    created_at_us: row.try_get("created_at_us")?,
                    updated_at_us: row.try_get("updated_at_us")?,
                })
            }

            fn admin_token(row: &DbRow) -> StoreResult<AdminToken> {
                Ok(AdminToken {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    scope: TokenScope::parse(row.try_get("scope")?)?,
                    prefix: row.try_get("prefix")?,
                    created_at_us: row.try_get("created_at_us")?,
                    revoked_at_us: row.try_get("revoked_at_us")?,
                })
            }

            fn audit_event(row: &DbRow) -> StoreResult<AuditEvent> {
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    at_us: row.try_get("at_us")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    detail: row.try_get("detail")?,
                })
            }

            fn proxy_status(row: &DbRow) -> StoreResult<ProxyStatus> {
                Ok(ProxyStatus {
                    proxy_id: row.try_get("proxy_id")?,
                    address: row.try_get("address")?,
                    connected: row.try_get("connected")?,
                    acked_version: to_u64(row.try_get("acked_version")?, "acked_version")?,
                    nacked_version: to_u64(row.try_get("nacked_version")?, "nacked_version")?,
                    nack_reason: row.try_get("nack_reason")?,
                    first_seen_us: row.try_get("first_seen_us")?,
                    last_seen_us: row.try_get("last_seen_us")?,
                })
            }

            fn usage_record(row: &DbRow) -> StoreResult<UsageRecord> {
                Ok(UsageRecord {
                    request_id: row.try_get("request_id")?,
                    started_at_us: row.try_get("started_at_us")?,
                    project_id: row.try_get("project_id")?,
                    virtual_key_id: row.try_get("virtual_key_id")?,
                    model: row.try_get("model")?,
                    provider_id: row.try_get("provider_id")?,
                    input_tokens: row.try_get("input_tokens")?,
                    output_tokens: row.try_get("output_tokens")?,
                    cached_input_tokens: row.try_get("cached_input_tokens")?,
                    reasoning_tokens: row.try_get("reasoning_tokens")?,
                    cost_micros: row.try_get("cost_micros")?,
                    latency_ms: row.try_get("latency_ms")?,
                    http_status: row.try_get("http_status")?,
                    source: UsageSource::parse(row.try_get("source")?)?,
                    run_id: row.try_get("run_id")?,
                    task_id: row.try_get("task_id")?,
                    tags: tags_from_json(row.try_get("tags")?),
                    lease_epoch: row.try_get("lease_epoch")?,
                })
            }

            /// Makes sure the proxy has a row, so later updates have something to change.
            async fn ensure_proxy(tx: &mut Tx, proxy_id: &str, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO proxies (proxy_id, address, connected, acked_version, \
                     nacked_version, nack_reason, first_seen_us, last_seen_us) \
                     VALUES ($1, '', FALSE, 0, 0, '', $2, $2) ON CONFLICT (proxy_id) DO NOTHING",
                )
                .bind(proxy_id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            // === transaction helpers ===

            /// Bumps the config version and appends the audit event: the last step of every
            /// change, inside its transaction.
            async fn record_change(tx: &mut Tx, audit: &Audit) -> StoreResult<()> {
                sqlx::query("UPDATE config_state SET version = version + 1 WHERE id = 1")
                    .execute(&mut **tx)
                    .await?;
                record_audit(tx, audit).await
            }

            /// An audit event for something proxies need not hear about (no new version).
            async fn record_audit(tx: &mut Tx, audit: &Audit) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audit_events (id, at_us, actor, action, target, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(new_id())
                .bind(now_us())
                .bind(&audit.actor)
                .bind(audit.action)
                .bind(&audit.target)
                .bind(&audit.detail)
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn org_id(tx: &mut Tx, org: &str) -> StoreResult<String> {
                sqlx::query_scalar("SELECT id FROM organizations WHERE name = $1")
                    .bind(org)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found(format!("organization '{org}'")))
            }

            async fn project_id(tx: &mut Tx, org: &str, name: &str) -> StoreResult<String> {
                sqlx::query_scalar(
                    "SELECT p.id FROM projects p JOIN organizations o ON o.id = p.org_id \
                     WHERE o.name = $1 AND p.name = $2",
                )
                .bind(org)
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| StoreError::not_found(format!("project '{org}/{name}'")))
            }

            async fn provider_id(tx: &mut Tx, org: &str, name: &str) -> StoreResult<String> {
                sqlx::query_scalar(
                    "SELECT p.id FROM providers p JOIN organizations o ON o.id = p.org_id \
                     WHERE o.name = $1 AND p.name = $2",
                )
                .bind(org)
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| StoreError::not_found(format!("provider '{org}/{name}'")))
            }

            async fn model_id(tx: &mut Tx, org: &str, name: &str) -> StoreResult<String> {
                sqlx::query_scalar(
                    "SELECT m.id FROM models m JOIN organizations o ON o.id = m.org_id \
                     WHERE o.name = $1 AND m.name = $2",
                )
                .bind(org)
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| StoreError::not_found(format!("model '{org}/{name}'")))
            }

            async fn require_models(tx: &mut Tx, org: &str, names: &[String]) -> StoreResult<()> {
                for name in names {
                    model_id(tx, org, name).await?;
                }
                Ok(())
            }

            async fn fetch_project(tx: &mut Tx, org: &str, name: &str) -> StoreResult<Project> {
                let sql = format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects p \
                     JOIN organizations o ON o.id = p.org_id WHERE o.name = $1 AND p.name = $2"
                );
                let row = sqlx::query(&sql)
                    .bind(org)
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found(format!("project '{org}/{name}'")))?;
                project(&row)
            }

            async fn fetch_provider(tx: &mut Tx, org: &str, name: &str) -> StoreResult<Provider> {
                let sql = format!(
                    "SELECT {PROVIDER_COLUMNS} FROM providers p \
                     JOIN organizations o ON o.id = p.org_id WHERE o.name = $1 AND p.name = $2"
                );
                let row = sqlx::query(&sql)
                    .bind(org)
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| StoreError::not_found(format!("provider '{org}/{name}'")))?;
                provider(&row)
            }

            async fn fetch_provider_key(
                tx: &mut Tx,
                org: &str,
                provider: &str,
                name: &str,
            ) -> StoreResult<ProviderKey> {
                let sql = format!(
                    "SELECT {PROVIDER_KEY_COLUMNS} FROM {PROVIDER_KEY_FROM} \
                     WHERE o.name = $1 AND p.name = $2 AND k.name = $3"
                );
                let row = sqlx::query(&sql)
                    .bind(org)
                    .bind(provider)
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| {
                        StoreError::not_found(format!("provider key '{org}/{provider}/{name}'"))
                    })?;
                provider_key(&row)
            }

            async fn fetch_models(
                tx: &mut Tx,
                org: &str,
                name: Option<&str>,
            ) -> StoreResult<Vec<Model>> {
                let sql = format!(
                    "SELECT {MODEL_COLUMNS} FROM models m JOIN organizations o ON o.id = m.org_id \
                     WHERE o.name = $1 AND ($2 = '' OR m.name = $2) ORDER BY m.name"
                );
                let rows = sqlx::query(&sql)
                    .bind(org)
                    .bind(name.unwrap_or(""))
                    .fetch_all(&mut **tx)
                    .await?;
                let mut models = rows.iter().map(model).collect::<StoreResult<Vec<_>>>()?;
                let deployments = sqlx::query(
                    "SELECT d.model_id, p.name AS provider, d.upstream_model, d.weight, \
                     d.priority FROM deployments d JOIN providers p ON p.id = d.provider_id \
                     JOIN models m ON m.id = d.model_id JOIN organizations o ON o.id = m.org_id \
                     WHERE o.name = $1 AND ($2 = '' OR m.name = $2) \
                     ORDER BY d.model_id, d.position",
                )
                .bind(org)
                .bind(name.unwrap_or(""))
                .fetch_all(&mut **tx)
                .await?;
                for row in &deployments {
                    let model_id: String = row.try_get("model_id")?;
                    let deployment = Deployment {
                        provider: row.try_get("provider")?,
                        upstream_model: row.try_get("upstream_model")?,
                        weight: to_u32(row.try_get("weight")?, "weight")?,
                        priority: to_u32(row.try_get("priority")?, "priority")?,
                    };
                    if let Some(model) = models.iter_mut().find(|m| m.id == model_id) {
                        model.deployments.push(deployment);
                    }
                }
                Ok(models)
            }

            async fn fetch_model(tx: &mut Tx, org: &str, name: &str) -> StoreResult<Model> {
                fetch_models(tx, org, Some(name))
                    .await?
                    .pop()
                    .ok_or_else(|| StoreError::not_found(format!("model '{org}/{name}'")))
            }

            async fn insert_deployments(
                tx: &mut Tx,
                org: &str,
                model_id: &str,
                deployments: &[Deployment],
            ) -> StoreResult<()> {
                for (position, deployment) in deployments.iter().enumerate() {
                    let provider_id = provider_id(tx, org, &deployment.provider).await?;
                    sqlx::query(
                        "INSERT INTO deployments \
                         (model_id, position, provider_id, upstream_model, weight, priority) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(model_id)
                    .bind(i64::try_from(position).unwrap_or(i64::MAX))
                    .bind(provider_id)
                    .bind(&deployment.upstream_model)
                    .bind(i64::from(deployment.weight))
                    .bind(i64::from(deployment.priority))
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            async fn fetch_virtual_key(
                tx: &mut Tx,
                org: &str,
                project: &str,
                name: &str,
            ) -> StoreResult<VirtualKey> {
                let sql = format!(
                    "SELECT {VIRTUAL_KEY_COLUMNS} FROM {VIRTUAL_KEY_FROM} \
                     WHERE o.name = $1 AND p.name = $2 AND v.name = $3"
                );
                let row = sqlx::query(&sql)
                    .bind(org)
                    .bind(project)
                    .bind(name)
                    .fetch_optional(&mut **tx)
                    .await?
                    .ok_or_else(|| {
                        StoreError::not_found(format!("virtual key '{org}/{project}/{name}'"))
                    })?;
                virtual_key(&row)
            }

            async fn insert_provider_key(
                tx: &mut Tx,
                provider_id: &str,
                new: &NewProviderKey,
                target: &str,
            ) -> StoreResult<()> {
                let now = now_us();
                sqlx::query(
                    "INSERT INTO provider_keys (id, provider_id, name, state, sealed_secret, \
                     master_key_version, last_four, fingerprint, health, created_at_us, \
                     updated_at_us) VALUES ($1, $2, $3, 'ACTIVE', $4, $5, $6, $7, 'UNKNOWN', $8, $8)",
                )
                .bind(&new.id)
                .bind(provider_id)
                .bind(&new.name)
                .bind(&new.sealed_secret)
                .bind(i64::from(new.master_key_version))
                .bind(&new.last_four)
                .bind(&new.fingerprint)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(|e| write_error(e, || format!("provider key '{target}'"), ""))?;
                Ok(())
            }

            async fn set_key_state(
                tx: &mut Tx,
                org: &str,
                provider: &str,
                name: &str,
                state: KeyState,
            ) -> StoreResult<ProviderKey> {
                let key = fetch_provider_key(tx, org, provider, name).await?;
                sqlx::query("UPDATE provider_keys SET state = $1, updated_at_us = $2 WHERE id = $3")
                    .bind(state.as_str())
                    .bind(now_us())
                    .bind(&key.id)
                    .execute(&mut **tx)
                    .await?;
                fetch_provider_key(tx, org, provider, name).await
            }

            impl Store for $store {
                async fn config_version(&self) -> StoreResult<u64> {
                    let version: i64 =
                        sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
                            .fetch_one(&self.pool)
                            .await?;
                    to_u64(version, "config version")
                }

                // === organizations ===

                async fn create_organization(
                    &self,
                    new: NewOrganization,
                    audit: Audit,
                ) -> StoreResult<Organization> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let now = now_us();
                    let id = new_id();
                    sqlx::query(
                        "INSERT INTO organizations \
                         (id, name, display_name, created_at_us, updated_at_us) \
                         VALUES ($1, $2, $3, $4, $4)",
                    )
                    .bind(&id)
                    .bind(&new.name)
                    .bind(&new.display_name)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, || format!("organization '{}'", new.name), ""))?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(Organization {
                        id,
                        name: new.name,
                        display_name: new.display_name,
                        created_at_us: now,
                        updated_at_us: now,
                    })
                }

                async fn get_organization(&self, name: &str) -> StoreResult<Organization> {
                    let sql = format!(
                        "SELECT {ORGANIZATION_COLUMNS} FROM organizations o WHERE o.name = $1"
                    );
                    let row = sqlx::query(&sql)
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or_else(|| StoreError::not_found(format!("organization '{name}'")))?;
                    organization(&row)
                }

                async fn list_organizations(
                    &self,
                    name_prefix: &str,
                ) -> StoreResult<Vec<Organization>> {
                    let sql = format!(
                        "SELECT {ORGANIZATION_COLUMNS} FROM organizations o \
                         WHERE substr(o.name, 1, length($1)) = $1 ORDER BY o.name"
                    );
                    let rows = sqlx::query(&sql).bind(name_prefix).fetch_all(&self.pool).await?;
                    rows.iter().map(organization).collect()
                }

                async fn update_organization(
                    &self,
                    name: &str,
                    display_name: Option<String>,
                    audit: Audit,
                ) -> StoreResult<Organization> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let id = org_id(&mut tx, name).await?;
                    if let Some(display_name) = display_name {
                        sqlx::query(
                            "UPDATE organizations SET display_name = $1, updated_at_us = $2 \
                             WHERE id = $3",
                        )
                        .bind(display_name)
                        .bind(now_us())
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    self.get_organization(name).await
                }

                async fn delete_organization(&self, name: &str, audit: Audit) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let id = org_id(&mut tx, name).await?;
                    sqlx::query("DELETE FROM organizations WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            write_error(
                                e,
                                || format!("organization '{name}'"),
                                "still has projects, providers or models: delete them first",
                            )
                        })?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(())
                }

                // === projects ===

                async fn create_project(
                    &self,
                    org: &str,
                    new: NewProject,
                    audit: Audit,
                ) -> StoreResult<Project> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let org_id = org_id(&mut tx, org).await?;
                    if !new.default_model.is_empty() {
                        model_id(&mut tx, org, &new.default_model).await?;
                    }
                    let now = now_us();
                    sqlx::query(
                        "INSERT INTO projects (id, org_id, name, display_name, posture, \
                         default_model, created_at_us, updated_at_us) \
                         VALUES ($1, $2, $3, $4, 'MOCK', $5, $6, $6)",
                    )
                    .bind(new_id())
                    .bind(&org_id)
                    .bind(&new.name)
                    .bind(&new.display_name)
                    .bind(&new.default_model)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, || format!("project '{org}/{}'", new.name), ""))?;
                    record_change(&mut tx, &audit).await?;
                    let created = fetch_project(&mut tx, org, &new.name).await?;
                    tx.commit().await?;
                    Ok(created)
                }

                async fn get_project(&self, org: &str, name: &str) -> StoreResult<Project> {
                    let mut tx = self.pool.begin().await?;
                    fetch_project(&mut tx, org, name).await
                }

                async fn list_projects(&self, org: &str) -> StoreResult<Vec<Project>> {
                    let mut tx = self.pool.begin().await?;
                    org_id(&mut tx, org).await?;
                    let sql = format!(
                        "SELECT {PROJECT_COLUMNS} FROM projects p \
                         JOIN organizations o ON o.id = p.org_id WHERE o.name = $1 ORDER BY p.name"
                    );
                    let rows = sqlx::query(&sql).bind(org).fetch_all(&mut *tx).await?;
                    rows.iter().map(project).collect()
                }

                async fn update_project(
                    &self,
                    org: &str,
                    name: &str,
                    patch: ProjectPatch,
                    audit: Audit,
                ) -> StoreResult<Project> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_project(&mut tx, org, name).await?;
                    if let Some(model) = patch.default_model.as_deref().filter(|m| !m.is_empty()) {
                        model_id(&mut tx, org, model).await?;
                    }
                    sqlx::query(
                        "UPDATE projects SET display_name = $1, default_model = $2, \
                         posture = $3, updated_at_us = $4 WHERE id = $5",
                    )
                    .bind(patch.display_name.unwrap_or(current.display_name))
                    .bind(patch.default_model.unwrap_or(current.default_model))
                    .bind(patch.posture.unwrap_or(current.posture).as_str())
                    .bind(now_us())
                    .bind(&current.id)
                    .execute(&mut *tx)
                    .await?;
                    record_change(&mut tx, &audit).await?;
                    let updated = fetch_project(&mut tx, org, name).await?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn delete_project(
                    &self,
                    org: &str,
                    name: &str,
                    audit: Audit,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let id = project_id(&mut tx, org, name).await?;
                    sqlx::query("DELETE FROM projects WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            write_error(
                                e,
                                || format!("project '{org}/{name}'"),
                                "still has virtual keys: delete them first",
                            )
                        })?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn project_model_readiness(
                    &self,
                    org: &str,
                    name: &str,
                    without_key: Option<&str>,
                ) -> StoreResult<Vec<ModelReadiness>> {
                    let mut tx = self.pool.begin().await?;
                    let project = fetch_project(&mut tx, org, name).await?;
                    let allowed_lists: Vec<String> = sqlx::query_scalar(
                        "SELECT allowed_models FROM virtual_keys \
                         WHERE project_id = $1 AND revoked_at_us = 0",
                    )
                    .bind(&project.id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let counts = sqlx::query(
                        // vLLM and custom providers may serve without a key: an active one
                        // counts as a usable route by itself.
                        "SELECT m.name, COUNT(DISTINCT k.id) + COUNT(DISTINCT CASE WHEN \
                         p.kind IN ('VLLM', 'CUSTOM') THEN p.id END) AS usable FROM models m \
                         JOIN organizations o ON o.id = m.org_id \
                         LEFT JOIN deployments d ON d.model_id = m.id \
                         LEFT JOIN providers p ON p.id = d.provider_id AND p.active = TRUE \
                         LEFT JOIN provider_keys k ON k.provider_id = p.id \
                             AND k.state IN ('ACTIVE', 'RETIRING') \
                             AND k.health NOT IN ('INVALID_CREDENTIALS', 'NO_MODEL_ACCESS') \
                             AND k.id <> $2 \
                         WHERE o.name = $1 GROUP BY m.name ORDER BY m.name",
                    )
                    .bind(org)
                    // Ids are never empty, so "" leaves out no key.
                    .bind(without_key.unwrap_or_default())
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut usable = std::collections::BTreeMap::new();
                    for row in &counts {
                        let count: i64 = row.try_get("usable")?;
                        usable.insert(row.try_get::<String, _>("name")?, to_u64(count, "usable")?);
                    }

                    let mut wanted = std::collections::BTreeSet::new();
                    for list in &allowed_lists {
                        let models = models_from_json(list)?;
                        if models.is_empty() {
                            wanted.extend(usable.keys().cloned());
                        } else {
                            wanted.extend(models);
                        }
                    }
                    if !project.default_model.is_empty() {
                        wanted.insert(project.default_model.clone());
                    }
                    Ok(wanted
                        .into_iter()
                        .map(|model| ModelReadiness {
                            usable_keys: usable.get(&model).copied().unwrap_or(0),
                            model,
                        })
                        .collect())
                }

                // === providers ===

                async fn create_provider(
                    &self,
                    org: &str,
                    new: NewProvider,
                    audit: Audit,
                ) -> StoreResult<Provider> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let org_id = org_id(&mut tx, org).await?;
                    let now = now_us();
                    sqlx::query(
                        "INSERT INTO providers (id, org_id, name, kind, base_url, api_version, \
                         timeout_ms, extra_headers, active, allow_private_network, \
                         created_at_us, updated_at_us) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9, $10, $10)",
                    )
                    .bind(new_id())
                    .bind(&org_id)
                    .bind(&new.name)
                    .bind(new.kind.as_str())
                    .bind(&new.base_url)
                    .bind(&new.api_version)
                    .bind(i64::from(new.timeout_ms))
                    .bind(to_json(&new.extra_headers)?)
                    .bind(new.allow_private_network)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, || format!("provider '{org}/{}'", new.name), ""))?;
                    record_change(&mut tx, &audit).await?;
                    let created = fetch_provider(&mut tx, org, &new.name).await?;
                    tx.commit().await?;
                    Ok(created)
                }

                async fn get_provider(&self, org: &str, name: &str) -> StoreResult<Provider> {
                    let mut tx = self.pool.begin().await?;
                    fetch_provider(&mut tx, org, name).await
                }

                async fn list_providers(&self, org: &str) -> StoreResult<Vec<Provider>> {
                    let mut tx = self.pool.begin().await?;
                    org_id(&mut tx, org).await?;
                    let sql = format!(
                        "SELECT {PROVIDER_COLUMNS} FROM providers p \
                         JOIN organizations o ON o.id = p.org_id WHERE o.name = $1 ORDER BY p.name"
                    );
                    let rows = sqlx::query(&sql).bind(org).fetch_all(&mut *tx).await?;
                    rows.iter().map(provider).collect()
                }

                async fn update_provider(
                    &self,
                    org: &str,
                    name: &str,
                    patch: ProviderPatch,
                    audit: Audit,
                ) -> StoreResult<Provider> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_provider(&mut tx, org, name).await?;
                    sqlx::query(
                        "UPDATE providers SET base_url = $1, api_version = $2, timeout_ms = $3, \
                         extra_headers = $4, active = $5, allow_private_network = $6, \
                         updated_at_us = $7 WHERE id = $8",
                    )
                    .bind(patch.base_url.unwrap_or(current.base_url))
                    .bind(patch.api_version.unwrap_or(current.api_version))
                    .bind(i64::from(patch.timeout_ms.unwrap_or(current.timeout_ms)))
                    .bind(to_json(&patch.extra_headers.unwrap_or(current.extra_headers))?)
                    .bind(patch.active.unwrap_or(current.active))
                    .bind(patch.allow_private_network.unwrap_or(current.allow_private_network))
                    .bind(now_us())
                    .bind(&current.id)
                    .execute(&mut *tx)
                    .await?;
                    record_change(&mut tx, &audit).await?;
                    let updated = fetch_provider(&mut tx, org, name).await?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn delete_provider(
                    &self,
                    org: &str,
                    name: &str,
                    audit: Audit,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let id = provider_id(&mut tx, org, name).await?;
                    sqlx::query("DELETE FROM providers WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            write_error(
                                e,
                                || format!("provider '{org}/{name}'"),
                                "still has keys or model deployments: remove them first",
                            )
                        })?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(())
                }

                // === provider keys ===

                async fn create_provider_key(
                    &self,
                    org: &str,
                    provider: &str,
                    new: NewProviderKey,
                    audit: Audit,
                ) -> StoreResult<ProviderKey> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let provider_id = provider_id(&mut tx, org, provider).await?;
                    let target = format!("{org}/{provider}/{}", new.name);
                    insert_provider_key(&mut tx, &provider_id, &new, &target).await?;
                    record_change(&mut tx, &audit).await?;
                    let created = fetch_provider_key(&mut tx, org, provider, &new.name).await?;
                    tx.commit().await?;
                    Ok(created)
                }

                async fn get_provider_key(
                    &self,
                    org: &str,
                    provider: &str,
                    name: &str,
                ) -> StoreResult<ProviderKey> {
                    let mut tx = self.pool.begin().await?;
                    fetch_provider_key(&mut tx, org, provider, name).await
                }

                async fn sealed_provider_key(
                    &self,
                    org: &str,
                    provider: &str,
                    name: &str,
                ) -> StoreResult<SealedKey> {
                    let row: Option<(String, String, Vec<u8>)> = sqlx::query_as(
                        "SELECT k.id, p.org_id, k.sealed_secret FROM provider_keys k \
                         JOIN providers p ON p.id = k.provider_id \
                         JOIN organizations o ON o.id = p.org_id \
                         WHERE o.name = $1 AND p.name = $2 AND k.name = $3",
                    )
                    .bind(org)
                    .bind(provider)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                    let (id, org_id, sealed_secret) = row.ok_or_else(|| {
                        StoreError::not_found(format!("provider key '{org}/{provider}/{name}'"))
                    })?;
                    Ok(SealedKey {
                        id,
                        org_id,
                        sealed_secret,
                    })
                }

                async fn mark_provider_key_health(
                    &self,
                    key_id: &str,
                    health: KeyHealth,
                    audit: Audit,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let changed = sqlx::query(
                        "UPDATE provider_keys SET health = $1, updated_at_us = $2 \
                         WHERE id = $3 AND health <> $1",
                    )
                    .bind(health.as_str())
                    .bind(now_us())
                    .bind(key_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    // Only a change is worth an audit event (a burst of rejections is one) and
                    // a new config version: proxies put keys known to fail behind the others.
                    if changed > 0 {
                        record_change(&mut tx, &audit).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn set_provider_key_health(
                    &self,
                    org: &str,
                    provider: &str,
                    name: &str,
                    health: KeyHealth,
                    audit: Audit,
                ) -> StoreResult<ProviderKey> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let key = fetch_provider_key(&mut tx, org, provider, name).await?;
                    sqlx::query("UPDATE provider_keys SET health = $1, updated_at_us = $2 WHERE id = $3")
                        .bind(health.as_str())
                        .bind(now_us())
                        .bind(&key.id)
                        .execute(&mut *tx)
                        .await?;
                    // Proxies try keys known to fail last, so a change of health is a change
                    // of config.
                    if key.health == health {
                        record_audit(&mut tx, &audit).await?;
                    } else {
                        record_change(&mut tx, &audit).await?;
                    }
                    let updated = fetch_provider_key(&mut tx, org, provider, name).await?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn list_provider_keys(
                    &self,
                    org: &str,
                    provider: &str,
                ) -> StoreResult<Vec<ProviderKey>> {
                    let mut tx = self.pool.begin().await?;
                    org_id(&mut tx, org).await?;
                    if !provider.is_empty() {
                        provider_id(&mut tx, org, provider).await?;
                    }
                    let sql = format!(
                        "SELECT {PROVIDER_KEY_COLUMNS} FROM {PROVIDER_KEY_FROM} \
                         WHERE o.name = $1 AND ($2 = '' OR p.name = $2) ORDER BY p.name, k.name"
                    );
                    let rows =
                        sqlx::query(&sql).bind(org).bind(provider).fetch_all(&mut *tx).await?;
                    rows.iter().map(provider_key).collect()
                }

                async fn rotate_provider_key(
                    &self,
                    org: &str,
                    provider: &str,
                    name: &str,
                    new: NewProviderKey,
                    audit: Audit,
                ) -> StoreResult<(ProviderKey, ProviderKey)> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let old = fetch_provider_key(&mut tx, org, provider, name).await?;
                    if old.state != KeyState::Active {
                        return Err(StoreError::FailedPrecondition(format!(
                            "provider key '{org}/{provider}/{name}' is {}, only an ACTIVE key \
                             can be rotated",
                            old.state.as_str()
                        )));
                    }
                    let provider_id = provider_id(&mut tx, org, provider).await?;
                    let target = format!("{org}/{provider}/{}", new.name);
                    insert_provider_key(&mut tx, &provider_id, &new, &target).await?;
                    let retiring =
                        set_key_state(&mut tx, org, provider, name, KeyState::Retiring).await?;
                    record_change(&mut tx, &audit).await?;
                    let active = fetch_provider_key(&mut tx, org, provider, &new.name).await?;
                    tx.commit().await?;
                    Ok((retiring, active))
                }

                async fn revoke_provider_key(
                    &self,
                    org: &str,
                    provider: &str,
                    name: &str,
                    audit: Audit,
                ) -> StoreResult<ProviderKey> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let revoked =
                        set_key_state(&mut tx, org, provider, name, KeyState::Revoked).await?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(revoked)
                }

                async fn delete_provider_key(
                    &self,
                    org: &str,
                    provider: &str,
                    name: &str,
                    audit: Audit,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let key = fetch_provider_key(&mut tx, org, provider, name).await?;
                    if key.state != KeyState::Revoked {
                        return Err(StoreError::FailedPrecondition(format!(
                            "provider key '{org}/{provider}/{name}' is {}: revoke it before \
                             deleting it",
                            key.state.as_str()
                        )));
                    }
                    sqlx::query("DELETE FROM provider_keys WHERE id = $1")
                        .bind(&key.id)
                        .execute(&mut *tx)
                        .await?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn sealed_keys_not_under(
                    &self,
                    version: u32,
                    limit: u32,
                ) -> StoreResult<Vec<SealedKey>> {
                    let rows = sqlx::query(
                        "SELECT k.id, p.org_id, k.sealed_secret FROM provider_keys k \
                         JOIN providers p ON p.id = k.provider_id \
                         WHERE k.master_key_version <> $1 ORDER BY k.id LIMIT $2",
                    )
                    .bind(i64::from(version))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok(SealedKey {
                                id: row.try_get("id")?,
                                org_id: row.try_get("org_id")?,
                                sealed_secret: row.try_get("sealed_secret")?,
                            })
                        })
                        .collect()
                }

                async fn replace_sealed_secret(
                    &self,
                    id: &str,
                    previous: &[u8],
                    sealed: Vec<u8>,
                    master_key_version: u32,
                ) -> StoreResult<bool> {
                    let result = sqlx::query(
                        "UPDATE provider_keys SET sealed_secret = $1, master_key_version = $2 \
                         WHERE id = $3 AND sealed_secret = $4",
                    )
                    .bind(sealed)
                    .bind(i64::from(master_key_version))
                    .bind(id)
                    .bind(previous)
                    .execute(self.writer())
                    .await?;
                    Ok(result.rows_affected() == 1)
                }

                async fn provider_keys_per_master_key_version(
                    &self,
                ) -> StoreResult<Vec<(u32, u64)>> {
                    let rows = sqlx::query(
                        "SELECT master_key_version, COUNT(*) AS keys FROM provider_keys \
                         GROUP BY master_key_version ORDER BY master_key_version",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok((
                                to_u32(row.try_get("master_key_version")?, "master_key_version")?,
                                to_u64(row.try_get("keys")?, "keys")?,
                            ))
                        })
                        .collect()
                }

                // === models ===

                async fn create_model(
                    &self,
                    org: &str,
                    new: NewModel,
                    audit: Audit,
                ) -> StoreResult<Model> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let org_id = org_id(&mut tx, org).await?;
                    let id = new_id();
                    sqlx::query(
                        "INSERT INTO models (id, org_id, name, input_price_micros_per_mtok, \
                         output_price_micros_per_mtok, context_window, created_at_us, \
                         updated_at_us, cached_input_price_micros_per_mtok, price_source, \
                         catalog_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10)",
                    )
                    .bind(&id)
                    .bind(&org_id)
                    .bind(&new.name)
                    .bind(new.input_price_micros_per_mtok)
                    .bind(new.output_price_micros_per_mtok)
                    .bind(i64::from(new.context_window))
                    .bind(now_us())
                    .bind(new.cached_input_price_micros_per_mtok)
                    .bind(new.price_source.as_str())
                    .bind(&new.catalog_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, || format!("model '{org}/{}'", new.name), ""))?;
                    insert_deployments(&mut tx, org, &id, &new.deployments).await?;
                    record_change(&mut tx, &audit).await?;
                    let created = fetch_model(&mut tx, org, &new.name).await?;
                    tx.commit().await?;
                    Ok(created)
                }

                async fn get_model(&self, org: &str, name: &str) -> StoreResult<Model> {
                    let mut tx = self.pool.begin().await?;
                    fetch_model(&mut tx, org, name).await
                }

                async fn list_models(&self, org: &str) -> StoreResult<Vec<Model>> {
                    let mut tx = self.pool.begin().await?;
                    org_id(&mut tx, org).await?;
                    fetch_models(&mut tx, org, None).await
                }

                async fn update_model(
                    &self,
                    org: &str,
                    name: &str,
                    patch: ModelPatch,
                    audit: Audit,
                ) -> StoreResult<Model> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_model(&mut tx, org, name).await?;
                    sqlx::query(
                        "UPDATE models SET input_price_micros_per_mtok = $1, \
                         output_price_micros_per_mtok = $2, context_window = $3, \
                         updated_at_us = $4, cached_input_price_micros_per_mtok = $6, \
                         price_source = $7, catalog_id = $8 WHERE id = $5",
                    )
                    .bind(
                        patch
                            .input_price_micros_per_mtok
                            .unwrap_or(current.input_price_micros_per_mtok),
                    )
                    .bind(
                        patch
                            .output_price_micros_per_mtok
                            .unwrap_or(current.output_price_micros_per_mtok),
                    )
                    .bind(i64::from(patch.context_window.unwrap_or(current.context_window)))
                    .bind(now_us())
                    .bind(&current.id)
                    .bind(
                        patch
                            .cached_input_price_micros_per_mtok
                            .unwrap_or(current.cached_input_price_micros_per_mtok),
                    )
                    .bind(patch.price_source.unwrap_or(current.price_source).as_str())
                    .bind(patch.catalog_id.as_ref().unwrap_or(&current.catalog_id))
                    .execute(&mut *tx)
                    .await?;
                    if let Some(deployments) = &patch.deployments {
                        sqlx::query("DELETE FROM deployments WHERE model_id = $1")
                            .bind(&current.id)
                            .execute(&mut *tx)
                            .await?;
                        insert_deployments(&mut tx, org, &current.id, deployments).await?;
                    }
                    record_change(&mut tx, &audit).await?;
                    let updated = fetch_model(&mut tx, org, name).await?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn delete_model(&self, org: &str, name: &str, audit: Audit) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let id = model_id(&mut tx, org, name).await?;
                    sqlx::query("DELETE FROM models WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(())
                }

                // === virtual keys ===

                async fn create_virtual_key(
                    &self,
                    org: &str,
                    project: &str,
                    new: NewVirtualKey,
                    audit: Audit,
                ) -> StoreResult<VirtualKey> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let project_id = project_id(&mut tx, org, project).await?;
                    require_models(&mut tx, org, &new.allowed_models).await?;
                    sqlx::query(
                        "INSERT INTO virtual_keys (id, project_id, name, prefix, key_hash, \
                         allowed_models, expires_at_us, revoked_at_us, created_at_us, \
                         updated_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
                    )
                    .bind(&new.id)
                    .bind(&project_id)
                    .bind(&new.name)
                    .bind(&new.prefix)
                    .bind(&new.key_hash)
                    .bind(to_json(&new.allowed_models)?)
                    .bind(new.expires_at_us)
                    .bind(now_us())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        write_error(e, || format!("virtual key '{org}/{project}/{}'", new.name), "")
                    })?;
                    record_change(&mut tx, &audit).await?;
                    let created = fetch_virtual_key(&mut tx, org, project, &new.name).await?;
                    tx.commit().await?;
                    Ok(created)
                }

                async fn get_virtual_key(
                    &self,
                    org: &str,
                    project: &str,
                    name: &str,
                ) -> StoreResult<VirtualKey> {
                    let mut tx = self.pool.begin().await?;
                    fetch_virtual_key(&mut tx, org, project, name).await
                }

                async fn list_virtual_keys(
                    &self,
                    org: &str,
                    project: &str,
                    prefix: &str,
                ) -> StoreResult<Vec<VirtualKey>> {
                    let mut tx = self.pool.begin().await?;
                    project_id(&mut tx, org, project).await?;
                    let sql = format!(
                        "SELECT {VIRTUAL_KEY_COLUMNS} FROM {VIRTUAL_KEY_FROM} \
                         WHERE o.name = $1 AND p.name = $2 \
                         AND substr(v.prefix, 1, length($3)) = $3 ORDER BY v.name"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(org)
                        .bind(project)
                        .bind(prefix)
                        .fetch_all(&mut *tx)
                        .await?;
                    rows.iter().map(virtual_key).collect()
                }

                async fn update_virtual_key(
                    &self,
                    org: &str,
                    project: &str,
                    name: &str,
                    patch: VirtualKeyPatch,
                    audit: Audit,
                ) -> StoreResult<VirtualKey> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_virtual_key(&mut tx, org, project, name).await?;
                    if let Some(models) = &patch.allowed_models {
                        require_models(&mut tx, org, models).await?;
                    }
                    sqlx::query(
                        "UPDATE virtual_keys SET allowed_models = $1, expires_at_us = $2, \
                         updated_at_us = $3 WHERE id = $4",
                    )
                    .bind(to_json(&patch.allowed_models.unwrap_or(current.allowed_models))?)
                    .bind(patch.expires_at_us.unwrap_or(current.expires_at_us))
                    .bind(now_us())
                    .bind(&current.id)
                    .execute(&mut *tx)
                    .await?;
                    record_change(&mut tx, &audit).await?;
                    let updated = fetch_virtual_key(&mut tx, org, project, name).await?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn revoke_virtual_key(
                    &self,
                    org: &str,
                    project: &str,
                    name: &str,
                    audit: Audit,
                ) -> StoreResult<VirtualKey> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_virtual_key(&mut tx, org, project, name).await?;
                    if current.revoked_at_us == 0 {
                        let now = now_us();
                        sqlx::query(
                            "UPDATE virtual_keys SET revoked_at_us = $1, updated_at_us = $1 \
                             WHERE id = $2",
                        )
                        .bind(now)
                        .bind(&current.id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    record_change(&mut tx, &audit).await?;
                    let revoked = fetch_virtual_key(&mut tx, org, project, name).await?;
                    tx.commit().await?;
                    Ok(revoked)
                }

                async fn delete_virtual_key(
                    &self,
                    org: &str,
                    project: &str,
                    name: &str,
                    audit: Audit,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_virtual_key(&mut tx, org, project, name).await?;
                    sqlx::query("DELETE FROM virtual_keys WHERE id = $1")
                        .bind(&current.id)
                        .execute(&mut *tx)
                        .await?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(())
                }

                // === admin tokens ===

                async fn create_admin_token(
                    &self,
                    new: NewAdminToken,
                    audit: Audit,
                ) -> StoreResult<AdminToken> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let now = now_us();
                    sqlx::query(
                        "INSERT INTO admin_tokens (id, name, scope, prefix, token_hash, \
                         created_at_us, revoked_at_us) VALUES ($1, $2, $3, $4, $5, $6, 0)",
                    )
                    .bind(&new.id)
                    .bind(&new.name)
                    .bind(new.scope.as_str())
                    .bind(&new.prefix)
                    .bind(&new.token_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, || format!("admin token '{}'", new.name), ""))?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(AdminToken {
                        id: new.id,
                        name: new.name,
                        scope: new.scope,
                        prefix: new.prefix,
                        created_at_us: now,
                        revoked_at_us: 0,
                    })
                }

                async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminToken>> {
                    let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens ORDER BY name");
                    let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                    rows.iter().map(admin_token).collect()
                }

                async fn revoke_admin_token(
                    &self,
                    name: &str,
                    audit: Audit,
                ) -> StoreResult<AdminToken> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let now = now_us();
                    let sql = format!(
                        "UPDATE admin_tokens SET revoked_at_us = \
                         CASE WHEN revoked_at_us = 0 THEN $1 ELSE revoked_at_us END \
                         WHERE name = $2 RETURNING {ADMIN_TOKEN_COLUMNS}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(now)
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await?
                        .ok_or_else(|| StoreError::not_found(format!("admin token '{name}'")))?;
                    let revoked = admin_token(&row)?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(revoked)
                }

                async fn find_admin_token(&self, token_hash: &str) -> StoreResult<Option<AdminToken>> {
                    let sql = format!(
                        "SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens \
                         WHERE token_hash = $1 AND revoked_at_us = 0"
                    );
                    sqlx::query(&sql)
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await?
                        .as_ref()
                        .map(admin_token)
                        .transpose()
                }

                // === audit ===

                async fn list_audit_events(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEvent>> {
                    let rows = sqlx::query(
                        "SELECT id, at_us, actor, action, target, detail FROM audit_events \
                         WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2) \
                         AND substr(target, 1, length($3)) = $3 \
                         ORDER BY at_us DESC, id DESC LIMIT $4",
                    )
                    .bind(&filter.actor)
                    .bind(&filter.action)
                    .bind(&filter.target_prefix)
                    .bind(i64::from(filter.limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(audit_event).collect()
                }

                // === config snapshots ===

                async fn load_config(&self) -> StoreResult<ConfigState> {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query($snapshot_isolation).execute(&mut *tx).await?;
                    let version: i64 =
                        sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
                            .fetch_one(&mut *tx)
                            .await?;

                    let rows = sqlx::query(
                        "SELECT id, org_id, name, posture, default_model FROM projects ORDER BY id",
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    let projects = rows
                        .iter()
                        .map(|row| {
                            Ok(ConfigProject {
                                id: row.try_get("id")?,
                                org_id: row.try_get("org_id")?,
                                name: row.try_get("name")?,
                                posture: Posture::parse(row.try_get("posture")?)?,
                                default_model: row.try_get("default_model")?,
                            })
                        })
                        .collect::<StoreResult<Vec<_>>>()?;

                    let sql = format!(
                        "SELECT {PROVIDER_COLUMNS}, p.org_id FROM providers p \
                         JOIN organizations o ON o.id = p.org_id WHERE p.active = TRUE ORDER BY p.id"
                    );
                    let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
                    let providers = rows.iter().map(provider).collect::<StoreResult<Vec<_>>>()?;
                    // The snapshot names organizations by id.
                    let mut providers_by_org = Vec::with_capacity(providers.len());
                    for (row, mut provider) in rows.iter().zip(providers) {
                        provider.organization = row.try_get("org_id")?;
                        providers_by_org.push(provider);
                    }

                    let rows = sqlx::query(
                        "SELECT k.id, k.provider_id, p.org_id, k.state, k.sealed_secret \
                         FROM provider_keys k JOIN providers p ON p.id = k.provider_id \
                         WHERE k.state <> 'REVOKED' AND p.active = TRUE \
                         ORDER BY CASE WHEN k.health IN ('INVALID_CREDENTIALS', 'NO_MODEL_ACCESS') \
                         THEN 1 ELSE 0 END, k.id",
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    let provider_keys = rows
                        .iter()
                        .map(|row| {
                            Ok(ConfigProviderKey {
                                id: row.try_get("id")?,
                                provider_id: row.try_get("provider_id")?,
                                org_id: row.try_get("org_id")?,
                                state: KeyState::parse(row.try_get("state")?)?,
                                sealed_secret: row.try_get("sealed_secret")?,
                            })
                        })
                        .collect::<StoreResult<Vec<_>>>()?;

                    let rows = sqlx::query(
                        "SELECT id, org_id, name, input_price_micros_per_mtok, \
                         output_price_micros_per_mtok, context_window, \
                         cached_input_price_micros_per_mtok FROM models ORDER BY id",
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut models = rows
                        .iter()
                        .map(|row| {
                            Ok(ConfigModel {
                                id: row.try_get("id")?,
                                org_id: row.try_get("org_id")?,
                                name: row.try_get("name")?,
                                deployments: Vec::new(),
                                input_price_micros_per_mtok: row
                                    .try_get("input_price_micros_per_mtok")?,
                                output_price_micros_per_mtok: row
                                    .try_get("output_price_micros_per_mtok")?,
                                context_window: to_u32(
                                    row.try_get("context_window")?,
                                    "context_window",
                                )?,
                                cached_input_price_micros_per_mtok: row
                                    .try_get("cached_input_price_micros_per_mtok")?,
                            })
                        })
                        .collect::<StoreResult<Vec<_>>>()?;
                    let rows = sqlx::query(
                        "SELECT model_id, provider_id, upstream_model, weight, priority \
                         FROM deployments ORDER BY model_id, position",
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut deployments: std::collections::HashMap<String, Vec<ConfigDeployment>> =
                        std::collections::HashMap::new();
                    for row in &rows {
                        deployments.entry(row.try_get("model_id")?).or_default().push(
                            ConfigDeployment {
                                provider_id: row.try_get("provider_id")?,
                                upstream_model: row.try_get("upstream_model")?,
                                weight: to_u32(row.try_get("weight")?, "weight")?,
                                priority: to_u32(row.try_get("priority")?, "priority")?,
                            },
                        );
                    }
                    for model in &mut models {
                        model.deployments = deployments.remove(&model.id).unwrap_or_default();
                    }

                    let rows = sqlx::query(
                        "SELECT id, project_id, key_hash, allowed_models, expires_at_us \
                         FROM virtual_keys WHERE revoked_at_us = 0 ORDER BY id",
                    )
                    .fetch_all(&mut *tx)
                    .await?;
                    let virtual_keys = rows
                        .iter()
                        .map(|row| {
                            Ok(ConfigVirtualKey {
                                id: row.try_get("id")?,
                                project_id: row.try_get("project_id")?,
                                key_hash: row.try_get("key_hash")?,
                                allowed_models: models_from_json(row.try_get("allowed_models")?)?,
                                expires_at_us: row.try_get("expires_at_us")?,
                            })
                        })
                        .collect::<StoreResult<Vec<_>>>()?;
                    let budgets = config_budgets(&mut tx).await?;
                    tx.commit().await?;
                    Ok(ConfigState {
                        version: to_u64(version, "config version")?,
                        projects,
                        providers: providers_by_org,
                        provider_keys,
                        models,
                        virtual_keys,
                        budgets,
                    })
                }

                // === fleet ===

                async fn record_proxy_connection(
                    &self,
                    proxy_id: &str,
                    address: &str,
                    connected: bool,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let now = now_us();
                    ensure_proxy(&mut tx, proxy_id, now).await?;
                    sqlx::query(
                        "UPDATE proxies SET address = $1, connected = $2, last_seen_us = $3 \
                         WHERE proxy_id = $4",
                    )
                    .bind(address)
                    .bind(connected)
                    .bind(now)
                    .bind(proxy_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn record_proxy_ack(&self, proxy_id: &str, version: u64) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let now = now_us();
                    ensure_proxy(&mut tx, proxy_id, now).await?;
                    let version = i64::try_from(version).unwrap_or(i64::MAX);
                    sqlx::query(
                        "UPDATE proxies SET acked_version = \
                         CASE WHEN acked_version < $1 THEN $1 ELSE acked_version END, \
                         last_seen_us = $2 WHERE proxy_id = $3",
                    )
                    .bind(version)
                    .bind(now)
                    .bind(proxy_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn record_proxy_nack(
                    &self,
                    proxy_id: &str,
                    version: u64,
                    reason: &str,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let now = now_us();
                    ensure_proxy(&mut tx, proxy_id, now).await?;
                    sqlx::query(
                        "UPDATE proxies SET nacked_version = $1, nack_reason = $2, \
                         last_seen_us = $3 WHERE proxy_id = $4",
                    )
                    .bind(i64::try_from(version).unwrap_or(i64::MAX))
                    .bind(reason)
                    .bind(now)
                    .bind(proxy_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn list_proxies(&self) -> StoreResult<Vec<ProxyStatus>> {
                    let rows = sqlx::query(
                        "SELECT proxy_id, address, connected, acked_version, nacked_version, \
                         nack_reason, first_seen_us, last_seen_us FROM proxies ORDER BY proxy_id",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(proxy_status).collect()
                }

                // === usage ===

                async fn commit_usage_batch(
                    &self,
                    batch_id: &str,
                    proxy_id: &str,
                    payload_hash: &str,
                    records: Vec<UsageRecord>,
                ) -> StoreResult<BatchCommit> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let inserted = sqlx::query(
                        "INSERT INTO usage_batches \
                         (batch_id, proxy_id, payload_hash, record_count, received_at_us) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (batch_id) DO NOTHING",
                    )
                    .bind(batch_id)
                    .bind(proxy_id)
                    .bind(payload_hash)
                    .bind(i64::try_from(records.len()).unwrap_or(i64::MAX))
                    .bind(now_us())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if inserted == 0 {
                        let stored: String = sqlx::query_scalar(
                            "SELECT payload_hash FROM usage_batches WHERE batch_id = $1",
                        )
                        .bind(batch_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        return Ok(BatchCommit {
                            outcome: if stored == payload_hash {
                                BatchOutcome::Duplicate
                            } else {
                                BatchOutcome::Conflict
                            },
                            alerts: Vec::new(),
                        });
                    }
                    // Budgets count only records stored now (not ones a proxy re-sent), so
                    // when any budget exists the inserts report which rows they stored.
                    sqlx::query($lock_budgets).execute(&mut *tx).await?;
                    let budgets_exist: bool =
                        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM budgets)")
                            .fetch_one(&mut *tx)
                            .await?;
                    let mut spends: Vec<(String, Spend)> = if budgets_exist {
                        records
                            .iter()
                            .map(|r| {
                                (
                                    r.request_id.clone(),
                                    Spend {
                                        lease_epoch: r.lease_epoch,
                                        project_id: r.project_id.clone(),
                                        virtual_key_id: r.virtual_key_id.clone(),
                                        started_at_us: r.started_at_us,
                                        cost_micros: r.cost_micros,
                                        estimated: r.source == UsageSource::Estimated,
                                    },
                                )
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let mut inserted = std::collections::HashSet::new();
                    // Many rows per statement: one round trip per chunk instead of per record.
                    // Strings are moved into the statement, not copied.
                    let mut remaining = records.len();
                    let mut rows = records.into_iter();
                    for size in USAGE_INSERT_SIZES {
                        while remaining >= size {
                            remaining -= size;
                            let sql = usage_insert_sql(size, $placeholders, budgets_exist);
                            let mut query = sqlx::query(sql);
                            for record in rows.by_ref().take(size) {
                                query = query
                                    .bind(record.request_id)
                                    .bind(batch_id)
                                    .bind(record.started_at_us)
                                    .bind(record.project_id)
                                    .bind(record.virtual_key_id)
                                    .bind(record.model)
                                    .bind(record.provider_id)
                                    .bind(record.input_tokens)
                                    .bind(record.output_tokens)
                                    .bind(record.cached_input_tokens)
                                    .bind(record.reasoning_tokens)
                                    .bind(record.cost_micros)
                                    .bind(record.latency_ms)
                                    .bind(record.http_status)
                                    .bind(record.source.as_str())
                                    .bind(record.run_id)
                                    .bind(record.task_id)
                                    .bind(tags_json(&record.tags))
                                    .bind(record.lease_epoch);
                            }
                            if budgets_exist {
                                for row in query.fetch_all(&mut *tx).await? {
                                    inserted.insert(row.try_get::<String, _>(0)?);
                                }
                            } else {
                                query.execute(&mut *tx).await?;
                            }
                        }
                    }
                    spends.retain(|(id, _)| inserted.contains(id));
                    let spends: Vec<Spend> = spends.into_iter().map(|(_, s)| s).collect();
                    let alerts = roll_up_budgets(&mut tx, proxy_id, &spends).await?;
                    tx.commit().await?;
                    Ok(BatchCommit {
                        outcome: BatchOutcome::Committed,
                        alerts,
                    })
                }

                // === budgets ===

                async fn create_budget(
                    &self,
                    new: NewBudget,
                    now_us: i64,
                    audit: Audit,
                ) -> StoreResult<Budget> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    sqlx::query($lock_budgets).execute(&mut *tx).await?;
                    create_budget_tx(&mut tx, &new, now_us).await?;
                    record_change(&mut tx, &audit).await?;
                    let created = fetch_budget(&mut tx, &new.target, new.period, now_us).await?;
                    tx.commit().await?;
                    Ok(created)
                }

                async fn list_budgets(&self, org: &str, now_us: i64) -> StoreResult<Vec<Budget>> {
                    let mut tx = self.pool.begin().await?;
                    org_id(&mut tx, org).await?;
                    let sql = format!(
                        "{BUDGET_SELECT} WHERE o.name = $1 ORDER BY b.scope, b.created_at_us, b.id"
                    );
                    let rows = sqlx::query(&sql).bind(org).fetch_all(&mut *tx).await?;
                    let mut budgets = Vec::with_capacity(rows.len());
                    for row in &rows {
                        budgets.push(with_spend(&mut tx, budget_row(row)?, now_us).await?);
                    }
                    Ok(budgets)
                }

                async fn update_budget(
                    &self,
                    target: &BudgetTarget,
                    period: BudgetPeriod,
                    patch: BudgetPatch,
                    now_us: i64,
                    audit: Audit,
                ) -> StoreResult<Budget> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_budget(&mut tx, target, period, now_us).await?;
                    let percents = patch.alert_percents.unwrap_or(current.alert_percents);
                    let limit = patch.limit_micros.unwrap_or(current.limit_micros);
                    sqlx::query(
                        "UPDATE budgets SET limit_micros = $1, posture = $2, alert_percents = $3, \
                         updated_at_us = $4 WHERE id = $5",
                    )
                    .bind(limit)
                    .bind(patch.posture.unwrap_or(current.posture).as_str())
                    .bind(percents_text(&percents))
                    .bind(now_us)
                    .bind(&current.id)
                    .execute(&mut *tx)
                    .await?;
                    // Thresholds are measured against the new limit from here on: raised
                    // ones may alert again, lowered ones do not alert for the past.
                    sqlx::query(
                        "UPDATE budget_spend SET alerted_percent = $1 \
                         WHERE budget_id = $2 AND window_start_us = $3",
                    )
                    .bind(i64::from(reached_percent(&percents, current.spent_micros, limit)))
                    .bind(&current.id)
                    .bind(current.window_start_us)
                    .execute(&mut *tx)
                    .await?;
                    record_change(&mut tx, &audit).await?;
                    let updated = fetch_budget(&mut tx, target, period, now_us).await?;
                    tx.commit().await?;
                    Ok(updated)
                }

                async fn delete_budget(
                    &self,
                    target: &BudgetTarget,
                    period: BudgetPeriod,
                    audit: Audit,
                ) -> StoreResult<()> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    let current = fetch_budget(&mut tx, target, period, now_us()).await?;
                    sqlx::query("DELETE FROM budget_spend WHERE budget_id = $1")
                        .bind(&current.id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM budgets WHERE id = $1")
                        .bind(&current.id)
                        .execute(&mut *tx)
                        .await?;
                    record_change(&mut tx, &audit).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn acquire_leases(
                    &self,
                    proxy_id: &str,
                    epoch: i64,
                    uses: Vec<LeaseUse>,
                    now_us: i64,
                    policy: LeasePolicy,
                ) -> StoreResult<Vec<LeaseGrant>> {
                    let mut tx = self.writer().begin_with($begin_write).await?;
                    sqlx::query($lock_budgets).execute(&mut *tx).await?;
                    let mut grants = Vec::with_capacity(uses.len());
                    for lease_use in &uses {
                        if let Some(grant) =
                            acquire_lease_tx(&mut tx, proxy_id, epoch, lease_use, now_us, policy)
                                .await?
                        {
                            grants.push(grant);
                        }
                    }
                    // Leases long expired only take room.
                    sqlx::query("DELETE FROM budget_leases WHERE expires_at_us < $1")
                        .bind(now_us - 86_400_000_000)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(grants)
                }

                async fn query_usage(
                    &self,
                    query: UsageQuery,
                ) -> StoreResult<(Vec<UsageTotals>, UsageTotals)> {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query($snapshot_isolation).execute(&mut *tx).await?;
                    query_usage_tx(&mut tx, &query).await
                }

                async fn list_usage_records(&self, project_id: &str) -> StoreResult<Vec<UsageRecord>> {
                    let rows = sqlx::query(
                        "SELECT request_id, started_at_us, project_id, virtual_key_id, model, \
                         provider_id, input_tokens, output_tokens, cached_input_tokens, \
                         reasoning_tokens, cost_micros, latency_ms, http_status, source, \
                         run_id, task_id, tags, lease_epoch \
                         FROM usage_records WHERE project_id = $1 \
                         ORDER BY started_at_us, request_id",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(usage_record).collect()
                }

                // === vault checks ===

                async fn vault_checks(&self) -> StoreResult<Vec<(u32, Vec<u8>)>> {
                    let rows = sqlx::query(
                        "SELECT master_key_version, sealed_check FROM vault_checks \
                         ORDER BY master_key_version",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            Ok((
                                to_u32(row.try_get("master_key_version")?, "master_key_version")?,
                                row.try_get("sealed_check")?,
                            ))
                        })
                        .collect()
                }

                async fn add_vault_check(&self, version: u32, sealed: Vec<u8>) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO vault_checks (master_key_version, sealed_check) \
                         VALUES ($1, $2) ON CONFLICT (master_key_version) DO NOTHING",
                    )
                    .bind(i64::from(version))
                    .bind(sealed)
                    .execute(self.writer())
                    .await?;
                    Ok(())
                }
            }
        }
    };
}

pub(super) use sql_store;
