//! Budgets on the control plane's `/metrics`: each budget's limit, its current window's spend
//! (and the share of it that is Sluice's estimate), and what live proxy leases hold of it. A
//! task of its own reads them from the store every `budget_metrics_interval` (15 s) and keeps
//! them rendered, so a scrape never waits on the store and scrapes never add to its load. Labels are the budget's
//! name as operators gave it (bounded by the config, never by traffic).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use sluice_shared::openmetrics::escape_label;

use crate::metrics::Metrics;
use crate::store::{Budget, Store};

/// The most budgets shown: the oldest, should an installation hold more.
const MOST_BUDGETS: usize = 10_000;

/// Each gauge: its name, its help, and its value of a budget.
type Gauge = (&'static str, &'static str, fn(&Budget) -> i64);

const GAUGES: [Gauge; 5] = [
    (
        "sluice_budget_limit_micros",
        "A budget's limit for its window, integer micro-dollars.",
        |budget| budget.limit_micros,
    ),
    (
        "sluice_budget_spent_micros",
        "Spent in the budget's current window, integer micro-dollars (provider-reported and estimated).",
        |budget| budget.spent_micros,
    ),
    (
        "sluice_budget_estimated_micros",
        "The share of the spend that is Sluice's estimate rather than the provider's report.",
        |budget| budget.estimated_micros,
    ),
    (
        "sluice_budget_leased_micros",
        "Granted to live proxy leases and not yet arrived as usage.",
        |budget| budget.leased_micros,
    ),
    (
        "sluice_budget_leases",
        "Live proxy leases on the budget.",
        |budget| i64::from(budget.leases),
    ),
];

/// The gauges of `budgets` in Prometheus's text format.
pub fn render(budgets: &[Budget], out: &mut String) {
    let labels: Vec<String> = budgets
        .iter()
        .map(|budget| {
            let mut labels = String::from("budget=\"");
            escape_label(&budget.period.label(&budget.target), &mut labels);
            let _ = write!(
                labels,
                "\",scope=\"{}\",posture=\"{}\"",
                budget.target.scope().as_str().to_lowercase(),
                budget.posture.as_str().to_lowercase()
            );
            labels
        })
        .collect();
    for (name, help, value) in GAUGES {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (budget, labels) in budgets.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(budget));
        }
    }
}

/// Reads the budgets every `interval` into `metrics`, until the process ends. A failed read
/// leaves the last gauges in place and says so in the log.
pub async fn refresh<S: Store>(store: Arc<S>, metrics: Arc<Metrics>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match store
            .every_budget(sluice_shared::time::now_us(), MOST_BUDGETS)
            .await
        {
            Ok(budgets) => {
                let mut text = String::with_capacity(256 + budgets.len() * 400);
                render(&budgets, &mut text);
                metrics.set_budget_gauges(text);
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the budgets for /metrics; showing the last read");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BudgetPeriod, BudgetPosture, BudgetTarget};

    #[test]
    fn each_budget_has_its_gauges_under_its_escaped_name() {
        let budget = Budget {
            id: "b1".into(),
            target: BudgetTarget {
                organization: "acme".into(),
                project: Some("we\"b\\".into()),
                virtual_key: None,
            },
            scope_id: "p1".into(),
            period: BudgetPeriod::Month,
            limit_micros: 5_000_000,
            posture: BudgetPosture::Hard,
            alert_percents: vec![80],
            window_start_us: 0,
            spent_micros: 1_250_000,
            estimated_micros: 250_000,
            requests: 3,
            created_at_us: 0,
            updated_at_us: 0,
            leased_micros: 400_000,
            leases: 2,
        };
        let mut out = String::new();
        render(&[budget], &mut out);
        let labels = r#"{budget="acme/we\"b\\ (month)",scope="project",posture="hard"}"#;
        for line in [
            format!("sluice_budget_limit_micros{labels} 5000000"),
            format!("sluice_budget_spent_micros{labels} 1250000"),
            format!("sluice_budget_estimated_micros{labels} 250000"),
            format!("sluice_budget_leased_micros{labels} 400000"),
            format!("sluice_budget_leases{labels} 2"),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
        assert_eq!(out.matches("# TYPE ").count(), 5);
    }
}
