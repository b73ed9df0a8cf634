//! Admission of a LIVE call: its output limit within what its model can give, and its
//! largest possible cost reserved in every HARD budget that covers it.

use sluice_shared::error_code::ErrorCode;

use crate::answers::Usage;
use crate::budgets::leases::Refusal;
use crate::error_response::GatewayError;
use crate::gateway::Gateway;
use crate::operation::Operation;
use crate::pipeline::identify::Caller;
use crate::request::fields::ChatRequest;
use crate::routing::tables::{BudgetEntry, ModelEntry, RoutingTables};

/// Reserves the request's largest possible cost in every HARD budget that covers it, before
/// anything is forwarded: the prompt counted at one token per four bytes of the request body
/// (an overcount, which is the safe side) plus its `max_tokens` (or the configured default),
/// at the model's full prices.
pub async fn reserve(
    gateway: &Gateway,
    tables: &RoutingTables,
    caller: &Caller<'_>,
    model: &ModelEntry,
    chat: &ChatRequest<'_>,
    body_len: usize,
    operation: Operation,
) -> Result<Option<crate::budgets::leases::Reservation>, GatewayError> {
    if tables.budgets.is_empty() {
        return Ok(None);
    }
    let budgets = tables.budgets_for([&caller.project.org_id, &caller.project.id, &caller.key.id]);
    if budgets.clone().next().is_none() {
        return Ok(None);
    }
    let usage = largest_usage(gateway, chat, body_len, operation);
    let most =
        crate::metering::draft::cost_micros(usage, crate::metering::draft::Prices::of(model));
    let book = &gateway.leases;
    let refusal = match book.reserve(budgets.clone(), most).await {
        Ok(reservation) => return Ok(Some(reservation)),
        Err(refusal) => refusal,
    };
    let message = match refusal {
        Refusal::Spent(index) => {
            // Ask anyway: the budget may have been raised or usage may have come in lower.
            book.nudge.notify_one();
            format!(
                "budget {} is spent: raise it with `sluicectl budget update` or wait for its next window",
                name_of(budgets, index)
            )
        }
        Refusal::NoRoom(index) if book.reachable() => format!(
            "budget {} has no allowance left for this request right now; it is nearly spent — retry shortly, or raise it with `sluicectl budget update`",
            name_of(budgets, index)
        ),
        Refusal::NoRoom(index) => format!(
            "budget {} has no current lease and the control plane is unreachable; a HARD budget is refused rather than overspent",
            name_of(budgets, index)
        ),
    };
    Err(GatewayError::new(ErrorCode::BudgetExceeded, message))
}

fn name_of<'a>(mut budgets: impl Iterator<Item = &'a BudgetEntry>, index: usize) -> &'a str {
    budgets.nth(index).map_or("", |b| b.name.as_str())
}

/// The most a request can use: its prompt counted at one token per four bytes of the request
/// body (an overcount, which is the safe side) plus its `max_tokens` (or the configured
/// default).
pub fn largest_usage(
    gateway: &Gateway,
    chat: &ChatRequest<'_>,
    body_len: usize,
    operation: Operation,
) -> Usage {
    Usage {
        input_tokens: (body_len as u64).div_ceil(4),
        // Embeddings answer with vectors, not tokens.
        output_tokens: match operation {
            Operation::Embeddings => 0,
            _ => chat
                .output_limit
                .map_or(gateway.default_max_output_tokens, |limit| limit.tokens),
        },
        ..Usage::default()
    }
}

/// A request may not ask for more output than its model can give: past that, a limit is no
/// limit, and its reservation would be no bound.
pub fn check_output_limit(chat: &ChatRequest<'_>, model: &ModelEntry) -> Result<(), GatewayError> {
    let Some(limit) = chat.output_limit else {
        return Ok(());
    };
    let most = model.output_token_limit();
    if limit.tokens > most {
        return Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!(
                "`{}` is {}, more than model '{}' can produce ({most} tokens)",
                limit.field, limit.tokens, model.name
            ),
        )
        .with_param(limit.field));
    }
    Ok(())
}
