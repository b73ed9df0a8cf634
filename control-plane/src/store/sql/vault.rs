//! The vault's rows: master-key checks and the re-wrap of sealed keys under a new master-key
//! version.

macro_rules! vault_sql {
    ($store:ty) => {
        impl VaultStore for $store {
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
                .fetch_all(self.readers())
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

            async fn provider_keys_per_master_key_version(&self) -> StoreResult<Vec<(u32, u64)>> {
                let rows = sqlx::query(
                    "SELECT master_key_version, COUNT(*) AS keys FROM provider_keys \
                     GROUP BY master_key_version ORDER BY master_key_version",
                )
                .fetch_all(self.readers())
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

            async fn vault_checks(&self) -> StoreResult<Vec<(u32, Vec<u8>)>> {
                let rows = sqlx::query(
                    "SELECT master_key_version, sealed_check FROM vault_checks \
                     ORDER BY master_key_version",
                )
                .fetch_all(self.readers())
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
    };
}

pub(crate) use vault_sql;
