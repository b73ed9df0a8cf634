//! Rate limits as the store keeps them: requests and tokens per fixed window on an
//! organisation, project, virtual key or model, and the leases proxies count against.

use sluice_shared::budget_window::Window;

use super::StoreError;
use super::model::stored_enum;

stored_enum!(RateLimitScope {
    Organization => "ORGANIZATION",
    Project => "PROJECT",
    VirtualKey => "VIRTUAL_KEY",
    Model => "MODEL",
});
stored_enum!(RateDimension { Requests => "REQUESTS", Tokens => "TOKENS" });

/// What a rate limit counts, by name: an organisation's requests, a project's, a virtual
/// key's, or those to one model of the organisation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateLimitTarget {
    pub organization: String,
    pub project: Option<String>,
    pub virtual_key: Option<String>,
    pub model: Option<String>,
}

impl RateLimitTarget {
    pub fn scope(&self) -> RateLimitScope {
        match (&self.project, &self.virtual_key, &self.model) {
            (_, _, Some(_)) => RateLimitScope::Model,
            (None, _, None) => RateLimitScope::Organization,
            (Some(_), None, None) => RateLimitScope::Project,
            (Some(_), Some(_), None) => RateLimitScope::VirtualKey,
        }
    }
}

impl std::fmt::Display for RateLimitTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.organization)?;
        if let Some(model) = &self.model {
            return write!(f, " model {model}");
        }
        for part in [&self.project, &self.virtual_key].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

/// A rate limit with what is granted of it in the window holding the time it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub id: String,
    pub target: RateLimitTarget,
    pub scope_id: String,
    /// 0: not limited.
    pub requests_per_window: u64,
    pub tokens_per_window: u64,
    pub window_seconds: u32,
    pub window_start_us: i64,
    /// Granted to proxies in the current window (per lease, the larger of its allowance and
    /// what it reported using).
    pub requests_granted: u64,
    pub tokens_granted: u64,
    /// Proxy processes holding a live lease in the current window.
    pub leases: u32,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

impl RateLimit {
    pub fn window(&self) -> Window {
        Window::Seconds(self.window_seconds)
    }

    /// How an operator names it: `acme/web/ci (60 s)`.
    pub fn label(target: &RateLimitTarget, window_seconds: u32) -> String {
        format!("{target} ({window_seconds} s)")
    }
}

#[derive(Debug, Clone)]
pub struct NewRateLimit {
    pub target: RateLimitTarget,
    pub requests_per_window: u64,
    pub tokens_per_window: u64,
    pub window_seconds: u32,
}

#[derive(Debug, Clone, Default)]
pub struct RateLimitPatch {
    pub requests_per_window: Option<u64>,
    pub tokens_per_window: Option<u64>,
    pub window_seconds: Option<u32>,
}

/// A rate limit as proxies receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRateLimit {
    pub id: String,
    pub scope_id: String,
    pub requests_per_window: u64,
    pub tokens_per_window: u64,
    pub window_seconds: u32,
    pub name: String,
}

/// What a proxy process reports of one rate lease, and whether it wants more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateUse {
    pub rate_limit_id: String,
    pub dimension: RateDimension,
    pub window_start_us: i64,
    pub used: i64,
    pub wanted: i64,
}

/// A proxy process's allowance of one dimension of a rate limit in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateGrant {
    pub rate_limit_id: String,
    pub dimension: RateDimension,
    pub window_start_us: i64,
    pub allowance: i64,
    pub expires_at_us: i64,
    pub exhausted: bool,
    /// What the fleet has not been granted in the window, after this grant.
    pub unallocated: i64,
}
