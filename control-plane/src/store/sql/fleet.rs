//! The config proxies serve and the fleet serving it: the versioned snapshot read in one
//! transaction, and each proxy's connection, ACK and NACK.

macro_rules! fleet_sql {
    ($store:ty) => {
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
                left_out: from_json(row.try_get("left_out")?, "left_out")?,
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

        /// The live keys `keys` asks for, and the ids of those revoked or deleted since.
        async fn config_virtual_keys(
            tx: &mut Tx,
            keys: VirtualKeysRead,
        ) -> StoreResult<(Vec<Arc<ConfigVirtualKey>>, Vec<String>)> {
            let since = match keys {
                VirtualKeysRead::All => None,
                VirtualKeysRead::ChangedSince(version) => {
                    Some(to_i64(version, "config version")?)
                }
            };
            let rows = match since {
                None => {
                    sqlx::query(
                        "SELECT id, project_id, key_hash, allowed_models, expires_at_us, \
                         revoked_at_us FROM virtual_keys WHERE revoked_at_us = 0 ORDER BY id",
                    )
                    .fetch_all(&mut **tx)
                    .await?
                }
                Some(since) => {
                    sqlx::query(
                        "SELECT id, project_id, key_hash, allowed_models, expires_at_us, \
                         revoked_at_us FROM virtual_keys WHERE config_version > $1 ORDER BY id",
                    )
                    .bind(since)
                    .fetch_all(&mut **tx)
                    .await?
                }
            };
            let mut live = Vec::with_capacity(rows.len());
            let mut removed = Vec::new();
            for row in &rows {
                if row.try_get::<i64, _>("revoked_at_us")? != 0 {
                    removed.push(row.try_get("id")?);
                    continue;
                }
                live.push(Arc::new(ConfigVirtualKey {
                    id: row.try_get("id")?,
                    project_id: row.try_get("project_id")?,
                    key_hash: row.try_get("key_hash")?,
                    allowed_models: models_from_json(row.try_get("allowed_models")?)?,
                    expires_at_us: row.try_get("expires_at_us")?,
                }));
            }
            // In the byte order merges and differences rely on, whatever the database's
            // collation (PostgreSQL's sorts by locale).
            live.sort_unstable_by(|a, b| a.id.cmp(&b.id));
            if let Some(since) = since {
                let deleted: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM virtual_key_deletions WHERE config_version > $1",
                )
                .bind(since)
                .fetch_all(&mut **tx)
                .await?;
                removed.extend(deleted);
            }
            Ok((live, removed))
        }

        impl FleetStore for $store {
            async fn config_version(&self) -> StoreResult<u64> {
                let version: i64 =
                    sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
                        .fetch_one(self.readers())
                        .await?;
                to_u64(version, "config version")
            }

            async fn load_config(&self, keys: VirtualKeysRead) -> StoreResult<ConfigState> {
                let mut tx = begin_snapshot(self).await?;
                let version: i64 =
                    sqlx::query_scalar("SELECT version FROM config_state WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await?;

                let rows = sqlx::query(
                    "SELECT id, org_id, name, posture, default_model, content_capture_bytes, \
                     metrics_by_key FROM projects ORDER BY id",
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
                            content_capture_bytes: to_u32(
                                row.try_get("content_capture_bytes")?,
                                "content_capture_bytes",
                            )?,
                            metrics_by_key: row.try_get("metrics_by_key")?,
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
                     cached_input_price_micros_per_mtok, retry_policy, timeout_policy \
                     FROM models ORDER BY id",
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
                            retry: from_json(row.try_get("retry_policy")?, "retry_policy")?,
                            timeouts: from_json(
                                row.try_get("timeout_policy")?,
                                "timeout_policy",
                            )?,
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

                let (virtual_keys, removed_virtual_keys) =
                    config_virtual_keys(&mut tx, keys).await?;
                let budgets = config_budgets(&mut tx).await?;
                let rate_limits = config_rate_limits(&mut tx).await?;
                tx.commit().await?;
                Ok(ConfigState {
                    version: to_u64(version, "config version")?,
                    projects,
                    providers: providers_by_org,
                    provider_keys,
                    models,
                    virtual_keys,
                    removed_virtual_keys,
                    budgets,
                    rate_limits,
                })
            }

            async fn record_proxy_connection(
                &self,
                proxy_id: &str,
                address: &str,
                connected: bool,
            ) -> StoreResult<()> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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

            async fn record_proxy_left_out(
                &self,
                proxy_id: &str,
                left_out: &[LeftOut],
            ) -> StoreResult<()> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let now = now_us();
                ensure_proxy(&mut tx, proxy_id, now).await?;
                sqlx::query(
                    "UPDATE proxies SET left_out = $1, last_seen_us = $2 WHERE proxy_id = $3",
                )
                .bind(to_json(&left_out)?)
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
                     nack_reason, first_seen_us, last_seen_us, left_out FROM proxies \
                     ORDER BY proxy_id",
                )
                .fetch_all(self.readers())
                .await?;
                rows.iter().map(proxy_status).collect()
            }
        }
    };
}

pub(crate) use fleet_sql;
