//! Virtual keys: the credentials applications present, scoped to a project and its models.

macro_rules! virtual_keys_sql {
    ($store:ty) => {
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

        /// How long a deleted key's id stays readable as a change (publishers read changes
        /// every second, and reload everything after an hour without one).
        const DELETIONS_KEPT_US: i64 = 24 * 3600 * 1_000_000;

        /// Marks the key as changed at `version`, for the publishers' incremental read.
        async fn stamp_version(tx: &mut Tx, id: &str, version: u64) -> StoreResult<()> {
            sqlx::query("UPDATE virtual_keys SET config_version = $1 WHERE id = $2")
                .bind(to_i64(version, "config version")?)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        impl VirtualKeyStore for $store {
            async fn create_virtual_key(
                &self,
                org: &str,
                project: &str,
                new: NewVirtualKey,
                audit: Audit,
            ) -> StoreResult<VirtualKey> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                    write_error(
                        e,
                        || format!("virtual key '{org}/{project}/{}'", new.name),
                        "",
                    )
                })?;
                let version = record_change(&mut tx, &audit).await?;
                stamp_version(&mut tx, &new.id, version).await?;
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
                let mut tx = self.readers().begin().await?;
                fetch_virtual_key(&mut tx, org, project, name).await
            }

            async fn list_virtual_keys(
                &self,
                org: &str,
                project: &str,
                prefix: &str,
            ) -> StoreResult<Vec<VirtualKey>> {
                let mut tx = self.readers().begin().await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let current = fetch_virtual_key(&mut tx, org, project, name).await?;
                if let Some(models) = &patch.allowed_models {
                    require_models(&mut tx, org, models).await?;
                }
                sqlx::query(
                    "UPDATE virtual_keys SET allowed_models = $1, expires_at_us = $2, \
                     updated_at_us = $3 WHERE id = $4",
                )
                .bind(to_json(
                    &patch.allowed_models.unwrap_or(current.allowed_models),
                )?)
                .bind(patch.expires_at_us.unwrap_or(current.expires_at_us))
                .bind(now_us())
                .bind(&current.id)
                .execute(&mut *tx)
                .await?;
                let version = record_change(&mut tx, &audit).await?;
                stamp_version(&mut tx, &current.id, version).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let version = record_change(&mut tx, &audit).await?;
                stamp_version(&mut tx, &current.id, version).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let current = fetch_virtual_key(&mut tx, org, project, name).await?;
                sqlx::query("DELETE FROM virtual_keys WHERE id = $1")
                    .bind(&current.id)
                    .execute(&mut *tx)
                    .await?;
                let version = record_change(&mut tx, &audit).await?;
                let now = now_us();
                sqlx::query("DELETE FROM virtual_key_deletions WHERE deleted_at_us < $1")
                    .bind(now - DELETIONS_KEPT_US)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO virtual_key_deletions (id, config_version, deleted_at_us) \
                     VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE \
                     SET config_version = excluded.config_version, \
                     deleted_at_us = excluded.deleted_at_us",
                )
                .bind(&current.id)
                .bind(to_i64(version, "config version")?)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use virtual_keys_sql;
