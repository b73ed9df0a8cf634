//! The tonic admin service: validates input, calls the store and the vault, converts at the
//! edge. Authentication happens before any of this, in [`auth::TokenAuth`]. Each resource's
//! RPCs live in a file of their own (`organizations`, `projects`, `providers`,
//! `provider_keys`, `models`, `virtual_keys`, `budgets`, `rate_limits`, `usage_query`, `tokens`, `audit`,
//! `fleet`, `vault`); the service here only hands each call to its file, beside the checks
//! several resources share.

mod audit;
pub mod auth;
mod budgets;
mod convert;
mod fleet;
mod model_pricing;
mod models;
mod organizations;
mod projects;
mod provider_keys;
mod providers;
mod rate_limits;
mod readiness;
mod tenancy;
mod tokens;
mod usage_query;
mod vault;
mod virtual_keys;

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_proto::admin::v1 as pb;
use sluice_proto::admin::v1::admin_service_server::AdminService;
use sluice_shared::ids::new_id;
use sluice_shared::secret::SecretString;
use sluice_shared::token;
use sluice_shared::upstream_connect::{Resolve, SystemResolver};
use tonic::{Request, Response, Status};

use self::auth::Principal;
use self::convert::{kind_from_proto, posture_from_proto, scope_from_proto};
use crate::key_check::KeyChecker;
use crate::store::{self, Audit, Posture, Store, StoreError, TokenScope};
use crate::validation::{self, InvalidField};
use crate::vault::{Vault, VaultError};

const DEFAULT_AUDIT_LIMIT: u32 = 100;
const MAX_AUDIT_LIMIT: u32 = 1_000;
const MAX_DEPLOYMENTS: usize = 64;

pub struct AdminApi<S> {
    store: Arc<S>,
    vault: Arc<Vault>,
    key_checker: KeyChecker,
    /// Resolves provider host names, to refuse those that point inward.
    resolver: Arc<dyn Resolve>,
}

impl<S> AdminApi<S> {
    pub fn new(store: Arc<S>, vault: Arc<Vault>) -> Self {
        Self::with_resolver(store, vault, Arc::new(SystemResolver))
    }

    /// An admin API whose provider checks and key checks resolve names with `resolver`.
    pub fn with_resolver(store: Arc<S>, vault: Arc<Vault>, resolver: Arc<dyn Resolve>) -> Self {
        Self {
            store,
            vault,
            key_checker: KeyChecker::new(resolver.clone()),
            resolver,
        }
    }

    /// Where a provider's URL may point, by its form and by what its host resolves to.
    async fn check_base_url(&self, url: &str, allow_private_network: bool) -> Result<(), Status> {
        check(validation::base_url("base_url", url, allow_private_network))?;
        check(
            validation::base_url_resolution(
                "base_url",
                url,
                allow_private_network,
                &*self.resolver,
            )
            .await,
        )
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T>(message: T) -> Reply<T> {
    Ok(Response::new(message))
}

/// The audit actor. The auth layer always sets it; refusing here too keeps a mis-wired
/// server closed rather than open.
/// A global admin token is named as it is; a token limited to an organisation carries its
/// scope too (`ci [org-admin:acme]`), so the log says what the writer was allowed.
fn actor<T>(request: &Request<T>) -> Result<String, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("missing admin token"))?;
    Ok(match &principal.organization {
        None => principal.token_name.clone(),
        Some(org) => format!(
            "{} [{}:{org}]",
            principal.token_name,
            principal
                .scope
                .as_str()
                .to_ascii_lowercase()
                .replace('_', "-")
        ),
    })
}

fn check(result: Result<(), InvalidField>) -> Result<(), Status> {
    checked(result)
}

fn checked<T>(result: Result<T, InvalidField>) -> Result<T, Status> {
    result.map_err(|invalid| Status::invalid_argument(invalid.to_string()))
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound { what } => Status::not_found(format!("{what} not found")),
        StoreError::AlreadyExists { what } => {
            Status::already_exists(format!("{what} already exists"))
        }
        StoreError::FailedPrecondition(message) => Status::failed_precondition(message),
        other => internal(&other),
    }
}

fn vault_status(error: VaultError) -> Status {
    match error {
        VaultError::Store(error) => store_status(error),
        other => internal(&other),
    }
}

