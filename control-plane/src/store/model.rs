//! The domain records the store reads and writes. Enums are stored as their upper-case names.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::StoreError;

/// Implements text round-trips for a stored enum, so the database holds readable names.
macro_rules! stored_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Result<Self, StoreError> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(StoreError::Corrupt(format!(
                        concat!("unknown ", stringify!($name), " '{}'"), other
                    ))),
                }
            }
        }
    };
}

pub(super) use stored_enum;

stored_enum!(Posture { Mock => "MOCK", Live => "LIVE" });
stored_enum!(ProviderKind {
    OpenAi => "OPENAI",
    Anthropic => "ANTHROPIC",
    Google => "GOOGLE",
    AzureOpenAi => "AZURE_OPENAI",
    Vllm => "VLLM",
    Custom => "CUSTOM",
});
stored_enum!(KeyState { Active => "ACTIVE", Retiring => "RETIRING", Revoked => "REVOKED" });
stored_enum!(KeyHealth {
    Unknown => "UNKNOWN",
    Valid => "VALID",
    InvalidCredentials => "INVALID_CREDENTIALS",
    NoModelAccess => "NO_MODEL_ACCESS",
    Unreachable => "UNREACHABLE",
    Unexpected => "UNEXPECTED",
});
stored_enum!(HealthSource { KeyTest => "KEY_TEST", Traffic => "TRAFFIC" });
stored_enum!(TokenScope {
    Admin => "ADMIN",
    ReadOnly => "READ_ONLY",
    DataPlane => "DATA_PLANE",
    OrgAdmin => "ORG_ADMIN",
    OrgReadOnly => "ORG_READ_ONLY",
});

impl TokenScope {
    /// Whether tokens of this scope are limited to one organisation.
    pub fn is_per_organization(self) -> bool {
        matches!(self, Self::OrgAdmin | Self::OrgReadOnly)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

#[derive(Debug, Clone)]
pub struct NewOrganization {
    pub name: String,
    pub display_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub organization: String,
    pub name: String,
    pub display_name: String,
    pub posture: Posture,
    pub default_model: String,
    /// The most bytes of prompt and of completion a sampled request records on its spans;
    /// 0: none (the default: content is never recorded unless the project opts in).
    pub content_capture_bytes: u32,
    /// The proxies count its requests, tokens and cost per virtual key on `/metrics`.
    pub metrics_by_key: bool,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub display_name: String,
    pub default_model: String,
    pub content_capture_bytes: u32,
    pub metrics_by_key: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub display_name: Option<String>,
    pub default_model: Option<String>,
    pub posture: Option<Posture>,
    pub content_capture_bytes: Option<u32>,
    pub metrics_by_key: Option<bool>,
}

/// A model a project may use, and how many usable (active or retiring) keys of active
/// providers serve its deployments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelReadiness {
    pub model: String,
    pub usable_keys: u64,
}

/// A provider's or a model's retry settings; each field left `None` inherits (a model's from
/// the provider of the deployment tried, a provider's from the proxy's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_per_deployment: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_per_key: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_base_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_after_ms: Option<u32>,
}

impl RetrySettings {
    /// These settings with every field `update` sets replaced.
    pub fn updated(self, update: RetrySettings) -> Self {
        Self {
            max_attempts: update.max_attempts.or(self.max_attempts),
            attempts_per_deployment: update
                .attempts_per_deployment
                .or(self.attempts_per_deployment),
            attempts_per_key: update.attempts_per_key.or(self.attempts_per_key),
            backoff_base_ms: update.backoff_base_ms.or(self.backoff_base_ms),
            backoff_max_ms: update.backoff_max_ms.or(self.backoff_max_ms),
            max_retry_after_ms: update.max_retry_after_ms.or(self.max_retry_after_ms),
        }
    }
}

/// A provider's or a model's upstream timeouts, inherited field by field as [`RetrySettings`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u32>,
}

