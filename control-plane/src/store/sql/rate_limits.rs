//! Rate limits and rate leases in SQL: the [`RateLimitStore`](crate::store::RateLimitStore)
//! methods.
//!
//! A rate lease is a proxy process's allowance of one dimension (requests or tokens) of one
//! limit in one window. The invariant a grant keeps: over every lease of a window, the sum of
//! what each may admit — its allowance, or what it reported if a request's actual tokens went
//! past its reservation — stays within the limit. A lease that expired still counts until its
//! window ends: its proxy may have admitted up to its allowance before it stopped reporting.

/// How much more one lease gets: about a `divisor × live` share of what is left (so the
/// window's end is approached in shrinking steps and a proxy that arrives late still finds
/// room), at least what it asked for, and never past what is left. Returns the grant and what
/// stays unallocated after it.
pub(crate) fn size_rate_grant(
    limit: i64,
    spoken_for: i64,
    live: i64,
    wanted: i64,
    divisor: i64,
) -> (i64, i64) {
    let left = limit.saturating_sub(spoken_for).max(0);
    let share = left / divisor.max(1).saturating_mul(live.max(1));
    let grant = if wanted > 0 {
        share.max(wanted).min(left)
    } else {
        0
    };
    (grant, left - grant)
}

macro_rules! rate_limits_sql {
    ($store:ty) => {
        const RATE_LIMIT_SELECT: &str = "SELECT r.id, r.scope, r.scope_id, \
             r.requests_per_window, r.tokens_per_window, r.window_seconds, r.created_at_us, \
             r.updated_at_us, o.name AS org_name, p.name AS project_name, v.name AS key_name, \
             vp.name AS key_project_name, m.name AS model_name \
             FROM rate_limits r JOIN organizations o ON o.id = r.org_id \
             LEFT JOIN projects p ON r.scope = 'PROJECT' AND p.id = r.scope_id \
             LEFT JOIN virtual_keys v ON r.scope = 'VIRTUAL_KEY' AND v.id = r.scope_id \
             LEFT JOIN projects vp ON vp.id = v.project_id \
             LEFT JOIN models m ON r.scope = 'MODEL' AND m.id = r.scope_id";

        fn rate_limit_row(row: &DbRow) -> StoreResult<RateLimit> {
            let scope = RateLimitScope::parse(row.try_get("scope")?)?;
            let gone = || Some("(deleted)".to_owned());
            let name = |column: &str| -> StoreResult<Option<String>> { Ok(row.try_get(column)?) };
            let target = RateLimitTarget {
                organization: row.try_get("org_name")?,
                project: match scope {
                    RateLimitScope::Organization | RateLimitScope::Model => None,
                    RateLimitScope::Project => name("project_name")?.or_else(gone),
                    RateLimitScope::VirtualKey => name("key_project_name")?.or_else(gone),
                },
                virtual_key: match scope {
                    RateLimitScope::VirtualKey => name("key_name")?.or_else(gone),
                    _ => None,
                },
                model: match scope {
                    RateLimitScope::Model => name("model_name")?.or_else(gone),
                    _ => None,
                },
            };
            Ok(RateLimit {
                id: row.try_get("id")?,
                target,
                scope_id: row.try_get("scope_id")?,
                requests_per_window: to_u64(row.try_get("requests_per_window")?, "requests_per_window")?,
                tokens_per_window: to_u64(row.try_get("tokens_per_window")?, "tokens_per_window")?,
                window_seconds: to_u32(row.try_get("window_seconds")?, "window_seconds")?,
                window_start_us: 0,
                requests_granted: 0,
                tokens_granted: 0,
                leases: 0,
                created_at_us: row.try_get("created_at_us")?,
                updated_at_us: row.try_get("updated_at_us")?,
            })
        }

        /// The organisation id and the target's id.
        async fn resolve_rate_limit_target(
            tx: &mut Tx,
            target: &RateLimitTarget,
        ) -> StoreResult<(String, String)> {
            let org = &target.organization;
            let org_id = org_id(tx, org).await?;
            let scope_id = match (&target.project, &target.virtual_key, &target.model) {
                (_, _, Some(model)) => model_id(tx, org, model).await?,
                (None, _, None) => org_id.clone(),
                (Some(project), None, None) => project_id(tx, org, project).await?,
                (Some(project), Some(key), None) => {
                    fetch_virtual_key(tx, org, project, key).await?.id
                }
            };
            Ok((org_id, scope_id))
        }

        /// Fills in what is granted in the window holding `now_us`.
        async fn with_grants(
            tx: &mut Tx,
            mut limit: RateLimit,
            now_us: i64,
        ) -> StoreResult<RateLimit> {
            limit.window_start_us = limit.window().start_us(now_us);
            let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                "SELECT dimension, \
                 CAST(COALESCE(SUM(CASE WHEN used > allowance THEN used ELSE allowance END), 0) \
                 AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN expires_at_us > $3 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 COUNT(*) \
                 FROM rate_leases WHERE rate_limit_id = $1 AND window_start_us = $2 \
                 GROUP BY dimension",
            )
            .bind(&limit.id)
            .bind(limit.window_start_us)
            .bind(now_us)
            .fetch_all(&mut **tx)
            .await?;
            for (dimension, granted, live, _) in rows {
                let granted = u64::try_from(granted).unwrap_or(0);
                match RateDimension::parse(&dimension)? {
                    RateDimension::Requests => limit.requests_granted = granted,
                    RateDimension::Tokens => limit.tokens_granted = granted,
                }
                limit.leases = limit.leases.max(u32::try_from(live).unwrap_or(u32::MAX));
            }
            Ok(limit)
        }

        async fn fetch_rate_limit(
            tx: &mut Tx,
            target: &RateLimitTarget,
            now_us: i64,
        ) -> StoreResult<RateLimit> {
            let (_, scope_id) = resolve_rate_limit_target(tx, target).await?;
            let sql = format!("{RATE_LIMIT_SELECT} WHERE r.scope_id = $1");
            let row = sqlx::query(&sql)
                .bind(&scope_id)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| StoreError::not_found(format!("rate limit of '{target}'")))?;
            with_grants(tx, rate_limit_row(&row)?, now_us).await
        }

        /// Rate limits, for the snapshot.
        async fn config_rate_limits(tx: &mut Tx) -> StoreResult<Vec<ConfigRateLimit>> {
            let sql = format!("{RATE_LIMIT_SELECT} ORDER BY r.id");
            let rows = sqlx::query(&sql).fetch_all(&mut **tx).await?;
            rows.iter()
                .map(|row| {
                    let limit = rate_limit_row(row)?;
                    Ok(ConfigRateLimit {
                        name: RateLimit::label(&limit.target, limit.window_seconds),
                        id: limit.id,
                        scope_id: limit.scope_id,
                        requests_per_window: limit.requests_per_window,
                        tokens_per_window: limit.tokens_per_window,
                        window_seconds: limit.window_seconds,
                    })
                })
                .collect()
        }

        /// One rate lease renewal: see `RateLimitStore::acquire_rate_leases`.
        async fn acquire_rate_lease_tx(
            tx: &mut Tx,
            proxy_id: &str,
            epoch: i64,
            rate_use: &RateUse,
            now_us: i64,
            policy: LeasePolicy,
        ) -> StoreResult<Option<RateGrant>> {
            let limit: Option<(i64, i64, i64)> = sqlx::query_as(
                "SELECT requests_per_window, tokens_per_window, window_seconds \
                 FROM rate_limits WHERE id = $1",
            )
            .bind(&rate_use.rate_limit_id)
            .fetch_optional(&mut **tx)
            .await?;
            let Some((requests, tokens, window_seconds)) = limit else {
                return Ok(None);
            };
            let limit = match rate_use.dimension {
                RateDimension::Requests => requests,
                RateDimension::Tokens => tokens,
            };
            if limit <= 0 {
                // Not limited (any more): the proxy stops asking once its snapshot says so.
                return Ok(None);
            }
            let window = sluice_shared::budget_window::Window::Seconds(to_u32(
                window_seconds,
                "window_seconds",
            )?)
            .start_us(now_us);
            // Figures for another window say nothing about this one.
            let used = if rate_use.window_start_us == window {
                rate_use.used.max(0)
            } else {
                0
            };
            let leases: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT proxy_id, epoch, allowance, used, expires_at_us FROM rate_leases \
                 WHERE rate_limit_id = $1 AND dimension = $2 AND window_start_us = $3",
            )
            .bind(&rate_use.rate_limit_id)
            .bind(rate_use.dimension.as_str())
            .bind(window)
            .fetch_all(&mut **tx)
            .await?;
            let is_mine = |proxy: &str, e: i64| proxy == proxy_id && e == epoch;
            let mine = leases.iter().find(|(proxy, e, ..)| is_mine(proxy, *e));
            let others: i64 = leases
                .iter()
                .filter(|(proxy, e, ..)| !is_mine(proxy, *e))
                .map(|(_, _, allowance, used, _)| (*allowance).max(*used))
                .fold(0_i64, i64::saturating_add);
            let live_others = leases
                .iter()
                .filter(|(proxy, e, _, _, expires)| !is_mine(proxy, *e) && *expires > now_us)
                .count();
            let base = mine.map_or(0, |(_, _, allowance, ..)| *allowance).max(used);
            let wanted = if mine.is_none() {
                rate_use.wanted.max(1)
            } else {
                rate_use.wanted.max(0)
            };
            let (grant, unallocated) = crate::store::sql::rate_limits::size_rate_grant(
                limit,
                others.saturating_add(base),
                i64::try_from(live_others).unwrap_or(i64::MAX).saturating_add(1),
                wanted,
                policy.share_divisor,
            );
            let allowance = base + grant;
            let expires_at_us = now_us + policy.ttl_us;
            if mine.is_none() {
                // A window's first grant to this process: the leases of windows gone say
                // nothing any more (a range of the primary key, so cheap however many).
                sqlx::query(
                    "DELETE FROM rate_leases WHERE rate_limit_id = $1 AND dimension = $2 \
                     AND window_start_us < $3",
                )
                .bind(&rate_use.rate_limit_id)
                .bind(rate_use.dimension.as_str())
                .bind(window)
                .execute(&mut **tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO rate_leases (rate_limit_id, dimension, window_start_us, proxy_id, \
                 epoch, allowance, used, expires_at_us, updated_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (rate_limit_id, dimension, window_start_us, proxy_id, epoch) \
                 DO UPDATE SET allowance = excluded.allowance, used = excluded.used, \
                 expires_at_us = excluded.expires_at_us, updated_at_us = excluded.updated_at_us",
            )
            .bind(&rate_use.rate_limit_id)
            .bind(rate_use.dimension.as_str())
            .bind(window)
            .bind(proxy_id)
            .bind(epoch)
            .bind(allowance)
            .bind(used)
            .bind(expires_at_us)
            .bind(now_us)
            .execute(&mut **tx)
            .await?;
            Ok(Some(RateGrant {
                rate_limit_id: rate_use.rate_limit_id.clone(),
                dimension: rate_use.dimension,
                window_start_us: window,
                allowance,
                expires_at_us,
                exhausted: unallocated <= 0,
                unallocated,
            }))
        }

        impl RateLimitStore for $store {
            async fn create_rate_limit(
                &self,
                new: NewRateLimit,
                now_us: i64,
                audit: Audit,
            ) -> StoreResult<RateLimit> {
                let mut tx = begin_budget_write(self).await?;
                let (org_id, scope_id) = resolve_rate_limit_target(&mut tx, &new.target).await?;
                sqlx::query(
                    "INSERT INTO rate_limits (id, org_id, scope, scope_id, requests_per_window, \
                     tokens_per_window, window_seconds, created_at_us, updated_at_us) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(new_id())
                .bind(&org_id)
                .bind(new.target.scope().as_str())
                .bind(&scope_id)
                .bind(to_i64(new.requests_per_window, "requests_per_window")?)
                .bind(to_i64(new.tokens_per_window, "tokens_per_window")?)
                .bind(i64::from(new.window_seconds))
                .bind(now_us)
                .execute(&mut *tx)
                .await
                .map_err(|e| write_error(e, || format!("rate limit of '{}'", new.target), ""))?;
                record_change(&mut tx, &audit).await?;
                let created = fetch_rate_limit(&mut tx, &new.target, now_us).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn list_rate_limits(&self, org: &str, now_us: i64) -> StoreResult<Vec<RateLimit>> {
                let mut tx = self.readers().begin().await?;
                org_id(&mut tx, org).await?;
                let sql = format!(
                    "{RATE_LIMIT_SELECT} WHERE o.name = $1 ORDER BY r.scope, r.created_at_us, r.id"
                );
                let rows = sqlx::query(&sql).bind(org).fetch_all(&mut *tx).await?;
                let mut limits = Vec::with_capacity(rows.len());
                for row in &rows {
                    limits.push(with_grants(&mut tx, rate_limit_row(row)?, now_us).await?);
                }
                Ok(limits)
            }

            async fn update_rate_limit(
                &self,
                target: &RateLimitTarget,
                patch: RateLimitPatch,
                now_us: i64,
                audit: Audit,
            ) -> StoreResult<RateLimit> {
                let mut tx = begin_budget_write(self).await?;
                let current = fetch_rate_limit(&mut tx, target, now_us).await?;
                sqlx::query(
                    "UPDATE rate_limits SET requests_per_window = $1, tokens_per_window = $2, \
                     window_seconds = $3, updated_at_us = $4 WHERE id = $5",
                )
                .bind(to_i64(
                    patch.requests_per_window.unwrap_or(current.requests_per_window),
                    "requests_per_window",
                )?)
                .bind(to_i64(
                    patch.tokens_per_window.unwrap_or(current.tokens_per_window),
                    "tokens_per_window",
                )?)
                .bind(i64::from(patch.window_seconds.unwrap_or(current.window_seconds)))
                .bind(now_us)
                .bind(&current.id)
                .execute(&mut *tx)
                .await?;
                record_change(&mut tx, &audit).await?;
                let updated = fetch_rate_limit(&mut tx, target, now_us).await?;
                tx.commit().await?;
                Ok(updated)
            }

            async fn delete_rate_limit(
                &self,
                target: &RateLimitTarget,
                audit: Audit,
            ) -> StoreResult<()> {
                let mut tx = begin_budget_write(self).await?;
                let current = fetch_rate_limit(&mut tx, target, now_us()).await?;
                sqlx::query("DELETE FROM rate_leases WHERE rate_limit_id = $1")
                    .bind(&current.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM rate_limits WHERE id = $1")
                    .bind(&current.id)
                    .execute(&mut *tx)
                    .await?;
                record_change(&mut tx, &audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn acquire_rate_leases(
                &self,
                proxy_id: &str,
                epoch: i64,
                uses: Vec<RateUse>,
                now_us: i64,
                policy: LeasePolicy,
            ) -> StoreResult<Vec<RateGrant>> {
                let mut tx = begin_budget_write(self).await?;
                let mut grants = Vec::with_capacity(uses.len());
                for rate_use in &uses {
                    if let Some(grant) =
                        acquire_rate_lease_tx(&mut tx, proxy_id, epoch, rate_use, now_us, policy)
                            .await?
                    {
                        grants.push(grant);
                    }
                }
                tx.commit().await?;
                Ok(grants)
            }
        }
    };
}

pub(crate) use rate_limits_sql;

#[cfg(test)]
mod tests {
    use super::size_rate_grant;

    #[test]
    fn grants_shrink_toward_the_limit_and_never_pass_it() {
        // 100 left among 4 live leases: a sixteenth each, or what was asked if more.
        assert_eq!(size_rate_grant(100, 0, 4, 1, 4), (6, 94));
        assert_eq!(size_rate_grant(100, 0, 4, 20, 4), (20, 80));
        // Near the end the share rounds to 0 and the ask is what is granted.
        assert_eq!(size_rate_grant(100, 97, 4, 1, 4), (1, 2));
        assert_eq!(size_rate_grant(100, 100, 4, 1, 4), (0, 0));
        // Spoken for past the limit (the limit was lowered): nothing, and nothing left.
        assert_eq!(size_rate_grant(100, 150, 1, 5, 4), (0, 0));
        // Only keeping alive: nothing more.
        assert_eq!(size_rate_grant(100, 10, 2, 0, 4), (0, 90));
    }

    proptest::proptest! {
        /// Whatever leases ask in whatever order, their allowances never sum past the limit.
        #[test]
        fn allowances_never_sum_past_the_limit(
            limit in 0..10_000_i64,
            asks in proptest::collection::vec((0..8_usize, 0..500_i64), 1..200),
        ) {
            let mut allowances = [0_i64; 8];
            for (lease, wanted) in asks {
                let others: i64 = allowances.iter().enumerate()
                    .filter(|(i, _)| *i != lease).map(|(_, a)| *a).sum();
                let (grant, unallocated) =
                    size_rate_grant(limit, others + allowances[lease], 8, wanted, 4);
                allowances[lease] += grant;
                proptest::prop_assert!(grant >= 0 && unallocated >= 0);
                proptest::prop_assert!(allowances.iter().sum::<i64>() <= limit);
                proptest::prop_assert_eq!(allowances.iter().sum::<i64>() + unallocated, limit);
            }
        }
    }
}
