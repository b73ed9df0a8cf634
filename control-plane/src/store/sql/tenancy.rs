//! Organisations and projects: the tenancy every other row hangs from, and what a project's models
//! need before it may go LIVE.

macro_rules! tenancy_sql {
    ($store:ty) => {
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
                content_capture_bytes: to_u32(
                    row.try_get("content_capture_bytes")?,
                    "content_capture_bytes",
                )?,
                metrics_by_key: row.try_get("metrics_by_key")?,
                created_at_us: row.try_get("created_at_us")?,
                updated_at_us: row.try_get("updated_at_us")?,
            })
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

        impl TenancyStore for $store {
            async fn create_organization(
                &self,
                new: NewOrganization,
                audit: Audit,
            ) -> StoreResult<Organization> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                    .fetch_optional(self.readers())
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
                let rows = sqlx::query(&sql).bind(name_prefix).fetch_all(self.readers()).await?;
                rows.iter().map(organization).collect()
            }

            async fn update_organization(
                &self,
                name: &str,
                display_name: Option<String>,
                audit: Audit,
            ) -> StoreResult<Organization> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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

            async fn create_project(
                &self,
                org: &str,
                new: NewProject,
                audit: Audit,
            ) -> StoreResult<Project> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let org_id = org_id(&mut tx, org).await?;
                if !new.default_model.is_empty() {
                    model_id(&mut tx, org, &new.default_model).await?;
                }
                let now = now_us();
                sqlx::query(
                    "INSERT INTO projects (id, org_id, name, display_name, posture, \
                     default_model, content_capture_bytes, metrics_by_key, created_at_us, \
                     updated_at_us) VALUES ($1, $2, $3, $4, 'MOCK', $5, $6, $7, $8, $8)",
                )
                .bind(new_id())
                .bind(&org_id)
                .bind(&new.name)
                .bind(&new.display_name)
                .bind(&new.default_model)
                .bind(i64::from(new.content_capture_bytes))
                .bind(new.metrics_by_key)
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
                let mut tx = self.readers().begin().await?;
                fetch_project(&mut tx, org, name).await
            }

            async fn list_projects(&self, org: &str) -> StoreResult<Vec<Project>> {
                let mut tx = self.readers().begin().await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let current = fetch_project(&mut tx, org, name).await?;
                if let Some(model) = patch.default_model.as_deref().filter(|m| !m.is_empty()) {
                    model_id(&mut tx, org, model).await?;
                }
                sqlx::query(
                    "UPDATE projects SET display_name = $1, default_model = $2, \
                     posture = $3, content_capture_bytes = $4, metrics_by_key = $5, \
                     updated_at_us = $6 WHERE id = $7",
                )
                .bind(patch.display_name.unwrap_or(current.display_name))
                .bind(patch.default_model.unwrap_or(current.default_model))
                .bind(patch.posture.unwrap_or(current.posture).as_str())
                .bind(i64::from(
                    patch
                        .content_capture_bytes
                        .unwrap_or(current.content_capture_bytes),
                ))
                .bind(patch.metrics_by_key.unwrap_or(current.metrics_by_key))
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.readers().begin().await?;
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
        }
    };
}

pub(crate) use tenancy_sql;
