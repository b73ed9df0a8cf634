//! Usage queries at the edge: filters validated, groups converted, totals sent back.

use super::*;

use crate::store::{UsageGroup, UsageQuery, UsageTotals};

const MAX_ROWS: u32 = 10_000;

pub(super) fn query(req: pb::QueryUsageRequest, now_us: i64) -> Result<UsageQuery, Status> {
    names(&[("organization", &req.organization)])?;
    let optional = |value: String| (!value.is_empty()).then_some(value);
    if !req.virtual_key.is_empty() && req.project.is_empty() {
        return Err(Status::invalid_argument("virtual_key: needs project"));
    }
    let to_us = if req.to_us == 0 {
        now_us + 1
    } else {
        req.to_us
    };
    if req.from_us < 0 || to_us <= req.from_us {
        return Err(Status::invalid_argument(
            "from_us / to_us: from must be before to",
        ));
    }
    let mut group_by = Vec::with_capacity(req.group_by.len());
    for group in &req.group_by {
        let group = match pb::UsageGroup::try_from(*group) {
            Ok(pb::UsageGroup::Project) => UsageGroup::Project,
            Ok(pb::UsageGroup::VirtualKey) => UsageGroup::VirtualKey,
            Ok(pb::UsageGroup::Model) => UsageGroup::Model,
            Ok(pb::UsageGroup::Provider) => UsageGroup::Provider,
            Ok(pb::UsageGroup::Day) => UsageGroup::Day,
            Ok(pb::UsageGroup::Source) => UsageGroup::Source,
            Ok(pb::UsageGroup::Run) => UsageGroup::Run,
            _ => {
                return Err(Status::invalid_argument(
                    "group_by: project, virtual_key, model, provider, day, source or run",
                ));
            }
        };
        if group_by.contains(&group) {
            return Err(Status::invalid_argument("group_by: a group is given twice"));
        }
        group_by.push(group);
    }
    Ok(UsageQuery {
        organization: req.organization,
        project: optional(req.project),
        virtual_key: optional(req.virtual_key),
        model: optional(req.model),
        provider: optional(req.provider),
        run_id: optional(req.run_id),
        from_us: req.from_us,
        to_us,
        group_by,
        limit: if req.limit == 0 {
            MAX_ROWS
        } else {
            req.limit.min(MAX_ROWS)
        },
    })
}

impl From<UsageTotals> for pb::UsageTotals {
    fn from(t: UsageTotals) -> Self {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Self {
            keys: t.keys,
            requests: count(t.requests),
            input_tokens: count(t.input_tokens),
            cached_input_tokens: count(t.cached_input_tokens),
            output_tokens: count(t.output_tokens),
            cost_micros: t.cost_micros,
            estimated_cost_micros: t.estimated_cost_micros,
            estimated_requests: count(t.estimated_requests),
            failed_requests: count(t.failed_requests),
        }
    }
}

// === the RPCs ===

pub(super) async fn query_usage<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::QueryUsageRequest>,
) -> Reply<pb::QueryUsageResponse> {
    let query = usage_query::query(request.into_inner(), sluice_shared::time::now_us())?;
    let (rows, total) = api.store.query_usage(query).await.map_err(store_status)?;
    reply(pb::QueryUsageResponse {
        rows: rows.into_iter().map(Into::into).collect(),
        total: Some(total.into()),
    })
}

/// The most calls one answer lists.
const MAX_CALLS: u32 = 1_000;

pub(super) async fn list_run_calls<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListRunCallsRequest>,
) -> Reply<pb::ListRunCallsResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    if req.run_id.is_empty() || req.run_id.len() > 128 {
        return Err(Status::invalid_argument(
            "run_id: is required, at most 128 characters",
        ));
    }
    let limit = match req.limit {
        0 => 100,
        limit => limit.min(MAX_CALLS),
    };
    let (calls, truncated) = api
        .store
        .run_calls(&req.organization, &req.run_id, limit as usize)
        .await
        .map_err(store_status)?;
    reply(pb::ListRunCallsResponse {
        calls: calls
            .into_iter()
            .map(|call| {
                let record = call.record;
                pb::UsageCall {
                    request_id: record.request_id,
                    started_at_us: record.started_at_us,
                    project: call.project,
                    virtual_key: call.virtual_key,
                    model: record.model,
                    provider: call.provider,
                    input_tokens: u64::try_from(record.input_tokens).unwrap_or(0),
                    cached_input_tokens: u64::try_from(record.cached_input_tokens).unwrap_or(0),
                    output_tokens: u64::try_from(record.output_tokens).unwrap_or(0),
                    cost_micros: record.cost_micros,
                    latency_ms: u64::try_from(record.latency_ms).unwrap_or(0),
                    http_status: u32::try_from(record.http_status).unwrap_or(0),
                    source: record.source.as_str().to_owned(),
                    task_id: record.task_id,
                }
            })
            .collect(),
        truncated,
    })
}
