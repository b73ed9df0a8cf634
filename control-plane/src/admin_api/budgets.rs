//! Budget requests at the edge: validated and converted between the wire and the store.

use sluice_proto::admin::v1 as pb;
use tonic::Status;

use super::names;
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
