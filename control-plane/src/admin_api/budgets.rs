//! Budget requests at the edge: validated and converted between the wire and the store.

use super::*;

use crate::store::{self, BudgetPeriod, BudgetPosture, BudgetTarget};

const MAX_ALERTS: usize = 10;
/// Alerts past 1 000 % of a limit are a typo.
const MAX_ALERT_PERCENT: u32 = 1_000;

pub(super) fn target(target: Option<pb::BudgetTarget>) -> Result<BudgetTarget, Status> {
    let target = target.ok_or_else(|| Status::invalid_argument("target: is required"))?;
    names(&[("target.organization", &target.organization)])?;
    let optional = |value: String| (!value.is_empty()).then_some(value);
    let project = optional(target.project);
    let virtual_key = optional(target.virtual_key);
    if let Some(project) = &project {
        names(&[("target.project", project)])?;
    }
    match (&project, &virtual_key) {
        (None, Some(_)) => Err(Status::invalid_argument(
            "target.virtual_key: needs target.project",
        )),
        (_, Some(key)) => {
            names(&[("target.virtual_key", key)])?;
            Ok(())
        }
        _ => Ok(()),
    }?;
    Ok(BudgetTarget {
        organization: target.organization,
        project,
        virtual_key,
    })
}

pub(super) fn period(value: i32) -> Result<BudgetPeriod, Status> {
    match pb::BudgetPeriod::try_from(value) {
        Ok(pb::BudgetPeriod::Day) => Ok(BudgetPeriod::Day),
        Ok(pb::BudgetPeriod::Month) => Ok(BudgetPeriod::Month),
        Ok(pb::BudgetPeriod::Total) => Ok(BudgetPeriod::Total),
        _ => Err(Status::invalid_argument("period: day, month or total")),
    }
}

/// `None` for unspecified (keep, on update).
pub(super) fn posture(value: i32) -> Result<Option<BudgetPosture>, Status> {
    match pb::BudgetPosture::try_from(value) {
        Ok(pb::BudgetPosture::Unspecified) => Ok(None),
        Ok(pb::BudgetPosture::Hard) => Ok(Some(BudgetPosture::Hard)),
        Ok(pb::BudgetPosture::Soft) => Ok(Some(BudgetPosture::Soft)),
        Err(_) => Err(Status::invalid_argument("posture: hard or soft")),
    }
}

pub(super) fn limit(value: i64) -> Result<i64, Status> {
    if value < 0 {
        return Err(Status::invalid_argument(
            "limit_micros: must not be negative",
        ));
    }
    Ok(value)
}

/// Ascending, without repeats; empty means the defaults.
pub(super) fn alert_percents(mut percents: Vec<u32>) -> Result<Vec<u32>, Status> {
    if percents.is_empty() {
        return Ok(crate::store::budget_defaults::alert_percents());
    }
    if percents.len() > MAX_ALERTS
        || percents
            .iter()
            .any(|p| !(1..=MAX_ALERT_PERCENT).contains(p))
    {
        return Err(Status::invalid_argument(format!(
            "alert_percents: at most {MAX_ALERTS}, each 1 to {MAX_ALERT_PERCENT}"
        )));
    }
    percents.sort_unstable();
    percents.dedup();
    Ok(percents)
}

impl From<store::Budget> for pb::Budget {
    fn from(b: store::Budget) -> Self {
        let window = b.period.window();
        Self {
            id: b.id,
            target: Some(pb::BudgetTarget {
                organization: b.target.organization,
                project: b.target.project.unwrap_or_default(),
                virtual_key: b.target.virtual_key.unwrap_or_default(),
            }),
            period: match b.period {
                BudgetPeriod::Day => pb::BudgetPeriod::Day,
                BudgetPeriod::Month => pb::BudgetPeriod::Month,
                BudgetPeriod::Total => pb::BudgetPeriod::Total,
            } as i32,
            limit_micros: b.limit_micros,
            posture: match b.posture {
                BudgetPosture::Hard => pb::BudgetPosture::Hard,
                BudgetPosture::Soft => pb::BudgetPosture::Soft,
            } as i32,
            alert_percents: b.alert_percents,
            window_start_us: b.window_start_us,
            window_end_us: match b.period {
                BudgetPeriod::Total => 0,
                _ => window.end_us(b.window_start_us),
            },
            spent_micros: b.spent_micros,
            estimated_micros: b.estimated_micros,
            requests: u64::try_from(b.requests).unwrap_or(0),
            created_at_us: b.created_at_us,
            updated_at_us: b.updated_at_us,
            leased_micros: b.leased_micros,
            leases: b.leases,
        }
    }
}

// === the RPCs ===

pub(super) async fn create_budget<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::CreateBudgetRequest>,
) -> Reply<pb::CreateBudgetResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let new = store::NewBudget {
        target: budgets::target(req.target)?,
        period: budgets::period(req.period)?,
        limit_micros: budgets::limit(req.limit_micros)?,
        posture: budgets::posture(req.posture)?.ok_or_else(|| {
            Status::invalid_argument("posture: hard (refuse once spent) or soft (alert only)")
        })?,
        alert_percents: budgets::alert_percents(req.alert_percents)?,
    };
    let audit =
        Audit::new(&actor, "budget.create", new.period.label(&new.target)).with_detail(format!(
            "{} micro-dollars, {}",
            new.limit_micros,
            new.posture.as_str().to_lowercase()
        ));
    let budget = api
        .store
        .create_budget(new, sluice_shared::time::now_us(), audit)
        .await
        .map_err(store_status)?;
    reply(pb::CreateBudgetResponse {
        budget: Some(budget.into()),
    })
}

pub(super) async fn list_budgets<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListBudgetsRequest>,
) -> Reply<pb::ListBudgetsResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    let budgets = api
        .store
        .list_budgets(&req.organization, sluice_shared::time::now_us())
        .await
        .map_err(store_status)?;
    reply(pb::ListBudgetsResponse {
        budgets: budgets.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn update_budget<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::UpdateBudgetRequest>,
) -> Reply<pb::UpdateBudgetResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let target = budgets::target(req.target)?;
    let period = budgets::period(req.period)?;
    let patch = store::BudgetPatch {
        limit_micros: req.limit_micros.map(budgets::limit).transpose()?,
        posture: budgets::posture(req.posture)?,
        alert_percents: if req.replace_alert_percents {
            Some(budgets::alert_percents(req.alert_percents)?)
        } else {
            None
        },
    };
    let audit = Audit::new(&actor, "budget.update", period.label(&target));
    let budget = api
        .store
        .update_budget(&target, period, patch, sluice_shared::time::now_us(), audit)
        .await
        .map_err(store_status)?;
    reply(pb::UpdateBudgetResponse {
        budget: Some(budget.into()),
    })
}

pub(super) async fn delete_budget<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::DeleteBudgetRequest>,
) -> Reply<pb::DeleteBudgetResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let target = budgets::target(req.target)?;
    let period = budgets::period(req.period)?;
    let audit = Audit::new(&actor, "budget.delete", period.label(&target));
    api.store
        .delete_budget(&target, period, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteBudgetResponse {})
}

pub(super) async fn delete_model<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::DeleteModelRequest>,
) -> Reply<pb::DeleteModelResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let audit = Audit::new(
        &actor,
        "model.delete",
        format!("{}/{}", req.organization, req.name),
    );
    api.store
        .delete_model(&req.organization, &req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteModelResponse {})
}
