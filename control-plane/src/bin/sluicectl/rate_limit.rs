//! `sluicectl rate-limit`: requests and tokens per window on an organisation (`ORG`), a
//! project (`ORG/PROJECT`), a virtual key (`ORG/PROJECT/KEY`) or a model (`ORG --model NAME`).

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};
use sluice_proto::admin::v1 as pb;

use crate::output::{Listing, time};
use crate::{Client, deleted, required};

#[derive(Subcommand)]
pub enum RateLimitCommand {
    /// Limit a target's requests and tokens (input plus output) per window, across the fleet.
    Create {
        /// ORG, ORG/PROJECT or ORG/PROJECT/KEY; with --model, ORG.
        target: String,
        /// Count the organisation's requests to this model instead.
        #[arg(long)]
        model: Option<String>,
        /// Requests per window (0 or absent: not limited).
        #[arg(long, default_value_t = 0)]
        requests: u64,
        /// Tokens per window (0 or absent: not limited).
        #[arg(long, default_value_t = 0)]
        tokens: u64,
        /// The window in seconds, aligned to UTC (60: per minute).
        #[arg(long, default_value_t = 60)]
        window_seconds: u32,
    },
    /// Every rate limit of an organization, with what is granted in the current window.
    List { org: String },
    /// Change a limit; proxies take it at their next lease.
    Update {
        target: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        requests: Option<u64>,
        #[arg(long)]
        tokens: Option<u64>,
        #[arg(long)]
        window_seconds: Option<u32>,
    },
    Delete {
        target: String,
        #[arg(long)]
        model: Option<String>,
    },
}

fn target(text: &str, model: Option<String>) -> anyhow::Result<pb::RateLimitTarget> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        bail!("expected ORG, ORG/PROJECT or ORG/PROJECT/KEY, got '{text}'");
    }
    if model.is_some() && parts.len() > 1 {
        bail!("a model's limit is its organisation's: give ORG with --model, got '{text}'");
    }
    let part = |i: usize| parts.get(i).map(|p| (*p).to_owned()).unwrap_or_default();
    Ok(pb::RateLimitTarget {
        organization: part(0),
        project: part(1),
        virtual_key: part(2),
        model: model.unwrap_or_default(),
    })
}

fn label(target: &str, model: Option<&String>) -> String {
    model.map_or_else(|| target.to_owned(), |m| format!("{target} model {m}"))
}

const COLUMNS: &[&str] = &[
    "target",
    "requests_per_window",
    "tokens_per_window",
    "window_seconds",
    "requests_granted",
    "tokens_granted",
    "leases",
    "window_start",
    "window_end",
];

fn row(r: pb::RateLimit) -> Vec<Value> {
    let target = r.target.map_or_else(String::new, |t| {
        let path = [t.organization, t.project, t.virtual_key]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        if t.model.is_empty() {
            path
        } else {
            format!("{path} model {}", t.model)
        }
    });
    let limit = |n: u64| if n == 0 { json!("-") } else { json!(n) };
    vec![
        json!(target),
        limit(r.requests_per_window),
        limit(r.tokens_per_window),
        json!(r.window_seconds),
        json!(r.requests_granted),
        json!(r.tokens_granted),
        json!(r.leases),
        time(r.window_start_us),
        time(r.window_end_us),
    ]
}

pub async fn run(client: &mut Client, command: RateLimitCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        RateLimitCommand::Create {
            target: t,
            model,
            requests,
            tokens,
            window_seconds,
        } => {
            let response = client
                .create_rate_limit(pb::CreateRateLimitRequest {
                    target: Some(target(&t, model)?),
                    requests_per_window: requests,
                    tokens_per_window: tokens,
                    window_seconds,
                })
                .await?;
            Listing::one(COLUMNS, row(required(response.into_inner().rate_limit)?))
        }
        RateLimitCommand::List { org } => {
            let response = client
                .list_rate_limits(pb::ListRateLimitsRequest { organization: org })
                .await?;
            Listing::many(
                COLUMNS,
                response
                    .into_inner()
                    .rate_limits
                    .into_iter()
                    .map(row)
                    .collect(),
            )
        }
        RateLimitCommand::Update {
            target: t,
            model,
            requests,
            tokens,
            window_seconds,
        } => {
            let response = client
                .update_rate_limit(pb::UpdateRateLimitRequest {
                    target: Some(target(&t, model)?),
                    requests_per_window: requests,
                    tokens_per_window: tokens,
                    window_seconds,
                })
                .await?;
            Listing::one(COLUMNS, row(required(response.into_inner().rate_limit)?))
        }
        RateLimitCommand::Delete { target: t, model } => {
            let name = label(&t, model.as_ref());
            client
                .delete_rate_limit(pb::DeleteRateLimitRequest {
                    target: Some(target(&t, model)?),
                })
                .await?;
            deleted("rate limit", &name)
        }
    })
}
