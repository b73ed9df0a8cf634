//! Models and their deployments (provider, upstream model, weight, priority), with prices.

macro_rules! models_sql {
    ($store:ty) => {
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
                retry: from_json(row.try_get("retry_policy")?, "retry_policy")?,
                timeouts: from_json(row.try_get("timeout_policy")?, "timeout_policy")?,
            })
        }

        async fn require_models(tx: &mut Tx, org: &str, names: &[String]) -> StoreResult<()> {
            for name in names {
                model_id(tx, org, name).await?;
            }
            Ok(())
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

        impl ModelStore for $store {
            async fn create_model(
                &self,
                org: &str,
                new: NewModel,
                audit: Audit,
            ) -> StoreResult<Model> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let org_id = org_id(&mut tx, org).await?;
                let id = new_id();
                sqlx::query(
                    "INSERT INTO models (id, org_id, name, input_price_micros_per_mtok, \
                     output_price_micros_per_mtok, context_window, created_at_us, \
                     updated_at_us, cached_input_price_micros_per_mtok, price_source, \
                     catalog_id, retry_policy, timeout_policy) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10, $11, $12)",
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
                .bind(to_json(&new.retry)?)
                .bind(to_json(&new.timeouts)?)
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
                let mut tx = self.readers().begin().await?;
                fetch_model(&mut tx, org, name).await
            }

            async fn list_models(&self, org: &str) -> StoreResult<Vec<Model>> {
                let mut tx = self.readers().begin().await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let current = fetch_model(&mut tx, org, name).await?;
                sqlx::query(
                    "UPDATE models SET input_price_micros_per_mtok = $1, \
                     output_price_micros_per_mtok = $2, context_window = $3, \
                     updated_at_us = $4, cached_input_price_micros_per_mtok = $6, \
                     price_source = $7, catalog_id = $8, retry_policy = $9, \
                     timeout_policy = $10 WHERE id = $5",
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
                .bind(to_json(&patch.retry.unwrap_or(current.retry))?)
                .bind(to_json(&patch.timeouts.unwrap_or(current.timeouts))?)
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let id = model_id(&mut tx, org, name).await?;
                sqlx::query("DELETE FROM models WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                record_change(&mut tx, &audit).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(crate) use models_sql;
