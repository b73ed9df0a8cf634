//! Rate-limit requests at the edge: validated and converted between the wire and the store.

use super::*;

use crate::store::{NewRateLimit, RateLimitPatch, RateLimitTarget};

/// Windows are fixed and aligned to the UTC epoch; a day is the longest that still means a
/// rate, and what the lease table's clean-up assumes.
const MAX_WINDOW_SECONDS: u32 = 86_400;
const DEFAULT_WINDOW_SECONDS: u32 = 60;
/// Counts are stored as signed 64-bit; past this nothing is limited anyway.
const MAX_PER_WINDOW: u64 = 1 << 62;

fn target(target: Option<pb::RateLimitTarget>) -> Result<RateLimitTarget, Status> {
    let target = target.ok_or_else(|| Status::invalid_argument("target: is required"))?;
    names(&[("target.organization", &target.organization)])?;
    let optional = |value: String| (!value.is_empty()).then_some(value);
    let project = optional(target.project);
    let virtual_key = optional(target.virtual_key);
    let model = optional(target.model);
    for (field, value) in [
        ("target.project", &project),
        ("target.virtual_key", &virtual_key),
        ("target.model", &model),
    ] {
        if let Some(value) = value {
            names(&[(field, value)])?;
        }
    }
    if model.is_some() && (project.is_some() || virtual_key.is_some()) {
        return Err(Status::invalid_argument(
            "target.model: a model's limit is the organisation's; leave project and virtual_key empty",
        ));
    }
    if project.is_none() && virtual_key.is_some() {
        return Err(Status::invalid_argument(
            "target.virtual_key: needs target.project",
        ));
    }
    Ok(RateLimitTarget {
        organization: target.organization,
        project,
        virtual_key,
        model,
    })
}

fn per_window(field: &str, value: u64) -> Result<u64, Status> {
    if value > MAX_PER_WINDOW {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {MAX_PER_WINDOW} (0: not limited)"
        )));
    }
    Ok(value)
}

fn window_seconds(value: u32) -> Result<u32, Status> {
    if !(1..=MAX_WINDOW_SECONDS).contains(&value) {
        return Err(Status::invalid_argument(format!(
            "window_seconds: 1 to {MAX_WINDOW_SECONDS}"
        )));
    }
    Ok(value)
}

fn at_least_one_limit(requests: u64, tokens: u64) -> Result<(), Status> {
    if requests == 0 && tokens == 0 {
        return Err(Status::invalid_argument(
            "requests_per_window, tokens_per_window: set at least one (0 means not limited)",
        ));
    }
    Ok(())
}

impl From<store::RateLimit> for pb::RateLimit {
    fn from(r: store::RateLimit) -> Self {
        let window_end_us = r.window().end_us(r.window_start_us);
        Self {
            id: r.id,
            target: Some(pb::RateLimitTarget {
                organization: r.target.organization,
                project: r.target.project.unwrap_or_default(),
                virtual_key: r.target.virtual_key.unwrap_or_default(),
                model: r.target.model.unwrap_or_default(),
            }),
            requests_per_window: r.requests_per_window,
            tokens_per_window: r.tokens_per_window,
            window_seconds: r.window_seconds,
            window_start_us: r.window_start_us,
            window_end_us,
            requests_granted: r.requests_granted,
            tokens_granted: r.tokens_granted,
            leases: r.leases,
            created_at_us: r.created_at_us,
            updated_at_us: r.updated_at_us,
        }
    }
}

fn describe(requests: u64, tokens: u64, window_seconds: u32) -> String {
    format!("{requests} requests, {tokens} tokens per {window_seconds} s (0: not limited)")
}

// === the RPCs ===

pub(super) async fn create_rate_limit<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::CreateRateLimitRequest>,
) -> Reply<pb::CreateRateLimitResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let new = NewRateLimit {
        target: target(req.target)?,
        requests_per_window: per_window("requests_per_window", req.requests_per_window)?,
        tokens_per_window: per_window("tokens_per_window", req.tokens_per_window)?,
        window_seconds: window_seconds(match req.window_seconds {
            0 => DEFAULT_WINDOW_SECONDS,
            seconds => seconds,
        })?,
    };
    at_least_one_limit(new.requests_per_window, new.tokens_per_window)?;
    let audit =
        Audit::new(&actor, "rate_limit.create", new.target.to_string()).with_detail(describe(
            new.requests_per_window,
            new.tokens_per_window,
            new.window_seconds,
        ));
    let limit = api
        .store
        .create_rate_limit(new, sluice_shared::time::now_us(), audit)
        .await
        .map_err(store_status)?;
    reply(pb::CreateRateLimitResponse {
        rate_limit: Some(limit.into()),
    })
}

pub(super) async fn list_rate_limits<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListRateLimitsRequest>,
) -> Reply<pb::ListRateLimitsResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    let limits = api
        .store
        .list_rate_limits(&req.organization, sluice_shared::time::now_us())
        .await
        .map_err(store_status)?;
    reply(pb::ListRateLimitsResponse {
        rate_limits: limits.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn update_rate_limit<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::UpdateRateLimitRequest>,
) -> Reply<pb::UpdateRateLimitResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let target = target(req.target)?;
    let patch = RateLimitPatch {
        requests_per_window: req
            .requests_per_window
            .map(|v| per_window("requests_per_window", v))
            .transpose()?,
        tokens_per_window: req
            .tokens_per_window
            .map(|v| per_window("tokens_per_window", v))
            .transpose()?,
        window_seconds: req.window_seconds.map(window_seconds).transpose()?,
    };
    if let (Some(0), Some(0)) = (patch.requests_per_window, patch.tokens_per_window) {
        at_least_one_limit(0, 0)?;
    }
    let audit = Audit::new(&actor, "rate_limit.update", target.to_string());
    let now = sluice_shared::time::now_us();
    let updated = api
        .store
        .update_rate_limit(&target, patch, now, audit)
        .await
        .map_err(store_status)?;
    reply(pb::UpdateRateLimitResponse {
        rate_limit: Some(updated.into()),
    })
}

pub(super) async fn delete_rate_limit<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::DeleteRateLimitRequest>,
) -> Reply<pb::DeleteRateLimitResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let target = target(req.target)?;
    let audit = Audit::new(&actor, "rate_limit.delete", target.to_string());
    api.store
        .delete_rate_limit(&target, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteRateLimitResponse {})
}
