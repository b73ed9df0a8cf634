//! `sluicectl budget`: spend limits on an organisation (`ORG`), a project (`ORG/PROJECT`) or
//! a virtual key (`ORG/PROJECT/KEY`), one per period.

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use sluice_proto::admin::v1 as pb;

use crate::output::{Listing, time};
use crate::{Client, deleted, required};

#[derive(Clone, Copy, ValueEnum)]
pub enum Period {
    Day,
    Month,
    Total,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Posture {
    /// Refuse requests (budget_exceeded) once spent.
    Hard,
    /// Alert only.
    Soft,
}

#[derive(Subcommand)]
pub enum BudgetCommand {
    /// Limit a target's spend over a period.
    Create {
        /// ORG, ORG/PROJECT or ORG/PROJECT/KEY.
        target: String,
        #[arg(long, value_enum)]
        period: Period,
        /// The limit in US dollars, e.g. 25 or 0.50 (exact to the micro-dollar).
        #[arg(long, value_parser = parse_usd)]
        limit_usd: i64,
        #[arg(long, value_enum)]
        posture: Posture,
        /// Alert thresholds in percent of the limit (default 50,80,100).
        #[arg(long, value_delimiter = ',')]
        alert: Vec<u32>,
    },
    /// Every budget of an organization, with its spend in the current window.
    List { org: String },
    /// Change a budget; raising a spent HARD budget re-admits traffic.
    Update {
        target: String,
        #[arg(long, value_enum)]
        period: Period,
        #[arg(long, value_parser = parse_usd)]
        limit_usd: Option<i64>,
        #[arg(long, value_enum)]
        posture: Option<Posture>,
        #[arg(long, value_delimiter = ',')]
        alert: Option<Vec<u32>>,
    },
    Delete {
        target: String,
        #[arg(long, value_enum)]
        period: Period,
    },
}

/// Dollars as an exact decimal, to integer micro-dollars: no float ever touches money.
fn parse_usd(text: &str) -> anyhow::Result<i64> {
    let text = text.trim().trim_start_matches('$');
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        bail!("'{text}' is not an amount of dollars such as 25 or 0.50");
    }
    if fraction.len() > 6 {
        bail!("'{text}': at most six decimals (one micro-dollar)");
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().context("the amount is too large")?
    };
    let fraction: i64 = format!("{fraction:0<6}").parse().context("bad decimals")?;
    whole
        .checked_mul(1_000_000)
        .and_then(|micros| micros.checked_add(fraction))
        .context("the amount is too large")
}

/// Micro-dollars as dollars with all six decimals.
pub fn dollars(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, (micros % 1_000_000).abs())
}

fn target(text: &str) -> anyhow::Result<pb::BudgetTarget> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        bail!("expected ORG, ORG/PROJECT or ORG/PROJECT/KEY, got '{text}'");
    }
    let part = |i: usize| parts.get(i).map(|p| (*p).to_owned()).unwrap_or_default();
    Ok(pb::BudgetTarget {
        organization: part(0),
        project: part(1),
        virtual_key: part(2),
    })
}

fn period(period: Period) -> i32 {
    let period = match period {
        Period::Day => pb::BudgetPeriod::Day,
        Period::Month => pb::BudgetPeriod::Month,
        Period::Total => pb::BudgetPeriod::Total,
    };
    period as i32
}

fn posture(posture: Posture) -> i32 {
    let posture = match posture {
        Posture::Hard => pb::BudgetPosture::Hard,
        Posture::Soft => pb::BudgetPosture::Soft,
    };
    posture as i32
}

const COLUMNS: &[&str] = &[
    "target",
    "period",
    "posture",
    "limit_usd",
    "spent_usd",
    "of_which_estimated_usd",
    "used_percent",
    "requests",
    "leased_usd",
    "leases",
    "window_start",
    "window_end",
    "alert_percents",
];

fn row(b: pb::Budget) -> Vec<Value> {
    let target = b.target.map_or_else(String::new, |t| {
        [t.organization, t.project, t.virtual_key]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    });
    let period = pb::BudgetPeriod::try_from(b.period)
        .map_or("unknown", |p| p.as_str_name())
        .trim_start_matches("BUDGET_PERIOD_")
        .to_lowercase();
    let posture = pb::BudgetPosture::try_from(b.posture)
        .map_or("unknown", |p| p.as_str_name())
        .trim_start_matches("BUDGET_POSTURE_")
        .to_lowercase();
    // Tenths of a percent, from integers.
    let used = if b.limit_micros > 0 {
        let tenths = i128::from(b.spent_micros) * 1000 / i128::from(b.limit_micros);
        format!("{}.{}", tenths / 10, tenths % 10)
    } else {
        "-".to_owned()
    };
    vec![
        json!(target),
        json!(period),
        json!(posture),
        json!(dollars(b.limit_micros)),
        json!(dollars(b.spent_micros)),
        json!(dollars(b.estimated_micros)),
        json!(used),
        json!(b.requests),
        json!(dollars(b.leased_micros)),
        json!(b.leases),
        time(b.window_start_us),
        time(b.window_end_us),
        json!(b.alert_percents),
    ]
}

pub async fn run(client: &mut Client, command: BudgetCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        BudgetCommand::Create {
            target: t,
            period: p,
            limit_usd,
            posture: s,
            alert,
        } => {
            let response = client
                .create_budget(pb::CreateBudgetRequest {
                    target: Some(target(&t)?),
                    period: period(p),
                    limit_micros: limit_usd,
                    posture: posture(s),
                    alert_percents: alert,
                })
                .await?;
            Listing::one(COLUMNS, row(required(response.into_inner().budget)?))
        }
        BudgetCommand::List { org } => {
            let response = client
                .list_budgets(pb::ListBudgetsRequest { organization: org })
                .await?;
            Listing::many(
                COLUMNS,
                response.into_inner().budgets.into_iter().map(row).collect(),
            )
        }
        BudgetCommand::Update {
            target: t,
            period: p,
            limit_usd,
            posture: s,
            alert,
        } => {
            let response = client
                .update_budget(pb::UpdateBudgetRequest {
                    target: Some(target(&t)?),
                    period: period(p),
                    limit_micros: limit_usd,
                    posture: s.map_or(pb::BudgetPosture::Unspecified as i32, posture),
                    replace_alert_percents: alert.is_some(),
                    alert_percents: alert.unwrap_or_default(),
                })
                .await?;
            Listing::one(COLUMNS, row(required(response.into_inner().budget)?))
        }
        BudgetCommand::Delete {
            target: t,
            period: p,
        } => {
            client
                .delete_budget(pb::DeleteBudgetRequest {
                    target: Some(target(&t)?),
                    period: period(p),
                })
                .await?;
            deleted("budget", &t)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_parse_exactly() {
        assert_eq!(parse_usd("25").unwrap(), 25_000_000);
        assert_eq!(parse_usd("0.50").unwrap(), 500_000);
        assert_eq!(parse_usd("$1.000001").unwrap(), 1_000_001);
        assert_eq!(parse_usd(".5").unwrap(), 500_000);
        for bad in ["", ".", "1.0000001", "-3", "1e3", "ten"] {
            assert!(parse_usd(bad).is_err(), "{bad}");
        }
        assert_eq!(dollars(1_500_000), "1.500000");
    }
}
