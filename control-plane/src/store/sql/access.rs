//! Admin tokens and the audit log: who may change things, and what they changed.

macro_rules! access_sql {
    ($store:ty) => {
        fn admin_token(row: &DbRow) -> StoreResult<AdminToken> {
            Ok(AdminToken {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                scope: TokenScope::parse(row.try_get("scope")?)?,
                organization: row.try_get("organization")?,
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

        impl AccessStore for $store {
            async fn create_admin_token(
                &self,
                new: NewAdminToken,
                audit: Audit,
            ) -> StoreResult<AdminToken> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let now = now_us();
                let sql = format!(
                    "INSERT INTO admin_tokens (id, name, scope, organization_id, prefix, \
                     token_hash, created_at_us, revoked_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0) RETURNING {ADMIN_TOKEN_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(&new.id)
                    .bind(&new.name)
                    .bind(new.scope.as_str())
                    .bind(&new.organization_id)
                    .bind(&new.prefix)
                    .bind(&new.token_hash)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| write_error(e, || format!("admin token '{}'", new.name), ""))?;
                let created = admin_token(&row)?;
                record_change(&mut tx, &audit).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn list_admin_tokens(&self) -> StoreResult<Vec<AdminToken>> {
                let sql = format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens ORDER BY name");
                let rows = sqlx::query(&sql).fetch_all(self.readers()).await?;
                rows.iter().map(admin_token).collect()
            }

            async fn revoke_admin_token(
                &self,
                name: &str,
                audit: Audit,
            ) -> StoreResult<AdminToken> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                    .fetch_optional(self.readers())
                    .await?
                    .as_ref()
                    .map(admin_token)
                    .transpose()
            }

            async fn list_audit_events(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT id, at_us, actor, action, target, detail FROM audit_events \
                     WHERE ($1 = '' OR actor = $1) AND ($2 = '' OR action = $2) \
                     AND substr(target, 1, length($3)) = $3 \
                     AND ($5 = '' OR ((target = $5 OR substr(target, 1, length($5) + 1) = $5 || '/') \
                          AND substr(action, 1, 12) <> 'admin_token.' \
                          AND substr(action, 1, 6) <> 'vault.')) \
                     ORDER BY at_us DESC, id DESC LIMIT $4",
                )
                .bind(&filter.actor)
                .bind(&filter.action)
                .bind(&filter.target_prefix)
                .bind(i64::from(filter.limit))
                .bind(&filter.organization)
                .fetch_all(self.readers())
                .await?;
                rows.iter().map(audit_event).collect()
            }
        }
    };
}

pub(crate) use access_sql;