/// Logged once here with a reference the operator can quote; the wire gets only the reference.
fn internal(error: &dyn std::error::Error) -> Status {
    let reference = new_id();
    tracing::error!(%reference, %error, "admin request failed");
    Status::internal(format!(
        "internal error (reference {reference}); if it persists, contact support with it"
    ))
}

fn names(pairs: &[(&str, &str)]) -> Result<(), Status> {
    pairs
        .iter()
        .try_for_each(|(field, value)| check(validation::name(field, value)))
}

fn deployments(list: Vec<pb::Deployment>) -> Result<Vec<store::Deployment>, Status> {
    if list.len() > MAX_DEPLOYMENTS {
        return Err(Status::invalid_argument(format!(
            "deployments: at most {MAX_DEPLOYMENTS}"
        )));
    }
    list.into_iter()
        .enumerate()
        .map(|(index, d)| {
            check(validation::name(
                &format!("deployments[{index}].provider"),
                &d.provider,
            ))?;
            if d.upstream_model.is_empty() || d.upstream_model.len() > 200 {
                return Err(Status::invalid_argument(format!(
                    "deployments[{index}].upstream_model: is required, at most 200 characters"
                )));
            }
            check(validation::display_name(
                &format!("deployments[{index}].upstream_model"),
                &d.upstream_model,
            ))?;
            Ok(store::Deployment {
                provider: d.provider,
                upstream_model: d.upstream_model,
                weight: d.weight.max(1),
                priority: d.priority,
            })
        })
        .collect()
}

/// A price (micro-dollars) or an expiry (µs since the epoch).
fn non_negative(field: &str, value: i64) -> Result<i64, Status> {
    checked(validation::non_negative(field, value))
}

fn timeout(field: &str, value: u32) -> Result<u32, Status> {
    checked(validation::timeout_ms(field, value))
}

/// Settings a provider or a model holds field by field, each unset one inherited (retries,
/// timeouts), with the message a request gives them in.
trait Inherited: Copy + Default + From<Self::Given> {
    type Given;
    /// These settings with every field `update` sets replaced.
    fn updated(self, update: Self) -> Self;
    fn validated(self) -> Result<Self, validation::InvalidField>;
}

impl Inherited for store::RetrySettings {
    type Given = sluice_proto::common::v1::RetryPolicy;
    fn updated(self, update: Self) -> Self {
        store::RetrySettings::updated(self, update)
    }
    fn validated(self) -> Result<Self, validation::InvalidField> {
        validation::retry_settings(self)
    }
}

impl Inherited for store::TimeoutSettings {
    type Given = sluice_proto::common::v1::TimeoutPolicy;
    fn updated(self, update: Self) -> Self {
        store::TimeoutSettings::updated(self, update)
    }
    fn validated(self) -> Result<Self, validation::InvalidField> {
        validation::timeout_settings(self)
    }
}

/// Settings as a create request gives them, checked.
fn given_settings<T: Inherited>(given: Option<T::Given>) -> Result<T, Status> {
    checked(given.map(T::from).unwrap_or_default().validated())
}

/// A provider's or model's settings after an update that gives `given` (each field set
/// replaces the current one) and may `reset` them first; `None` when it leaves them.
fn updated_settings<T: Inherited>(
    current: T,
    given: Option<T::Given>,
    reset: bool,
) -> Result<Option<T>, Status> {
    if given.is_none() && !reset {
        return Ok(None);
    }
    let base = if reset { T::default() } else { current };
    let updated = base.updated(given.map(T::from).unwrap_or_default());
    checked(updated.validated()).map(Some)
}

fn model_names(field: &str, models: &[String]) -> Result<(), Status> {
    check(validation::model_names(field, models))
}

impl<S: Store> AdminApi<S> {
    async fn new_provider_key(
        &self,
        org: &str,
        provider: &str,
        name: &str,
        secret: &SecretString,
    ) -> Result<store::NewProviderKey, Status> {
        let org_id = self
            .store
            .get_organization(org)
            .await
            .map_err(store_status)?
            .id;
        self.store
            .get_provider(org, provider)
            .await
            .map_err(store_status)?;
        let id = new_id();
        let sealed = self
            .vault
            .seal_provider_key(&id, &org_id, secret)
            .map_err(vault_status)?;
        Ok(store::NewProviderKey {
            id,
            name: name.to_owned(),
            sealed_secret: sealed.sealed,
            master_key_version: sealed.master_key_version,
            last_four: sealed.last_four,
            fingerprint: sealed.fingerprint,
        })
    }

