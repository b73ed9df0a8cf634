//! The control plane's persistence contract, one trait per aggregate; [`Store`] is all of
//! them, and `tests/store_contract.rs` runs one suite against every implementation.

use std::future::Future;

use super::*;

/// Everything the control plane persists.
pub trait Store:
    TenancyStore
    + ProviderStore
    + VaultStore
    + ModelStore
    + VirtualKeyStore
    + AccessStore
    + FleetStore
    + UsageStore
    + BudgetStore
    + RateLimitStore
{
}

impl<S> Store for S where
    S: TenancyStore
        + ProviderStore
        + VaultStore
        + ModelStore
        + VirtualKeyStore
        + AccessStore
        + FleetStore
        + UsageStore
        + BudgetStore
        + RateLimitStore
{
}

/// Organisations and their projects.
pub trait TenancyStore: Send + Sync + 'static {
    fn create_organization(
        &self,
        new: NewOrganization,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Organization>> + Send;
    fn get_organization(
        &self,
        name: &str,
    ) -> impl Future<Output = StoreResult<Organization>> + Send;
    fn list_organizations(
        &self,
        name_prefix: &str,
    ) -> impl Future<Output = StoreResult<Vec<Organization>>> + Send;
    fn update_organization(
        &self,
        name: &str,
        display_name: Option<String>,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Organization>> + Send;
    fn delete_organization(
        &self,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn create_project(
        &self,
        org: &str,
        new: NewProject,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Project>> + Send;
    fn get_project(
        &self,
        org: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<Project>> + Send;
    fn list_projects(&self, org: &str) -> impl Future<Output = StoreResult<Vec<Project>>> + Send;
    fn update_project(
        &self,
        org: &str,
        name: &str,
        patch: ProjectPatch,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Project>> + Send;
    fn delete_project(
        &self,
        org: &str,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// For each model the project may use, how many usable provider keys serve it: active or
    /// retiring, not known to be refused (invalid credentials, no model access) — leaving out
    /// the key with id `without_key`, to ask what revoking it would leave.
    fn project_model_readiness(
        &self,
        org: &str,
        name: &str,
        without_key: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<ModelReadiness>>> + Send;
}

/// Providers and their sealed keys.
pub trait ProviderStore: Send + Sync + 'static {
    fn create_provider(
        &self,
        org: &str,
        new: NewProvider,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Provider>> + Send;
    fn get_provider(
        &self,
        org: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<Provider>> + Send;
    fn list_providers(&self, org: &str) -> impl Future<Output = StoreResult<Vec<Provider>>> + Send;
    fn update_provider(
        &self,
        org: &str,
        name: &str,
        patch: ProviderPatch,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Provider>> + Send;
    fn delete_provider(
        &self,
        org: &str,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn create_provider_key(
        &self,
        org: &str,
        provider: &str,
        new: NewProviderKey,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<ProviderKey>> + Send;
    fn get_provider_key(
        &self,
        org: &str,
        provider: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<ProviderKey>> + Send;
    /// A key's sealed secret, for a check against its upstream.
    fn sealed_provider_key(
        &self,
        org: &str,
        provider: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<SealedKey>> + Send;
    /// Records what a check (or live traffic) learned of a key.
    fn set_provider_key_health(
        &self,
        org: &str,
        provider: &str,
        name: &str,
        health: KeyHealth,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<ProviderKey>> + Send;
    /// Marks a key by id, as live traffic found it (the audit actor names the proxy).
    fn mark_provider_key_health(
        &self,
        key_id: &str,
        health: KeyHealth,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// `provider` empty: every provider of the organization.
    fn list_provider_keys(
        &self,
        org: &str,
        provider: &str,
    ) -> impl Future<Output = StoreResult<Vec<ProviderKey>>> + Send;
    /// Moves `name` to RETIRING and adds `new` as ACTIVE, atomically.
    fn rotate_provider_key(
        &self,
        org: &str,
        provider: &str,
        name: &str,
        new: NewProviderKey,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<(ProviderKey, ProviderKey)>> + Send;
    fn revoke_provider_key(
        &self,
        org: &str,
        provider: &str,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<ProviderKey>> + Send;
    fn delete_provider_key(
        &self,
        org: &str,
        provider: &str,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// What the vault keeps: master-key checks, and sealed keys to re-wrap.
pub trait VaultStore: Send + Sync + 'static {
    /// Up to `limit` sealed keys still wrapped by a master-key version other than `version`.
    fn sealed_keys_not_under(
        &self,
        version: u32,
        limit: u32,
    ) -> impl Future<Output = StoreResult<Vec<SealedKey>>> + Send;
    /// Replaces a key's sealed secret only if it still holds `previous` (compare-and-set), so a
    /// concurrent rotation is never overwritten. Returns whether it replaced it.
    fn replace_sealed_secret(
        &self,
        id: &str,
        previous: &[u8],
        sealed: Vec<u8>,
        master_key_version: u32,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn provider_keys_per_master_key_version(
        &self,
    ) -> impl Future<Output = StoreResult<Vec<(u32, u64)>>> + Send;
    fn vault_checks(&self) -> impl Future<Output = StoreResult<Vec<(u32, Vec<u8>)>>> + Send;
    fn add_vault_check(
        &self,
        version: u32,
        sealed: Vec<u8>,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Models, their deployments and prices.
pub trait ModelStore: Send + Sync + 'static {
    fn create_model(
        &self,
        org: &str,
        new: NewModel,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Model>> + Send;
    fn get_model(&self, org: &str, name: &str) -> impl Future<Output = StoreResult<Model>> + Send;
    fn list_models(&self, org: &str) -> impl Future<Output = StoreResult<Vec<Model>>> + Send;
    fn update_model(
        &self,
        org: &str,
        name: &str,
        patch: ModelPatch,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Model>> + Send;
    fn delete_model(
        &self,
        org: &str,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Virtual keys of a project.
pub trait VirtualKeyStore: Send + Sync + 'static {
    fn create_virtual_key(
        &self,
        org: &str,
        project: &str,
        new: NewVirtualKey,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<VirtualKey>> + Send;
    fn get_virtual_key(
        &self,
        org: &str,
        project: &str,
        name: &str,
    ) -> impl Future<Output = StoreResult<VirtualKey>> + Send;
    fn list_virtual_keys(
        &self,
        org: &str,
        project: &str,
        prefix: &str,
    ) -> impl Future<Output = StoreResult<Vec<VirtualKey>>> + Send;
    fn update_virtual_key(
        &self,
        org: &str,
        project: &str,
        name: &str,
        patch: VirtualKeyPatch,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<VirtualKey>> + Send;
    fn revoke_virtual_key(
        &self,
        org: &str,
        project: &str,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<VirtualKey>> + Send;
    fn delete_virtual_key(
        &self,
        org: &str,
        project: &str,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Admin tokens and the audit log.
pub trait AccessStore: Send + Sync + 'static {
    fn create_admin_token(
        &self,
        new: NewAdminToken,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<AdminToken>> + Send;
    fn list_admin_tokens(&self) -> impl Future<Output = StoreResult<Vec<AdminToken>>> + Send;
    fn revoke_admin_token(
        &self,
        name: &str,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<AdminToken>> + Send;
    /// The unrevoked token with this hash, if any.
    fn find_admin_token(
        &self,
        token_hash: &str,
    ) -> impl Future<Output = StoreResult<Option<AdminToken>>> + Send;
    fn list_audit_events(
        &self,
        filter: AuditFilter,
    ) -> impl Future<Output = StoreResult<Vec<AuditEvent>>> + Send;
}

/// The versioned config and the proxies serving it.
pub trait FleetStore: Send + Sync + 'static {
    fn config_version(&self) -> impl Future<Output = StoreResult<u64>> + Send;
    /// The config at one version, read in one consistent transaction: every table whole, and
    /// the virtual keys `keys` asks for.
    fn load_config(
        &self,
        keys: VirtualKeysRead,
    ) -> impl Future<Output = StoreResult<ConfigState>> + Send;
    /// A proxy opened (`connected`) or closed its config stream.
    fn record_proxy_connection(
        &self,
        proxy_id: &str,
        address: &str,
        connected: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The proxy serves `version`; a recorded version never goes down.
    fn record_proxy_ack(
        &self,
        proxy_id: &str,
        version: u64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn record_proxy_nack(
        &self,
        proxy_id: &str,
        version: u64,
        reason: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// What the proxy now leaves out of its attempts (replacing what it reported before).
    fn record_proxy_left_out(
        &self,
        proxy_id: &str,
        left_out: &[LeftOut],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn list_proxies(&self) -> impl Future<Output = StoreResult<Vec<ProxyStatus>>> + Send;
}

/// Usage records in, sums out.
pub trait UsageStore: Send + Sync + 'static {
    /// Commits a batch and its records once, in one transaction with the budgets' spend. Of a
    /// batch that [`Delivery::MayRepeat`], a record whose request id the same proxy's batches
    /// already hold is skipped (and not counted again).
    fn commit_usage_batch<T: AsRef<str> + Send + Sync>(
        &self,
        batch_id: &str,
        proxy_id: &str,
        payload_hash: &str,
        delivery: Delivery,
        batch: NewUsageBatch<T>,
    ) -> impl Future<Output = StoreResult<BatchCommit>> + Send;
    /// Sums usage by the query's groups, largest cost first, with the total over every match.
    fn query_usage(
        &self,
        query: UsageQuery,
    ) -> impl Future<Output = StoreResult<(Vec<UsageTotals>, UsageTotals)>> + Send;
    /// The newest `limit` calls of run `run_id` in organisation `org` (and whether there were
    /// more), read from the batches of the hours the roll-up says the run was in.
    fn run_calls(
        &self,
        org: &str,
        run_id: &str,
        limit: usize,
    ) -> impl Future<Output = StoreResult<(Vec<RunCall>, bool)>> + Send;
    /// Usage of one project, oldest first (for tests and the usage queries to come).
    fn list_usage_records(
        &self,
        project_id: &str,
    ) -> impl Future<Output = StoreResult<Vec<UsageRecord>>> + Send;
}

/// Budgets and the leases proxies spend against.
pub trait BudgetStore: Send + Sync + 'static {
    /// `now_us` picks the window whose spend the returned budget carries (and, for a new
    /// budget, the window whose past usage it starts from).
    fn create_budget(
        &self,
        new: NewBudget,
        now_us: i64,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Budget>> + Send;
    fn list_budgets(
        &self,
        org: &str,
        now_us: i64,
    ) -> impl Future<Output = StoreResult<Vec<Budget>>> + Send;
    /// Every organisation's budgets (at most `most`, oldest first) with their current
    /// window's spend and leases: what the control plane's `/metrics` shows of them.
    fn every_budget(
        &self,
        now_us: i64,
        most: usize,
    ) -> impl Future<Output = StoreResult<Vec<Budget>>> + Send;
    fn update_budget(
        &self,
        target: &BudgetTarget,
        period: BudgetPeriod,
        patch: BudgetPatch,
        now_us: i64,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<Budget>> + Send;
    fn delete_budget(
        &self,
        target: &BudgetTarget,
        period: BudgetPeriod,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Renews a proxy process's leases and grants more where it asks, never granting beyond
    /// what the budget has left after every live lease's unspent allowance (all in one
    /// transaction; on PostgreSQL serialised across control-plane replicas).
    fn acquire_leases(
        &self,
        proxy_id: &str,
        epoch: i64,
        uses: Vec<LeaseUse>,
        now_us: i64,
        policy: LeasePolicy,
    ) -> impl Future<Output = StoreResult<Vec<LeaseGrant>>> + Send;
}

/// Rate limits and the rate leases proxies count against.
pub trait RateLimitStore: Send + Sync + 'static {
    /// `now_us` picks the window whose grants the returned limit carries.
    fn create_rate_limit(
        &self,
        new: NewRateLimit,
        now_us: i64,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<RateLimit>> + Send;
    fn list_rate_limits(
        &self,
        org: &str,
        now_us: i64,
    ) -> impl Future<Output = StoreResult<Vec<RateLimit>>> + Send;
    fn update_rate_limit(
        &self,
        target: &RateLimitTarget,
        patch: RateLimitPatch,
        now_us: i64,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<RateLimit>> + Send;
    fn delete_rate_limit(
        &self,
        target: &RateLimitTarget,
        audit: Audit,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Renews a proxy process's rate leases and grants more where it asks: within a window,
    /// what every lease may admit (its allowance, or what it reported if that is more) never
    /// sums past the limit (one transaction; on PostgreSQL serialised across replicas).
    fn acquire_rate_leases(
        &self,
        proxy_id: &str,
        epoch: i64,
        uses: Vec<RateUse>,
        now_us: i64,
        policy: LeasePolicy,
    ) -> impl Future<Output = StoreResult<Vec<RateGrant>>> + Send;
}