impl TimeoutSettings {
    /// These settings with every field `update` sets replaced.
    pub fn updated(self, update: TimeoutSettings) -> Self {
        Self {
            connect_ms: update.connect_ms.or(self.connect_ms),
            first_byte_ms: update.first_byte_ms.or(self.first_byte_ms),
            idle_ms: update.idle_ms.or(self.idle_ms),
            total_ms: update.total_ms.or(self.total_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub id: String,
    pub organization: String,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_version: String,
    pub timeout_ms: u32,
    pub extra_headers: BTreeMap<String, String>,
    pub active: bool,
    pub allow_private_network: bool,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
    /// Traced attempts send it `traceparent` / `tracestate`.
    pub send_trace_context: bool,
}

#[derive(Debug, Clone)]
pub struct NewProvider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_version: String,
    pub timeout_ms: u32,
    pub extra_headers: BTreeMap<String, String>,
    pub allow_private_network: bool,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
    pub send_trace_context: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ProviderPatch {
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    pub timeout_ms: Option<u32>,
    pub extra_headers: Option<BTreeMap<String, String>>,
    pub active: Option<bool>,
    pub allow_private_network: Option<bool>,
    pub send_trace_context: Option<bool>,
    /// Replaces the provider's retry settings whole.
    pub retry: Option<RetrySettings>,
    /// Replaces the provider's timeouts whole.
    pub timeouts: Option<TimeoutSettings>,
}

/// A provider key as it may be shown: no secret, only the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderKey {
    pub id: String,
    pub organization: String,
    pub provider: String,
    pub name: String,
    pub state: KeyState,
    pub last_four: String,
    pub fingerprint: String,
    pub health: KeyHealth,
    /// When the health was last learned (0: never) and how (`None`: never).
    pub health_learned_at_us: i64,
    pub health_source: Option<HealthSource>,
    pub master_key_version: u32,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

/// A key ready to store: the caller chose the id first, because the ciphertext is bound to it.
#[derive(Debug, Clone)]
pub struct NewProviderKey {
    pub id: String,
    pub name: String,
    pub sealed_secret: Vec<u8>,
    pub master_key_version: u32,
    pub last_four: String,
    pub fingerprint: String,
}

/// What the vault needs to open or re-wrap one key.
#[derive(Debug, Clone)]
pub struct SealedKey {
    pub id: String,
    pub org_id: String,
    pub sealed_secret: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub provider: String,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub organization: String,
    pub name: String,
    pub deployments: Vec<Deployment>,
    pub input_price_micros_per_mtok: i64,
    pub output_price_micros_per_mtok: i64,
    pub context_window: u32,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    /// Input tokens served from the provider's prompt cache; `None`: the input price.
    pub cached_input_price_micros_per_mtok: Option<i64>,
    pub price_source: PriceSource,
    /// The catalog entry the prices came from; empty when none did.
    pub catalog_id: String,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
}

#[derive(Debug, Clone)]
pub struct NewModel {
    pub name: String,
    pub deployments: Vec<Deployment>,
    pub input_price_micros_per_mtok: i64,
    pub output_price_micros_per_mtok: i64,
    pub context_window: u32,
    pub cached_input_price_micros_per_mtok: Option<i64>,
    pub price_source: PriceSource,
    pub catalog_id: String,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
}

#[derive(Debug, Clone, Default)]
pub struct ModelPatch {
    pub deployments: Option<Vec<Deployment>>,
    pub input_price_micros_per_mtok: Option<i64>,
    pub output_price_micros_per_mtok: Option<i64>,
    pub context_window: Option<u32>,
    /// `Some(None)` clears it (cached input then costs the input price).
    pub cached_input_price_micros_per_mtok: Option<Option<i64>>,
    /// Set with the catalog's prices (`Catalog`) or any operator price (`Operator`).
    pub price_source: Option<PriceSource>,
    pub catalog_id: Option<String>,
    /// Replaces the model's retry settings whole.
    pub retry: Option<RetrySettings>,
    /// Replaces the model's timeouts whole.
    pub timeouts: Option<TimeoutSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualKey {
    pub id: String,
    pub organization: String,
    pub project: String,
    pub name: String,
    pub prefix: String,
    pub allowed_models: Vec<String>,
    /// 0: never.
    pub expires_at_us: i64,
    /// 0: not revoked.
    pub revoked_at_us: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
}

#[derive(Debug, Clone)]
pub struct NewVirtualKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub allowed_models: Vec<String>,
    pub expires_at_us: i64,
}

#[derive(Debug, Clone, Default)]
pub struct VirtualKeyPatch {
    pub allowed_models: Option<Vec<String>>,
    pub expires_at_us: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    /// The organisation (by name) an `ORG_*` token is limited to. `None` for global scopes,
    /// and for an `ORG_*` token whose organisation was deleted (it no longer authenticates).
    pub organization: Option<String>,
    pub prefix: String,
    pub created_at_us: i64,
    /// 0: not revoked.
    pub revoked_at_us: i64,
}

#[derive(Debug, Clone)]
pub struct NewAdminToken {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
    /// Set exactly for the `ORG_*` scopes.
    pub organization_id: Option<String>,
    pub prefix: String,
    pub token_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: String,
    pub at_us: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: String,
    pub action: String,
    pub target_prefix: String,
    /// Only events about this organisation and what is in it (empty: every event). Events
    /// about tokens and the vault are global and never match.
    pub organization: String,
    pub limit: u32,
}

/// Everything a snapshot is built from, read in one consistent transaction.
#[derive(Debug, Clone, Default)]
pub struct ConfigState {
    pub version: u64,
    pub projects: Vec<ConfigProject>,
    pub providers: Vec<Provider>,
    pub provider_keys: Vec<ConfigProviderKey>,
    pub models: Vec<ConfigModel>,
    /// Sorted by id. Every live key, or with [`VirtualKeysRead::ChangedSince`] those changed
    /// since (shared, so the versions a publisher builds from one another share unchanged keys).
    pub virtual_keys: Vec<Arc<ConfigVirtualKey>>,
    /// With [`VirtualKeysRead::ChangedSince`]: the ids of keys revoked or deleted since.
    pub removed_virtual_keys: Vec<String>,
    /// HARD budgets: proxies enforce them with leases.
    pub budgets: Vec<ConfigBudget>,
    pub rate_limits: Vec<super::ConfigRateLimit>,
}

/// Which virtual keys a config read brings: with a hundred thousand keys, reading them all for
/// every change is most of a change's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualKeysRead {
    All,
    /// Only keys created, changed, revoked or deleted by versions after this one.
    ChangedSince(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigBudget {
    pub id: String,
    pub scope_id: String,
    pub period: BudgetPeriod,
    /// How an operator names it, e.g. `acme/web (month)`.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProject {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub posture: Posture,
    pub default_model: String,
    pub content_capture_bytes: u32,
    pub metrics_by_key: bool,
}

/// A usable (not revoked) key of an active provider, still sealed by the vault.
#[derive(Debug, Clone)]
pub struct ConfigProviderKey {
    pub id: String,
    pub provider_id: String,
    pub org_id: String,
    pub state: KeyState,
    pub sealed_secret: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDeployment {
    pub provider_id: String,
    pub upstream_model: String,
    pub weight: u32,
    pub priority: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigModel {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub deployments: Vec<ConfigDeployment>,
    pub input_price_micros_per_mtok: i64,
    pub output_price_micros_per_mtok: i64,
    pub context_window: u32,
    pub cached_input_price_micros_per_mtok: Option<i64>,
    pub retry: RetrySettings,
    pub timeouts: TimeoutSettings,
}

/// A virtual key a proxy may accept: not revoked (expiry is checked per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVirtualKey {
    pub id: String,
    pub project_id: String,
    pub key_hash: String,
    pub allowed_models: Vec<String>,
    pub expires_at_us: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyStatus {
    pub proxy_id: String,
    pub address: String,
    pub connected: bool,
    pub acked_version: u64,
    pub nacked_version: u64,
    pub nack_reason: String,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    /// What it last reported leaving out of its attempts.
    pub left_out: Vec<LeftOut>,
}

/// A deployment or key a proxy leaves out of its attempts, and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeftOut {
    /// `deployment` or `key`.
    pub kind: String,
    pub name: String,
    pub until_us: i64,
}

stored_enum!(BudgetScope {
    Organization => "ORGANIZATION",
    Project => "PROJECT",
    VirtualKey => "VIRTUAL_KEY",
});
stored_enum!(BudgetPeriod { Day => "DAY", Month => "MONTH", Total => "TOTAL" });
stored_enum!(BudgetPosture { Hard => "HARD", Soft => "SOFT" });

impl BudgetPeriod {
    /// How an operator names a budget: `acme/web (month)`.
    pub fn label(self, target: &impl std::fmt::Display) -> String {
        format!("{target} ({})", self.as_str().to_lowercase())
    }

    pub fn window(self) -> sluice_shared::budget_window::Window {
        use sluice_shared::budget_window::Window;
        match self {
            Self::Day => Window::Day,
            Self::Month => Window::Month,
            Self::Total => Window::Total,
        }
    }
}

stored_enum!(PriceSource { Catalog => "CATALOG", Operator => "OPERATOR" });
stored_enum!(UsageSource { ProviderReported => "PROVIDER_REPORTED", Estimated => "ESTIMATED", Mock => "MOCK" });

/// One request's usage. Its text is `String`s when owned, or `&str`s read in place from a
/// batch's encoding (`UsageRecord<&str>`): a batch is ingested without a copy of its ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord<S = String> {
    pub request_id: S,
    pub started_at_us: i64,
    pub project_id: S,
    pub virtual_key_id: S,
    pub model: S,
    pub provider_id: S,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_micros: i64,
    pub latency_ms: i64,
    pub http_status: i64,
    pub source: UsageSource,
    /// From the request's `x-sluice-run-id` / `x-sluice-task-id`; empty when absent.
    pub run_id: S,
    pub task_id: S,
    /// From the request's `x-sluice-tag-<name>` headers.
    pub tags: Vec<(S, S)>,
    /// The proxy process whose lease the request was reserved against.
    pub lease_epoch: i64,
    /// Upstream attempts the request made (0: none, as in MOCK).
    pub attempts: i64,
}

impl<S: AsRef<str>> UsageRecord<S> {
    /// The record with its text copied out.
    pub fn to_owned_record(&self) -> UsageRecord {
        let text = |s: &S| s.as_ref().to_owned();
        UsageRecord {
            request_id: text(&self.request_id),
            started_at_us: self.started_at_us,
            project_id: text(&self.project_id),
            virtual_key_id: text(&self.virtual_key_id),
            model: text(&self.model),
            provider_id: text(&self.provider_id),
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_input_tokens: self.cached_input_tokens,
            reasoning_tokens: self.reasoning_tokens,
            cost_micros: self.cost_micros,
            latency_ms: self.latency_ms,
            http_status: self.http_status,
            source: self.source,
            run_id: text(&self.run_id),
            task_id: text(&self.task_id),
            tags: self.tags.iter().map(|(n, v)| (text(n), text(v))).collect(),
            lease_epoch: self.lease_epoch,
            attempts: self.attempts,
        }
    }
}

/// Whether a usage batch's records may have been stored before, under another batch id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// None was ever sent before: stored as they are.
    First,
    /// Some may have been (a proxy's spool recovered after a crash, or a client that does not
    /// say): each record already stored, by request id, is skipped.
    MayRepeat,
}

/// A usage batch's records, with their stored form (a `UsageBatch` encoding of them, see
/// [`usage_wire`](crate::store::usage_wire)).
pub struct NewUsageBatch<S = String> {
    pub(crate) records: Vec<UsageRecord<S>>,
    pub(crate) encoded: bytes::Bytes,
}

impl<'a> NewUsageBatch<&'a str> {
    /// Records read in place from `encoded`, the `UsageBatch` they arrived in: it must hold
    /// exactly `records`.
    pub fn received(records: Vec<UsageRecord<&'a str>>, encoded: bytes::Bytes) -> Self {
        Self { records, encoded }
    }
}

impl NewUsageBatch {
    pub fn from_records(records: Vec<UsageRecord>) -> Self {
        let encoded = crate::store::usage_wire::encode(&records).into();
        Self { records, encoded }
    }
}

/// What happened to a usage batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    Committed,
    /// The same id and payload were committed before: nothing changed.
    Duplicate,
    /// The same id arrived before with a different payload: refused, nothing changed.
    Conflict,
}

/// What a budget limits, by name: an organisation, or one of its projects, or one of a
/// project's virtual keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetTarget {
    pub organization: String,
    pub project: Option<String>,
    pub virtual_key: Option<String>,
}

impl BudgetTarget {
    pub fn scope(&self) -> BudgetScope {
        match (&self.project, &self.virtual_key) {
            (None, _) => BudgetScope::Organization,
            (Some(_), None) => BudgetScope::Project,
            (Some(_), Some(_)) => BudgetScope::VirtualKey,
        }
    }
}

impl std::fmt::Display for BudgetTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.organization)?;
        for part in [&self.project, &self.virtual_key].into_iter().flatten() {
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

/// A budget with its spend in the window holding the time it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub id: String,
    pub target: BudgetTarget,
    pub scope_id: String,
    pub period: BudgetPeriod,
    pub limit_micros: i64,
    pub posture: BudgetPosture,
    pub alert_percents: Vec<u32>,
    pub window_start_us: i64,
    pub spent_micros: i64,
    pub estimated_micros: i64,
    pub requests: i64,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    /// Granted to live proxy leases and not yet arrived as usage, in the current window.
    pub leased_micros: i64,
    pub leases: u32,
}