    /// A LIVE project must not lose its last usable key for a model without anyone noticing:
    /// revoking or deleting such a key is refused, naming what would stop, unless `force` —
    /// and then the audit event says what it left behind.
    async fn check_key_removal(
        &self,
        org: &str,
        provider: &str,
        name: &str,
        force: bool,
    ) -> Result<Option<String>, Status> {
        let key = self
            .store
            .get_provider_key(org, provider, name)
            .await
            .map_err(store_status)?;
        let projects = self.store.list_projects(org).await.map_err(store_status)?;
        let mut stranded = Vec::new();
        for project in projects.iter().filter(|p| p.posture == Posture::Live) {
            let before = self
                .store
                .project_model_readiness(org, &project.name, None)
                .await
                .map_err(store_status)?;
            let after = self
                .store
                .project_model_readiness(org, &project.name, Some(&key.id))
                .await
                .map_err(store_status)?;
            let lost: Vec<&str> = after
                .iter()
                .filter(|model| model.usable_keys == 0)
                .filter(|model| {
                    before
                        .iter()
                        .any(|b| b.model == model.model && b.usable_keys > 0)
                })
                .map(|model| model.model.as_str())
                .collect();
            if !lost.is_empty() {
                stranded.push(format!("{org}/{} ({})", project.name, lost.join(", ")));
            }
        }
        if stranded.is_empty() {
            return Ok(None);
        }
        let stranded = stranded.join("; ");
        if force {
            return Ok(Some(format!(
                "forced: left LIVE project(s) without a usable key: {stranded}"
            )));
        }
        Err(Status::failed_precondition(format!(
            "{org}/{provider}/{name} is the last usable key of LIVE project(s) {stranded}: add              another key first (`sluicectl provider-key add`), set the project to MOCK, or pass              --force to remove it anyway"
        )))
    }
}

