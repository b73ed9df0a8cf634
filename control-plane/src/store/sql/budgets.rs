//! Budgets and leases in SQL: the [`BudgetStore`](crate::store::BudgetStore) methods and the
//! spend roll-up that runs inside each usage batch's transaction.

/// Default alert thresholds, in percent of the limit.
pub(crate) const DEFAULT_ALERT_PERCENTS: [u32; 3] = [50, 80, 100];

pub(crate) fn percents_text(percents: &[u32]) -> String {
    percents
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn percents_from_text(text: &str) -> Vec<u32> {
    text.split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// The highest threshold at or below `spent` of `limit`, or 0.
pub(crate) fn reached_percent(percents: &[u32], spent: i64, limit: i64) -> u32 {
    percents
        .iter()
        .copied()
        .filter(|p| i128::from(spent) * 100 >= i128::from(*p) * i128::from(limit))
        .max()
        .unwrap_or(0)
}

macro_rules! budgets_sql {
    ($store:ty) => {
        const BUDGET_SELECT: &str = "SELECT b.id, b.scope, b.scope_id, b.period, b.limit_micros, \
             b.posture, b.alert_percents, b.created_at_us, b.updated_at_us, \
             o.name AS org_name, p.name AS project_name, v.name AS key_name, \
             vp.name AS key_project_name \
             FROM budgets b JOIN organizations o ON o.id = b.org_id \
             LEFT JOIN projects p ON b.scope = 'PROJECT' AND p.id = b.scope_id \
             LEFT JOIN virtual_keys v ON b.scope = 'VIRTUAL_KEY' AND v.id = b.scope_id \
             LEFT JOIN projects vp ON vp.id = v.project_id";

        fn budget_row(row: &DbRow) -> StoreResult<Budget> {
            let scope = BudgetScope::parse(row.try_get("scope")?)?;
            let gone = || Some("(deleted)".to_owned());
            let name = |column: &str| -> StoreResult<Option<String>> { Ok(row.try_get(column)?) };
            let target = BudgetTarget {
                organization: row.try_get("org_name")?,
                project: match scope {
                    BudgetScope::Organization => None,
                    BudgetScope::Project => name("project_name")?.or_else(gone),
                    BudgetScope::VirtualKey => name("key_project_name")?.or_else(gone),
                },
                virtual_key: match scope {
                    BudgetScope::VirtualKey => name("key_name")?.or_else(gone),
                    _ => None,
                },
            };
            Ok(Budget {
                id: row.try_get("id")?,
                target,
                scope_id: row.try_get("scope_id")?,
                period: BudgetPeriod::parse(row.try_get("period")?)?,
                limit_micros: row.try_get("limit_micros")?,
                posture: BudgetPosture::parse(row.try_get("posture")?)?,
                alert_percents: percents_from_text(row.try_get("alert_percents")?),
                window_start_us: 0,
                spent_micros: 0,
                estimated_micros: 0,
                requests: 0,
                created_at_us: row.try_get("created_at_us")?,
                updated_at_us: row.try_get("updated_at_us")?,
                leased_micros: 0,
                leases: 0,
            })
        }

        /// The organisation id and the target's id.
        async fn resolve_budget_target(
            tx: &mut Tx,
            target: &BudgetTarget,
        ) -> StoreResult<(String, String)> {
            let org = &target.organization;
            let org_id = org_id(tx, org).await?;
            let scope_id = match (&target.project, &target.virtual_key) {
                (None, _) => org_id.clone(),
                (Some(project), None) => project_id(tx, org, project).await?,
                (Some(project), Some(key)) => fetch_virtual_key(tx, org, project, key).await?.id,
            };
            Ok((org_id, scope_id))
        }

        /// Fills in the spend of the window holding `now_us`.
        async fn with_spend(tx: &mut Tx, mut budget: Budget, now_us: i64) -> StoreResult<Budget> {
            budget.window_start_us = budget.period.window().start_us(now_us);
            let row: Option<(i64, i64, i64)> = sqlx::query_as(
                "SELECT spent_micros, estimated_micros, requests FROM budget_spend \
                 WHERE budget_id = $1 AND window_start_us = $2",
            )
            .bind(&budget.id)
            .bind(budget.window_start_us)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((spent, estimated, requests)) = row {
                budget.spent_micros = spent;
                budget.estimated_micros = estimated;
                budget.requests = requests;
            }
            let (leased, leases): (i64, i64) = sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(CASE WHEN allowance_micros > committed_micros \
                 THEN allowance_micros - committed_micros ELSE 0 END), 0) AS BIGINT), COUNT(*) \
                 FROM budget_leases WHERE budget_id = $1 AND window_start_us = $2 \
                 AND expires_at_us > $3",
            )
            .bind(&budget.id)
            .bind(budget.window_start_us)
            .bind(now_us)
            .fetch_one(&mut **tx)
            .await?;
            budget.leased_micros = leased;
            budget.leases = u32::try_from(leases).unwrap_or(u32::MAX);
            Ok(budget)
        }

        /// HARD budgets, for the snapshot.
        async fn config_budgets(tx: &mut Tx) -> StoreResult<Vec<ConfigBudget>> {
            let sql = format!("{BUDGET_SELECT} WHERE b.posture = 'HARD' ORDER BY b.id");
            let rows = sqlx::query(&sql).fetch_all(&mut **tx).await?;
            rows.iter()
                .map(|row| {
                    let budget = budget_row(row)?;
                    Ok(ConfigBudget {
                        name: budget.period.label(&budget.target),
                        id: budget.id,
                        scope_id: budget.scope_id,
                        period: budget.period,
                    })
                })
                .collect()
        }

        /// One lease renewal: see `Store::acquire_leases`.
        async fn acquire_lease_tx(
            tx: &mut Tx,
            proxy_id: &str,
            epoch: i64,
            lease_use: &LeaseUse,
            now_us: i64,
            policy: LeasePolicy,
        ) -> StoreResult<Option<LeaseGrant>> {
            let budget: Option<(i64, String, String)> = sqlx::query_as(
                "SELECT limit_micros, posture, period FROM budgets WHERE id = $1",
            )
            .bind(&lease_use.budget_id)
            .fetch_optional(&mut **tx)
            .await?;
            let Some((limit, posture, period)) = budget else {
                return Ok(None);
            };
            if BudgetPosture::parse(&posture)? != BudgetPosture::Hard {
                return Ok(None);
            }
            let window = BudgetPeriod::parse(&period)?.window().start_us(now_us);
            // Figures for another window (the proxy has not rolled over yet) say nothing
            // about this one.
            let used = if lease_use.window_start_us == window {
                lease_use.used_micros.max(0)
            } else {
                0
            };
            let spent: i64 = sqlx::query_scalar(
                "SELECT spent_micros FROM budget_spend WHERE budget_id = $1 AND window_start_us = $2",
            )
            .bind(&lease_use.budget_id)
            .bind(window)
            .fetch_optional(&mut **tx)
            .await?
            .unwrap_or(0);
            let leases: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                "SELECT proxy_id, epoch, allowance_micros, committed_micros FROM budget_leases \
                 WHERE budget_id = $1 AND window_start_us = $2 AND expires_at_us > $3",
            )
            .bind(&lease_use.budget_id)
            .bind(window)
            .bind(now_us)
            .fetch_all(&mut **tx)
            .await?;
            let mine = leases
                .iter()
                .find(|(proxy, e, _, _)| proxy == proxy_id && *e == epoch);
            let others: i64 = leases
                .iter()
                .filter(|(proxy, e, _, _)| !(proxy == proxy_id && *e == epoch))
                .map(|(_, _, allowance, committed)| (allowance - committed).max(0))
                .sum();
            let live = i64::try_from(leases.len()).unwrap_or(i64::MAX) + i64::from(mine.is_none());
            let (old_allowance, committed) = mine.map_or((0, 0), |(_, _, a, c)| (*a, *c));
            // What this process may already spend (its allowance, or more if a request cost
            // more than it reserved) is spoken for.
            let base = old_allowance.max(used);
            let available = limit - spent - others - (base - committed).max(0);
            let grant = if lease_use.wanted_micros > 0 || mine.is_none() {
                let share = (limit - spent).max(0) / (policy.share_divisor.max(1) * live.max(1));
                share.max(lease_use.wanted_micros).min(available.max(0))
            } else {
                0
            };
            let allowance = base + grant;
            let expires_at_us = now_us + policy.ttl_us;
            sqlx::query(
                "INSERT INTO budget_leases (budget_id, window_start_us, proxy_id, epoch, \
                 allowance_micros, committed_micros, used_micros, expires_at_us, updated_at_us) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8) \
                 ON CONFLICT (budget_id, window_start_us, proxy_id, epoch) DO UPDATE SET \
                 allowance_micros = excluded.allowance_micros, used_micros = excluded.used_micros, \
                 expires_at_us = excluded.expires_at_us, updated_at_us = excluded.updated_at_us",
            )
            .bind(&lease_use.budget_id)
            .bind(window)
            .bind(proxy_id)
            .bind(epoch)
            .bind(allowance)
            .bind(used)
            .bind(expires_at_us)
            .bind(now_us)
            .execute(&mut **tx)
            .await?;
            Ok(Some(LeaseGrant {
                budget_id: lease_use.budget_id.clone(),
                window_start_us: window,
                allowance_micros: allowance,
                expires_at_us,
                exhausted: available - grant <= 0,
            }))
        }

        async fn fetch_budget(
            tx: &mut Tx,
            target: &BudgetTarget,
            period: BudgetPeriod,
            now_us: i64,
        ) -> StoreResult<Budget> {
            let (_, scope_id) = resolve_budget_target(tx, target).await?;
            let sql = format!("{BUDGET_SELECT} WHERE b.scope_id = $1 AND b.period = $2");
            let row = sqlx::query(&sql)
                .bind(&scope_id)
                .bind(period.as_str())
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| {
                    StoreError::not_found(format!(
                        "{} budget of '{target}'",
                        period.as_str().to_lowercase()
                    ))
                })?;
            with_spend(tx, budget_row(&row)?, now_us).await
        }

        async fn create_budget_tx(
            tx: &mut Tx,
            new: &NewBudget,
            now_us: i64,
        ) -> StoreResult<String> {
            let (org_id, scope_id) = resolve_budget_target(tx, &new.target).await?;
            let id = new_id();
            sqlx::query(
                "INSERT INTO budgets (id, org_id, scope, scope_id, period, limit_micros, posture, \
                 alert_percents, created_at_us, updated_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            )
            .bind(&id)
            .bind(&org_id)
            .bind(new.target.scope().as_str())
            .bind(&scope_id)
            .bind(new.period.as_str())
            .bind(new.limit_micros)
            .bind(new.posture.as_str())
            .bind(percents_text(&new.alert_percents))
            .bind(now_us)
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                write_error(
                    e,
                    || format!("{} budget of '{}'", new.period.as_str().to_lowercase(), new.target),
                    "",
                )
            })?;
            // A budget starts from what its target already spent in the current window. Windows
            // start and end on whole hours, so the hourly roll-up holds all of it.
            let window_start = new.period.window().start_us(now_us);
            let scope_filter = match new.target.scope() {
                BudgetScope::Organization => {
                    "project_id IN (SELECT id FROM projects WHERE org_id = $1)"
                }
                BudgetScope::Project => "project_id = $1",
                BudgetScope::VirtualKey => "virtual_key_id = $1",
            };
            let sql = format!(
                "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN source = 'ESTIMATED' THEN cost_micros ELSE 0 END), 0) \
                 AS BIGINT), CAST(COALESCE(SUM(requests), 0) AS BIGINT) FROM usage_hourly \
                 WHERE {scope_filter} AND hour_us >= $2 AND hour_us < $3"
            );
            let (spent, estimated, requests): (i64, i64, i64) = sqlx::query_as(&sql)
                .bind(&scope_id)
                .bind(window_start)
                .bind(new.period.window().end_us(now_us))
                .fetch_one(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO budget_spend (budget_id, window_start_us, spent_micros, \
                 estimated_micros, requests, alerted_percent) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(window_start)
            .bind(spent)
            .bind(estimated)
            .bind(requests)
            .bind(i64::from(reached_percent(&new.alert_percents, spent, new.limit_micros)))
            .execute(&mut **tx)
            .await?;
            Ok(id)
        }

        /// One inserted usage record, as far as budgets care.
        struct Spend<'r> {
            lease_epoch: i64,
            project_id: &'r str,
            virtual_key_id: &'r str,
            started_at_us: i64,
            cost_micros: i64,
            estimated: bool,
        }

        /// Adds the records' cost to every budget that covers them, in the window each record
        /// started in, and raises the alerts whose thresholds this crossed (audit log).
        async fn roll_up_budgets(
            tx: &mut Tx,
            proxy_id: &str,
            spends: &[Spend<'_>],
        ) -> StoreResult<Vec<BudgetAlert>> {
            if spends.is_empty() {
                return Ok(Vec::new());
            }
            let budgets = {
                let rows = sqlx::query(&format!("{BUDGET_SELECT} ORDER BY b.id"))
                    .fetch_all(&mut **tx)
                    .await?;
                rows.iter().map(budget_row).collect::<StoreResult<Vec<_>>>()?
            };
            if budgets.is_empty() {
                return Ok(Vec::new());
            }
            let project_orgs: std::collections::HashMap<String, String> =
                sqlx::query_as::<_, (String, String)>("SELECT id, org_id FROM projects")
                    .fetch_all(&mut **tx)
                    .await?
                    .into_iter()
                    .collect();
            // (budget index, window start) → (spent, estimated, requests)
            let mut deltas: std::collections::BTreeMap<(usize, i64), (i64, i64, i64)> =
                std::collections::BTreeMap::new();
            // (budget index, window start, lease epoch) → cost that lease's proxy reserved
            let mut lease_credits: std::collections::BTreeMap<(usize, i64, i64), i64> =
                std::collections::BTreeMap::new();
            for spend in spends {
                let org_id = project_orgs.get(spend.project_id);
                for (index, budget) in budgets.iter().enumerate() {
                    let covers = match budget.target.scope() {
                        // An organisation budget's scope id is the organisation's id.
                        BudgetScope::Organization => org_id == Some(&budget.scope_id),
                        BudgetScope::Project => budget.scope_id == spend.project_id,
                        BudgetScope::VirtualKey => budget.scope_id == spend.virtual_key_id,
                    };
                    if !covers {
                        continue;
                    }
                    let window = budget.period.window().start_us(spend.started_at_us);
                    if budget.posture == BudgetPosture::Hard && spend.lease_epoch != 0 {
                        *lease_credits
                            .entry((index, window, spend.lease_epoch))
                            .or_default() += spend.cost_micros;
                    }
                    let entry = deltas.entry((index, window)).or_default();
                    entry.0 += spend.cost_micros;
                    if spend.estimated {
                        entry.1 += spend.cost_micros;
                    }
                    entry.2 += 1;
                }
            }
            // Spend that arrived is no longer a lease's to spend: it is in budget_spend now.
            for ((index, window_start, epoch), cost) in lease_credits {
                sqlx::query(
                    "UPDATE budget_leases SET committed_micros = committed_micros + $1 \
                     WHERE budget_id = $2 AND window_start_us = $3 AND proxy_id = $4 \
                     AND epoch = $5",
                )
                .bind(cost)
                .bind(&budgets[index].id)
                .bind(window_start)
                .bind(proxy_id)
                .bind(epoch)
                .execute(&mut **tx)
                .await?;
            }
            let mut alerts = Vec::new();
            for ((index, window_start), (spent, estimated, requests)) in deltas {
                let budget = &budgets[index];
                let (total, alerted): (i64, i64) = sqlx::query_as(
                    "INSERT INTO budget_spend (budget_id, window_start_us, spent_micros, \
                     estimated_micros, requests, alerted_percent) VALUES ($1, $2, $3, $4, $5, 0) \
                     ON CONFLICT (budget_id, window_start_us) DO UPDATE SET \
                     spent_micros = budget_spend.spent_micros + excluded.spent_micros, \
                     estimated_micros = budget_spend.estimated_micros + excluded.estimated_micros, \
                     requests = budget_spend.requests + excluded.requests \
                     RETURNING spent_micros, alerted_percent",
                )
                .bind(&budget.id)
                .bind(window_start)
                .bind(spent)
                .bind(estimated)
                .bind(requests)
                .fetch_one(&mut **tx)
                .await?;
                let reached = reached_percent(&budget.alert_percents, total, budget.limit_micros);
                if i64::from(reached) <= alerted {
                    continue;
                }
                sqlx::query(
                    "UPDATE budget_spend SET alerted_percent = $1 \
                     WHERE budget_id = $2 AND window_start_us = $3",
                )
                .bind(i64::from(reached))
                .bind(&budget.id)
                .bind(window_start)
                .execute(&mut **tx)
                .await?;
                let alert = BudgetAlert {
                    budget_id: budget.id.clone(),
                    target: budget.target.to_string(),
                    period: budget.period,
                    posture: budget.posture,
                    percent: reached,
                    spent_micros: total,
                    limit_micros: budget.limit_micros,
                    window_start_us: window_start,
                };
                let audit = Audit::new(
                    "sluice",
                    "budget.alert",
                    alert.period.label(&alert.target),
                )
                .with_detail(format!(
                    "{}% reached: {} of {} micro-dollars ({} budget)",
                    alert.percent,
                    alert.spent_micros,
                    alert.limit_micros,
                    alert.posture.as_str().to_lowercase()
                ));
                record_audit(tx, &audit).await?;
                alerts.push(alert);
            }
            Ok(alerts)
        }

        impl BudgetStore for $store {
            async fn create_budget(
                &self,
                new: NewBudget,
                now_us: i64,
                audit: Audit,
            ) -> StoreResult<Budget> {
                let mut tx = begin_budget_write(self).await?;
                create_budget_tx(&mut tx, &new, now_us).await?;
                record_change(&mut tx, &audit).await?;
                let created = fetch_budget(&mut tx, &new.target, new.period, now_us).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn list_budgets(&self, org: &str, now_us: i64) -> StoreResult<Vec<Budget>> {
                let mut tx = self.readers().begin().await?;
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

            async fn every_budget(&self, now_us: i64, most: usize) -> StoreResult<Vec<Budget>> {
                let mut tx = self.readers().begin().await?;
                let sql = format!("{BUDGET_SELECT} ORDER BY b.created_at_us, b.id LIMIT $1");
                let rows = sqlx::query(&sql)
                    .bind(i64::try_from(most).unwrap_or(i64::MAX))
                    .fetch_all(&mut *tx)
                    .await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
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
                let mut tx = begin_budget_write(self).await?;
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
        }
    };
}

pub(crate) use budgets_sql;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_reached_by_integer_arithmetic() {
        let percents = DEFAULT_ALERT_PERCENTS;
        assert_eq!(reached_percent(&percents, 0, 1_000), 0);
        assert_eq!(reached_percent(&percents, 499, 1_000), 0);
        assert_eq!(reached_percent(&percents, 500, 1_000), 50);
        assert_eq!(reached_percent(&percents, 999, 1_000), 80);
        assert_eq!(reached_percent(&percents, 1_000, 1_000), 100);
        assert_eq!(
            reached_percent(&percents, 5, 0),
            100,
            "a zero budget is spent at once"
        );
        assert_eq!(percents_from_text(&percents_text(&percents)), percents);
    }
}
