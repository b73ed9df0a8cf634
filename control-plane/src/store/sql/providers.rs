//! Providers and their keys: the upstream records and the sealed keys' lifecycle (create, rotate,
//! revoke, health).

macro_rules! providers_sql {
    ($store:ty) => {
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
                retry: from_json(row.try_get("retry_policy")?, "retry_policy")?,
                timeouts: from_json(row.try_get("timeout_policy")?, "timeout_policy")?,
                send_trace_context: row.try_get("send_trace_context")?,
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
                health_learned_at_us: row.try_get("health_learned_at_us")?,
                health_source: match row.try_get::<&str, _>("health_source")? {
                    "" => None,
                    source => Some(HealthSource::parse(source)?),
                },
                master_key_version: to_u32(
                    row.try_get("master_key_version")?,
                    "master_key_version",
                )?,
                created_at_us: row.try_get("created_at_us")?,
                updated_at_us: row.try_get("updated_at_us")?,
            })
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

        impl ProviderStore for $store {
            async fn create_provider(
                &self,
                org: &str,
                new: NewProvider,
                audit: Audit,
            ) -> StoreResult<Provider> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let org_id = org_id(&mut tx, org).await?;
                let now = now_us();
                sqlx::query(
                    "INSERT INTO providers (id, org_id, name, kind, base_url, api_version, \
                     timeout_ms, extra_headers, active, allow_private_network, \
                     created_at_us, updated_at_us, retry_policy, timeout_policy, \
                     send_trace_context) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9, $10, $10, $11, $12, $13)",
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
                .bind(to_json(&new.retry)?)
                .bind(to_json(&new.timeouts)?)
                .bind(new.send_trace_context)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error(e, || format!("provider '{org}/{}'", new.name), ""))?;
                record_change(&mut tx, &audit).await?;
                let created = fetch_provider(&mut tx, org, &new.name).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn get_provider(&self, org: &str, name: &str) -> StoreResult<Provider> {
                let mut tx = self.readers().begin().await?;
                fetch_provider(&mut tx, org, name).await
            }

            async fn list_providers(&self, org: &str) -> StoreResult<Vec<Provider>> {
                let mut tx = self.readers().begin().await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let current = fetch_provider(&mut tx, org, name).await?;
                sqlx::query(
                    "UPDATE providers SET base_url = $1, api_version = $2, timeout_ms = $3, \
                     extra_headers = $4, active = $5, allow_private_network = $6, \
                     updated_at_us = $7, retry_policy = $8, timeout_policy = $9, \
                     send_trace_context = $10 WHERE id = $11",
                )
                .bind(patch.base_url.unwrap_or(current.base_url))
                .bind(patch.api_version.unwrap_or(current.api_version))
                .bind(i64::from(patch.timeout_ms.unwrap_or(current.timeout_ms)))
                .bind(to_json(&patch.extra_headers.unwrap_or(current.extra_headers))?)
                .bind(patch.active.unwrap_or(current.active))
                .bind(patch.allow_private_network.unwrap_or(current.allow_private_network))
                .bind(now_us())
                .bind(to_json(&patch.retry.unwrap_or(current.retry))?)
                .bind(to_json(&patch.timeouts.unwrap_or(current.timeouts))?)
                .bind(patch.send_trace_context.unwrap_or(current.send_trace_context))
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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

            async fn create_provider_key(
                &self,
                org: &str,
                provider: &str,
                new: NewProviderKey,
                audit: Audit,
            ) -> StoreResult<ProviderKey> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.readers().begin().await?;
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
                .fetch_optional(self.readers())
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let changed = sqlx::query(
                    "UPDATE provider_keys SET health = $1, updated_at_us = $2, \
                     health_learned_at_us = $2, health_source = 'TRAFFIC' \
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let key = fetch_provider_key(&mut tx, org, provider, name).await?;
                sqlx::query(
                    "UPDATE provider_keys SET health = $1, updated_at_us = $2, \
                     health_learned_at_us = $2, health_source = 'KEY_TEST' WHERE id = $3",
                )
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
                let mut tx = self.readers().begin().await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
        }
    };
}

pub(crate) use providers_sql;