#[tonic::async_trait]
impl<S: Store> AdminService for AdminApi<S> {
    // === organizations ===
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Reply<pb::CreateOrganizationResponse> {
        tenancy::check(&request, "CreateOrganization")?;
        organizations::create_organization(self, request).await
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Reply<pb::GetOrganizationResponse> {
        tenancy::check(&request, "GetOrganization")?;
        organizations::get_organization(self, request).await
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Reply<pb::ListOrganizationsResponse> {
        tenancy::check(&request, "ListOrganizations")?;
        organizations::list_organizations(self, request).await
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Reply<pb::UpdateOrganizationResponse> {
        tenancy::check(&request, "UpdateOrganization")?;
        organizations::update_organization(self, request).await
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Reply<pb::DeleteOrganizationResponse> {
        tenancy::check(&request, "DeleteOrganization")?;
        organizations::delete_organization(self, request).await
    }

    // === projects ===
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Reply<pb::CreateProjectResponse> {
        tenancy::check(&request, "CreateProject")?;
        projects::create_project(self, request).await
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Reply<pb::GetProjectResponse> {
        tenancy::check(&request, "GetProject")?;
        projects::get_project(self, request).await
    }

    async fn get_project_readiness(
        &self,
        request: Request<pb::GetProjectReadinessRequest>,
    ) -> Reply<pb::GetProjectReadinessResponse> {
        tenancy::check(&request, "GetProjectReadiness")?;
        readiness::get_project_readiness(self, request).await
    }

    async fn get_caller(
        &self,
        request: Request<pb::GetCallerRequest>,
    ) -> Reply<pb::GetCallerResponse> {
        tenancy::check(&request, "GetCaller")?;
        let Some(principal) = request.extensions().get::<Principal>() else {
            return Err(Status::unauthenticated("missing admin token"));
        };
        reply(pb::GetCallerResponse {
            name: principal.token_name.clone(),
            scope: convert::scope_to_proto(principal.scope) as i32,
            organization: principal.organization.clone().unwrap_or_default(),
        })
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Reply<pb::ListProjectsResponse> {
        tenancy::check(&request, "ListProjects")?;
        projects::list_projects(self, request).await
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> Reply<pb::UpdateProjectResponse> {
        tenancy::check(&request, "UpdateProject")?;
        projects::update_project(self, request).await
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> Reply<pb::DeleteProjectResponse> {
        tenancy::check(&request, "DeleteProject")?;
        projects::delete_project(self, request).await
    }

    async fn set_project_posture(
        &self,
        request: Request<pb::SetProjectPostureRequest>,
    ) -> Reply<pb::SetProjectPostureResponse> {
        tenancy::check(&request, "SetProjectPosture")?;
        projects::set_project_posture(self, request).await
    }

    // === providers ===
    async fn create_provider(
        &self,
        request: Request<pb::CreateProviderRequest>,
    ) -> Reply<pb::CreateProviderResponse> {
        tenancy::check(&request, "CreateProvider")?;
        providers::create_provider(self, request).await
    }

    async fn get_provider(
        &self,
        request: Request<pb::GetProviderRequest>,
    ) -> Reply<pb::GetProviderResponse> {
        tenancy::check(&request, "GetProvider")?;
        providers::get_provider(self, request).await
    }

    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Reply<pb::ListProvidersResponse> {
        tenancy::check(&request, "ListProviders")?;
        providers::list_providers(self, request).await
    }

    async fn update_provider(
        &self,
        request: Request<pb::UpdateProviderRequest>,
    ) -> Reply<pb::UpdateProviderResponse> {
        tenancy::check(&request, "UpdateProvider")?;
        providers::update_provider(self, request).await
    }

    async fn delete_provider(
        &self,
        request: Request<pb::DeleteProviderRequest>,
    ) -> Reply<pb::DeleteProviderResponse> {
        tenancy::check(&request, "DeleteProvider")?;
        providers::delete_provider(self, request).await
    }

    // === provider keys ===
    async fn create_provider_key(
        &self,
        request: Request<pb::CreateProviderKeyRequest>,
    ) -> Reply<pb::CreateProviderKeyResponse> {
        tenancy::check(&request, "CreateProviderKey")?;
        provider_keys::create_provider_key(self, request).await
    }

    async fn get_provider_key(
        &self,
        request: Request<pb::GetProviderKeyRequest>,
    ) -> Reply<pb::GetProviderKeyResponse> {
        tenancy::check(&request, "GetProviderKey")?;
        provider_keys::get_provider_key(self, request).await
    }

    async fn list_provider_keys(
        &self,
        request: Request<pb::ListProviderKeysRequest>,
    ) -> Reply<pb::ListProviderKeysResponse> {
        tenancy::check(&request, "ListProviderKeys")?;
        provider_keys::list_provider_keys(self, request).await
    }

    async fn rotate_provider_key(
        &self,
        request: Request<pb::RotateProviderKeyRequest>,
    ) -> Reply<pb::RotateProviderKeyResponse> {
        tenancy::check(&request, "RotateProviderKey")?;
        provider_keys::rotate_provider_key(self, request).await
    }

    async fn revoke_provider_key(
        &self,
        request: Request<pb::RevokeProviderKeyRequest>,
    ) -> Reply<pb::RevokeProviderKeyResponse> {
        tenancy::check(&request, "RevokeProviderKey")?;
        provider_keys::revoke_provider_key(self, request).await
    }

    async fn delete_provider_key(
        &self,
        request: Request<pb::DeleteProviderKeyRequest>,
    ) -> Reply<pb::DeleteProviderKeyResponse> {
        tenancy::check(&request, "DeleteProviderKey")?;
        provider_keys::delete_provider_key(self, request).await
    }

    async fn test_provider_key(
        &self,
        request: Request<pb::TestProviderKeyRequest>,
    ) -> Reply<pb::TestProviderKeyResponse> {
        tenancy::check(&request, "TestProviderKey")?;
        provider_keys::test_provider_key(self, request).await
    }

    // === models ===
    async fn create_model(
        &self,
        request: Request<pb::CreateModelRequest>,
    ) -> Reply<pb::CreateModelResponse> {
        tenancy::check(&request, "CreateModel")?;
        models::create_model(self, request).await
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Reply<pb::GetModelResponse> {
        tenancy::check(&request, "GetModel")?;
        models::get_model(self, request).await
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Reply<pb::ListModelsResponse> {
        tenancy::check(&request, "ListModels")?;
        models::list_models(self, request).await
    }

    async fn update_model(
        &self,
        request: Request<pb::UpdateModelRequest>,
    ) -> Reply<pb::UpdateModelResponse> {
        tenancy::check(&request, "UpdateModel")?;
        models::update_model(self, request).await
    }

    async fn sync_model_pricing(
        &self,
        request: Request<pb::SyncModelPricingRequest>,
    ) -> Reply<pb::SyncModelPricingResponse> {
        tenancy::check(&request, "SyncModelPricing")?;
        models::sync_model_pricing(self, request).await
    }

    // === usage ===
    async fn query_usage(
        &self,
        request: Request<pb::QueryUsageRequest>,
    ) -> Reply<pb::QueryUsageResponse> {
        tenancy::check(&request, "QueryUsage")?;
        usage_query::query_usage(self, request).await
    }

    async fn list_run_calls(
        &self,
        request: Request<pb::ListRunCallsRequest>,
    ) -> Reply<pb::ListRunCallsResponse> {
        tenancy::check(&request, "ListRunCalls")?;
        usage_query::list_run_calls(self, request).await
    }

    // === budgets ===
    async fn create_budget(
        &self,
        request: Request<pb::CreateBudgetRequest>,
    ) -> Reply<pb::CreateBudgetResponse> {
        tenancy::check(&request, "CreateBudget")?;
        budgets::create_budget(self, request).await
    }

    async fn list_budgets(
        &self,
        request: Request<pb::ListBudgetsRequest>,
    ) -> Reply<pb::ListBudgetsResponse> {
        tenancy::check(&request, "ListBudgets")?;
        budgets::list_budgets(self, request).await
    }

    async fn update_budget(
        &self,
        request: Request<pb::UpdateBudgetRequest>,
    ) -> Reply<pb::UpdateBudgetResponse> {
        tenancy::check(&request, "UpdateBudget")?;
        budgets::update_budget(self, request).await
    }

    async fn delete_budget(
        &self,
        request: Request<pb::DeleteBudgetRequest>,
    ) -> Reply<pb::DeleteBudgetResponse> {
        tenancy::check(&request, "DeleteBudget")?;
        budgets::delete_budget(self, request).await
    }

    // === rate limits ===
    async fn create_rate_limit(
        &self,
        request: Request<pb::CreateRateLimitRequest>,
    ) -> Reply<pb::CreateRateLimitResponse> {
        tenancy::check(&request, "CreateRateLimit")?;
        rate_limits::create_rate_limit(self, request).await
    }

    async fn list_rate_limits(
        &self,
        request: Request<pb::ListRateLimitsRequest>,
    ) -> Reply<pb::ListRateLimitsResponse> {
        tenancy::check(&request, "ListRateLimits")?;
        rate_limits::list_rate_limits(self, request).await
    }

    async fn update_rate_limit(
        &self,
        request: Request<pb::UpdateRateLimitRequest>,
    ) -> Reply<pb::UpdateRateLimitResponse> {
        tenancy::check(&request, "UpdateRateLimit")?;
        rate_limits::update_rate_limit(self, request).await
    }

    async fn delete_rate_limit(
        &self,
        request: Request<pb::DeleteRateLimitRequest>,
    ) -> Reply<pb::DeleteRateLimitResponse> {
        tenancy::check(&request, "DeleteRateLimit")?;
        rate_limits::delete_rate_limit(self, request).await
    }

    async fn delete_model(
        &self,
        request: Request<pb::DeleteModelRequest>,
    ) -> Reply<pb::DeleteModelResponse> {
        tenancy::check(&request, "DeleteModel")?;
        budgets::delete_model(self, request).await
    }

    // === virtual keys ===
    async fn create_virtual_key(
        &self,
        request: Request<pb::CreateVirtualKeyRequest>,
    ) -> Reply<pb::CreateVirtualKeyResponse> {
        tenancy::check(&request, "CreateVirtualKey")?;
        virtual_keys::create_virtual_key(self, request).await
    }

    async fn get_virtual_key(
        &self,
        request: Request<pb::GetVirtualKeyRequest>,
    ) -> Reply<pb::GetVirtualKeyResponse> {
        tenancy::check(&request, "GetVirtualKey")?;
        virtual_keys::get_virtual_key(self, request).await
    }

    async fn list_virtual_keys(
        &self,
        request: Request<pb::ListVirtualKeysRequest>,
    ) -> Reply<pb::ListVirtualKeysResponse> {
        tenancy::check(&request, "ListVirtualKeys")?;
        virtual_keys::list_virtual_keys(self, request).await
    }

    async fn update_virtual_key(
        &self,
        request: Request<pb::UpdateVirtualKeyRequest>,
    ) -> Reply<pb::UpdateVirtualKeyResponse> {
        tenancy::check(&request, "UpdateVirtualKey")?;
        virtual_keys::update_virtual_key(self, request).await
    }

    async fn revoke_virtual_key(
        &self,
        request: Request<pb::RevokeVirtualKeyRequest>,
    ) -> Reply<pb::RevokeVirtualKeyResponse> {
        tenancy::check(&request, "RevokeVirtualKey")?;
        virtual_keys::revoke_virtual_key(self, request).await
    }

    async fn delete_virtual_key(
        &self,
        request: Request<pb::DeleteVirtualKeyRequest>,
    ) -> Reply<pb::DeleteVirtualKeyResponse> {
        tenancy::check(&request, "DeleteVirtualKey")?;
        virtual_keys::delete_virtual_key(self, request).await
    }

    // === admin tokens ===
    async fn create_admin_token(
        &self,
        request: Request<pb::CreateAdminTokenRequest>,
    ) -> Reply<pb::CreateAdminTokenResponse> {
        tenancy::check(&request, "CreateAdminToken")?;
        tokens::create_admin_token(self, request).await
    }

    async fn list_admin_tokens(
        &self,
        request: Request<pb::ListAdminTokensRequest>,
    ) -> Reply<pb::ListAdminTokensResponse> {
        tenancy::check(&request, "ListAdminTokens")?;
        tokens::list_admin_tokens(self, request).await
    }

    async fn revoke_admin_token(
        &self,
        request: Request<pb::RevokeAdminTokenRequest>,
    ) -> Reply<pb::RevokeAdminTokenResponse> {
        tenancy::check(&request, "RevokeAdminToken")?;
        tokens::revoke_admin_token(self, request).await
    }

    // === audit ===
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        tenancy::check(&request, "ListAuditEvents")?;
        audit::list_audit_events(self, request).await
    }

    // === fleet ===
    async fn list_proxies(
        &self,
        request: Request<pb::ListProxiesRequest>,
    ) -> Reply<pb::ListProxiesResponse> {
        tenancy::check(&request, "ListProxies")?;
        fleet::list_proxies(self, request).await
    }

    // === vault ===
    async fn get_vault_status(
        &self,
        request: Request<pb::GetVaultStatusRequest>,
    ) -> Reply<pb::GetVaultStatusResponse> {
        tenancy::check(&request, "GetVaultStatus")?;
        vault::get_vault_status(self, request).await
    }

    async fn rewrap_provider_keys(
        &self,
        request: Request<pb::RewrapProviderKeysRequest>,
    ) -> Reply<pb::RewrapProviderKeysResponse> {
        tenancy::check(&request, "RewrapProviderKeys")?;
        vault::rewrap_provider_keys(self, request).await
    }
}

/// A new admin token: the value (shown once) and the record to store.
pub fn mint_admin_token(name: &str, scope: TokenScope) -> (SecretString, store::NewAdminToken) {
    let prefix = match scope {
        TokenScope::DataPlane => "sluice-dp-",
        TokenScope::Admin
        | TokenScope::ReadOnly
        | TokenScope::OrgAdmin
        | TokenScope::OrgReadOnly => token::ADMIN_TOKEN_PREFIX,
    };
    let minted = token::mint(prefix);
    let new = store::NewAdminToken {
        id: new_id(),
        name: name.to_owned(),
        scope,
        organization_id: None,
        prefix: minted.display_prefix,
        token_hash: minted.hash,
    };
    (minted.value, new)
}
