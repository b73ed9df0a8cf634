//! The steps every change shares: bump the config version, append the audit event, resolve a
//! name to its id inside the change's transaction.

macro_rules! common_sql {
    ($store:ty) => {
        /// A write transaction that holds the budgets' lock, where the backend has one (see
        /// `SqlBackend::LOCK_BUDGETS`).
        async fn begin_budget_write(store: &$store) -> StoreResult<Tx> {
            let mut tx = store
                .writer()
                .begin_with(<$store as SqlBackend>::BEGIN_WRITE)
                .await?;
            if let Some(lock) = <$store as SqlBackend>::LOCK_BUDGETS {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            Ok(tx)
        }

        /// A read transaction that is one consistent snapshot.
        async fn begin_snapshot(store: &$store) -> StoreResult<Tx> {
            let mut tx = store.readers().begin().await?;
            if let Some(snapshot) = <$store as SqlBackend>::SNAPSHOT_ISOLATION {
                sqlx::query(snapshot).execute(&mut *tx).await?;
            }
            Ok(tx)
        }

        /// Bumps the config version and appends the audit event: the last step of every
        /// change, inside its transaction. Returns the change's version (writers take it in
        /// commit order: the row lock on `config_state` orders them).
        async fn record_change(tx: &mut Tx, audit: &Audit) -> StoreResult<u64> {
            let version: i64 = sqlx::query_scalar(
                "UPDATE config_state SET version = version + 1 WHERE id = 1 RETURNING version",
            )
            .fetch_one(&mut **tx)
            .await?;
            record_audit(tx, audit).await?;
            to_u64(version, "config version")
        }

        /// An audit event for something proxies need not hear about (no new version).
        async fn record_audit(tx: &mut Tx, audit: &Audit) -> StoreResult<()> {
            let id = new_id();
            // The RPC being served names it on its span.
            crate::telemetry::note_audit_event(&id);
            sqlx::query(
                "INSERT INTO audit_events (id, at_us, actor, action, target, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
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
    };
}

pub(crate) use common_sql;