#[derive(Debug, Clone)]
pub struct NewBudget {
    pub target: BudgetTarget,
    pub period: BudgetPeriod,
    pub limit_micros: i64,
    pub posture: BudgetPosture,
    pub alert_percents: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct BudgetPatch {
    pub limit_micros: Option<i64>,
    pub posture: Option<BudgetPosture>,
    pub alert_percents: Option<Vec<u32>>,
}

/// A budget's spend crossed one of its alert thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetAlert {
    pub budget_id: String,
    pub target: String,
    pub period: BudgetPeriod,
    pub posture: BudgetPosture,
    pub percent: u32,
    pub spent_micros: i64,
    pub limit_micros: i64,
    pub window_start_us: i64,
}

/// What committing a usage batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCommit {
    pub outcome: BatchOutcome,
    /// Thresholds the batch's spend crossed (already written to the audit log).
    pub alerts: Vec<BudgetAlert>,
}

/// What a proxy process reports of one lease, and whether it wants more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseUse {
    pub budget_id: String,
    pub window_start_us: i64,
    pub used_micros: i64,
    pub wanted_micros: i64,
}

/// How leases are sized and how long they last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    pub ttl_us: i64,
    /// Each live lease gets about remaining / (this × live leases) per grant.
    pub share_divisor: i64,
}

/// A proxy process's allowance in one budget window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    pub budget_id: String,
    pub window_start_us: i64,
    pub allowance_micros: i64,
    pub expires_at_us: i64,
    pub exhausted: bool,
}

/// One request of a run, its ids named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCall {
    pub record: UsageRecord,
    pub project: String,
    pub virtual_key: String,
    pub provider: String,
}

/// How usage is grouped in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Project,
    VirtualKey,
    Model,
    Provider,
    Day,
    Source,
    Run,
}

/// Which usage to sum, by name: every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub organization: String,
    pub project: Option<String>,
    pub virtual_key: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub run_id: Option<String>,
    /// [from, to) in UTC µs.
    pub from_us: i64,
    pub to_us: i64,
    pub group_by: Vec<UsageGroup>,
    pub limit: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub keys: Vec<String>,
    pub requests: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub estimated_cost_micros: i64,
    pub estimated_requests: i64,
    pub failed_requests: i64,
}
