//! The tonic admin service: validates input, calls the store and the vault, converts at the
//! edge. Authentication happens before any of this, in [`auth::TokenAuth`].

pub mod auth;
mod budgets;
mod convert;
mod model_pricing;
mod usage_query;

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

const DEFAULT_TIMEOUT_MS: u32 = 60_000;
const MAX_TIMEOUT_MS: u32 = 600_000;
const DEFAULT_AUDIT_LIMIT: u32 = 100;
const MAX_AUDIT_LIMIT: u32 = 1_000;
const MAX_DEPLOYMENTS: usize = 64;
const MAX_ALLOWED_MODELS: usize = 256;

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
fn actor<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Principal>()
        .map(|principal| principal.token_name.clone())
        .ok_or_else(|| Status::unauthenticated("missing admin token"))
}

fn check(result: Result<(), InvalidField>) -> Result<(), Status> {
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

fn price(field: &str, value: i64) -> Result<i64, Status> {
    if value < 0 {
        return Err(Status::invalid_argument(format!(
            "{field}: must not be negative"
        )));
    }
    Ok(value)
}

fn timeout(field: &str, value: u32) -> Result<u32, Status> {
    match value {
        0 => Ok(DEFAULT_TIMEOUT_MS),
        v if v > MAX_TIMEOUT_MS => Err(Status::invalid_argument(format!(
            "{field}: must be at most {MAX_TIMEOUT_MS} ms"
        ))),
        v => Ok(v),
    }
}

fn model_names(field: &str, models: &[String]) -> Result<(), Status> {
    if models.len() > MAX_ALLOWED_MODELS {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {MAX_ALLOWED_MODELS} models"
        )));
    }
    models
        .iter()
        .enumerate()
        .try_for_each(|(i, model)| check(validation::name(&format!("{field}[{i}]"), model)))
}

fn expiry(field: &str, value: i64) -> Result<i64, Status> {
    if value < 0 {
        return Err(Status::invalid_argument(format!(
            "{field}: must not be negative"
        )));
    }
    Ok(value)
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

    /// LIVE costs money, so it needs every model the project may use to have a usable key.
    async fn check_ready_for_live(&self, org: &str, name: &str) -> Result<(), Status> {
        let readiness = self
            .store
            .project_model_readiness(org, name, None)
            .await
            .map_err(store_status)?;
        if readiness.is_empty() {
            return Err(Status::failed_precondition(format!(
                "project '{org}/{name}' has no models to serve: set a default model or create a \
                 virtual key first"
            )));
        }
        let unready: Vec<&str> = readiness
            .iter()
            .filter(|model| model.usable_keys == 0)
            .map(|model| model.model.as_str())
            .collect();
        if !unready.is_empty() {
            return Err(Status::failed_precondition(format!(
                "project '{org}/{name}' cannot go LIVE: no usable provider key for model(s) {}; \
                 add one with `sluicectl provider-key add ORG/PROVIDER/NAME` and make sure a \
                 deployment of each model points at that provider",
                unready.join(", ")
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl<S: Store> AdminService for AdminApi<S> {
    // === organizations ===

    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Reply<pb::CreateOrganizationResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("name", &req.name)])?;
        check(validation::display_name("display_name", &req.display_name))?;
        let audit = Audit::new(&actor, "organization.create", &req.name);
        let org = self
            .store
            .create_organization(
                store::NewOrganization {
                    name: req.name,
                    display_name: req.display_name,
                },
                audit,
            )
            .await
            .map_err(store_status)?;
        reply(pb::CreateOrganizationResponse {
            organization: Some(org.into()),
        })
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Reply<pb::GetOrganizationResponse> {
        let req = request.into_inner();
        names(&[("name", &req.name)])?;
        let org = self
            .store
            .get_organization(&req.name)
            .await
            .map_err(store_status)?;
        reply(pb::GetOrganizationResponse {
            organization: Some(org.into()),
        })
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Reply<pb::ListOrganizationsResponse> {
        let req = request.into_inner();
        check(validation::display_name("name_prefix", &req.name_prefix))?;
        let orgs = self
            .store
            .list_organizations(&req.name_prefix)
            .await
            .map_err(store_status)?;
        reply(pb::ListOrganizationsResponse {
            organizations: orgs.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_organization(
        &self,
        request: Request<pb::UpdateOrganizationRequest>,
    ) -> Reply<pb::UpdateOrganizationResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("name", &req.name)])?;
        if let Some(display) = &req.display_name {
            check(validation::display_name("display_name", display))?;
        }
        let audit = Audit::new(&actor, "organization.update", &req.name);
        let org = self
            .store
            .update_organization(&req.name, req.display_name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::UpdateOrganizationResponse {
            organization: Some(org.into()),
        })
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Reply<pb::DeleteOrganizationResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("name", &req.name)])?;
        let audit = Audit::new(&actor, "organization.delete", &req.name);
        self.store
            .delete_organization(&req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::DeleteOrganizationResponse {})
    }

    // === projects ===

    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Reply<pb::CreateProjectResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        check(validation::display_name("display_name", &req.display_name))?;
        if !req.default_model.is_empty() {
            names(&[("default_model", &req.default_model)])?;
        }
        let target = format!("{}/{}", req.organization, req.name);
        let audit = Audit::new(&actor, "project.create", target).with_detail("posture=MOCK");
        let project = self
            .store
            .create_project(
                &req.organization,
                store::NewProject {
                    name: req.name,
                    display_name: req.display_name,
                    default_model: req.default_model,
                },
                audit,
            )
            .await
            .map_err(store_status)?;
        reply(pb::CreateProjectResponse {
            project: Some(project.into()),
        })
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Reply<pb::GetProjectResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let project = self
            .store
            .get_project(&req.organization, &req.name)
            .await
            .map_err(store_status)?;
        reply(pb::GetProjectResponse {
            project: Some(project.into()),
        })
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Reply<pb::ListProjectsResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization)])?;
        let projects = self
            .store
            .list_projects(&req.organization)
            .await
            .map_err(store_status)?;
        reply(pb::ListProjectsResponse {
            projects: projects.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> Reply<pb::UpdateProjectResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        if let Some(display) = &req.display_name {
            check(validation::display_name("display_name", display))?;
        }
        if let Some(model) = req.default_model.as_deref().filter(|m| !m.is_empty()) {
            names(&[("default_model", model)])?;
        }
        let target = format!("{}/{}", req.organization, req.name);
        let audit = Audit::new(&actor, "project.update", target);
        let patch = store::ProjectPatch {
            display_name: req.display_name,
            default_model: req.default_model,
            posture: None,
        };
        let project = self
            .store
            .update_project(&req.organization, &req.name, patch, audit)
            .await
            .map_err(store_status)?;
        reply(pb::UpdateProjectResponse {
            project: Some(project.into()),
        })
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> Reply<pb::DeleteProjectResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let audit = Audit::new(
            &actor,
            "project.delete",
            format!("{}/{}", req.organization, req.name),
        );
        self.store
            .delete_project(&req.organization, &req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::DeleteProjectResponse {})
    }

    async fn set_project_posture(
        &self,
        request: Request<pb::SetProjectPostureRequest>,
    ) -> Reply<pb::SetProjectPostureResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let posture = posture_from_proto("posture", req.posture)?;
        if posture == Posture::Live {
            self.check_ready_for_live(&req.organization, &req.name)
                .await?;
        }
        let target = format!("{}/{}", req.organization, req.name);
        let audit = Audit::new(&actor, "project.set_posture", target)
            .with_detail(format!("posture={}", posture.as_str()));
        let patch = store::ProjectPatch {
            posture: Some(posture),
            ..Default::default()
        };
        let project = self
            .store
            .update_project(&req.organization, &req.name, patch, audit)
            .await
            .map_err(store_status)?;
        reply(pb::SetProjectPostureResponse {
            project: Some(project.into()),
        })
    }

    // === providers ===

    async fn create_provider(
        &self,
        request: Request<pb::CreateProviderRequest>,
    ) -> Reply<pb::CreateProviderResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let kind = kind_from_proto("type", req.r#type)?;
        self.check_base_url(&req.base_url, req.allow_private_network)
            .await?;
        check(validation::display_name("api_version", &req.api_version))?;
        if kind == store::ProviderKind::AzureOpenAi && req.api_version.is_empty() {
            return Err(Status::invalid_argument(
                "api_version: Azure OpenAI needs one, e.g. 2024-10-21 (sent as ?api-version=)",
            ));
        }
        let extra_headers: BTreeMap<String, String> = req.extra_headers.into_iter().collect();
        check(validation::extra_headers("extra_headers", &extra_headers))?;
        let target = format!("{}/{}", req.organization, req.name);
        let audit = Audit::new(&actor, "provider.create", target).with_detail(format!(
            "type={} base_url={}",
            kind.as_str(),
            req.base_url
        ));
        let provider = self
            .store
            .create_provider(
                &req.organization,
                store::NewProvider {
                    name: req.name,
                    kind,
                    base_url: req.base_url,
                    api_version: req.api_version,
                    timeout_ms: timeout("timeout_ms", req.timeout_ms)?,
                    extra_headers,
                    allow_private_network: req.allow_private_network,
                },
                audit,
            )
            .await
            .map_err(store_status)?;
        reply(pb::CreateProviderResponse {
            provider: Some(provider.into()),
        })
    }

    async fn get_provider(
        &self,
        request: Request<pb::GetProviderRequest>,
    ) -> Reply<pb::GetProviderResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let provider = self
            .store
            .get_provider(&req.organization, &req.name)
            .await
            .map_err(store_status)?;
        reply(pb::GetProviderResponse {
            provider: Some(provider.into()),
        })
    }

    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Reply<pb::ListProvidersResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization)])?;
        let providers = self
            .store
            .list_providers(&req.organization)
            .await
            .map_err(store_status)?;
        reply(pb::ListProvidersResponse {
            providers: providers.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_provider(
        &self,
        request: Request<pb::UpdateProviderRequest>,
    ) -> Reply<pb::UpdateProviderResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let current = self
            .store
            .get_provider(&req.organization, &req.name)
            .await
            .map_err(store_status)?;
        let allow_private = req
            .allow_private_network
            .unwrap_or(current.allow_private_network);
        // The URL is re-checked whenever it or the private-network flag changes.
        let url = req
            .base_url
            .clone()
            .unwrap_or_else(|| current.base_url.clone());
        self.check_base_url(&url, allow_private).await?;
        if let Some(version) = &req.api_version {
            check(validation::display_name("api_version", version))?;
        }
        let extra_headers = if req.replace_extra_headers {
            let headers: BTreeMap<String, String> = req.extra_headers.into_iter().collect();
            check(validation::extra_headers("extra_headers", &headers))?;
            Some(headers)
        } else {
            None
        };
        let timeout_ms = req
            .timeout_ms
            .map(|t| timeout("timeout_ms", t))
            .transpose()?;
        let target = format!("{}/{}", req.organization, req.name);
        let audit = Audit::new(&actor, "provider.update", target);
        let patch = store::ProviderPatch {
            base_url: req.base_url,
            api_version: req.api_version,
            timeout_ms,
            extra_headers,
            active: req.active,
            allow_private_network: req.allow_private_network,
        };
        let provider = self
            .store
            .update_provider(&req.organization, &req.name, patch, audit)
            .await
            .map_err(store_status)?;
        reply(pb::UpdateProviderResponse {
            provider: Some(provider.into()),
        })
    }

    async fn delete_provider(
        &self,
        request: Request<pb::DeleteProviderRequest>,
    ) -> Reply<pb::DeleteProviderResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let audit = Audit::new(
            &actor,
            "provider.delete",
            format!("{}/{}", req.organization, req.name),
        );
        self.store
            .delete_provider(&req.organization, &req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::DeleteProviderResponse {})
    }

    // === provider keys ===

    async fn create_provider_key(
        &self,
        request: Request<pb::CreateProviderKeyRequest>,
    ) -> Reply<pb::CreateProviderKeyResponse> {
        let actor = actor(&request)?;
        let mut req = request.into_inner();
        let secret = SecretString::new(std::mem::take(&mut req.secret));
        names(&[
            ("organization", &req.organization),
            ("provider", &req.provider),
            ("name", &req.name),
        ])?;
        check(validation::secret("secret", secret.expose()))?;
        let new = self
            .new_provider_key(&req.organization, &req.provider, &req.name, &secret)
            .await?;
        let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
        let audit = Audit::new(&actor, "provider_key.create", target)
            .with_detail(format!("fingerprint={}", new.fingerprint));
        let key = self
            .store
            .create_provider_key(&req.organization, &req.provider, new, audit)
            .await
            .map_err(store_status)?;
        reply(pb::CreateProviderKeyResponse {
            provider_key: Some(key.into()),
        })
    }

    async fn get_provider_key(
        &self,
        request: Request<pb::GetProviderKeyRequest>,
    ) -> Reply<pb::GetProviderKeyResponse> {
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("provider", &req.provider),
            ("name", &req.name),
        ])?;
        let key = self
            .store
            .get_provider_key(&req.organization, &req.provider, &req.name)
            .await
            .map_err(store_status)?;
        reply(pb::GetProviderKeyResponse {
            provider_key: Some(key.into()),
        })
    }

    async fn list_provider_keys(
        &self,
        request: Request<pb::ListProviderKeysRequest>,
    ) -> Reply<pb::ListProviderKeysResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization)])?;
        if !req.provider.is_empty() {
            names(&[("provider", &req.provider)])?;
        }
        let keys = self
            .store
            .list_provider_keys(&req.organization, &req.provider)
            .await
            .map_err(store_status)?;
        reply(pb::ListProviderKeysResponse {
            provider_keys: keys.into_iter().map(Into::into).collect(),
        })
    }

    async fn rotate_provider_key(
        &self,
        request: Request<pb::RotateProviderKeyRequest>,
    ) -> Reply<pb::RotateProviderKeyResponse> {
        let actor = actor(&request)?;
        let mut req = request.into_inner();
        let secret = SecretString::new(std::mem::take(&mut req.new_secret));
        names(&[
            ("organization", &req.organization),
            ("provider", &req.provider),
            ("name", &req.name),
            ("new_name", &req.new_name),
        ])?;
        check(validation::secret("new_secret", secret.expose()))?;
        let new = self
            .new_provider_key(&req.organization, &req.provider, &req.new_name, &secret)
            .await?;
        let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
        let audit = Audit::new(&actor, "provider_key.rotate", target).with_detail(format!(
            "new_key={} fingerprint={}",
            req.new_name, new.fingerprint
        ));
        let (retiring, active) = self
            .store
            .rotate_provider_key(&req.organization, &req.provider, &req.name, new, audit)
            .await
            .map_err(store_status)?;
        reply(pb::RotateProviderKeyResponse {
            retiring: Some(retiring.into()),
            active: Some(active.into()),
        })
    }

    async fn revoke_provider_key(
        &self,
        request: Request<pb::RevokeProviderKeyRequest>,
    ) -> Reply<pb::RevokeProviderKeyResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("provider", &req.provider),
            ("name", &req.name),
        ])?;
        let stranded = self
            .check_key_removal(&req.organization, &req.provider, &req.name, req.force)
            .await?;
        let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
        let mut audit = Audit::new(&actor, "provider_key.revoke", target);
        if let Some(detail) = stranded {
            audit = audit.with_detail(detail);
        }
        let key = self
            .store
            .revoke_provider_key(&req.organization, &req.provider, &req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::RevokeProviderKeyResponse {
            provider_key: Some(key.into()),
        })
    }

    async fn delete_provider_key(
        &self,
        request: Request<pb::DeleteProviderKeyRequest>,
    ) -> Reply<pb::DeleteProviderKeyResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("provider", &req.provider),
            ("name", &req.name),
        ])?;
        let stranded = self
            .check_key_removal(&req.organization, &req.provider, &req.name, req.force)
            .await?;
        let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
        let mut audit = Audit::new(&actor, "provider_key.delete", target);
        if let Some(detail) = stranded {
            audit = audit.with_detail(detail);
        }
        self.store
            .delete_provider_key(&req.organization, &req.provider, &req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::DeleteProviderKeyResponse {})
    }

    async fn test_provider_key(
        &self,
        request: Request<pb::TestProviderKeyRequest>,
    ) -> Reply<pb::TestProviderKeyResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("provider", &req.provider),
            ("name", &req.name),
        ])?;
        if req.model.len() > 200 {
            return Err(Status::invalid_argument("model: at most 200 characters"));
        }
        let provider = self
            .store
            .get_provider(&req.organization, &req.provider)
            .await
            .map_err(store_status)?;
        let sealed = self
            .store
            .sealed_provider_key(&req.organization, &req.provider, &req.name)
            .await
            .map_err(store_status)?;
        let secret = self
            .vault
            .open_provider_key(&sealed.id, &sealed.org_id, &sealed.sealed_secret)
            .map_err(vault_status)?;
        let model = (!req.model.is_empty()).then_some(req.model.as_str());
        let check = self.key_checker.check(&provider, &secret, model).await;
        drop(secret);
        let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
        let audit = Audit::new(&actor, "provider_key.test", target).with_detail(format!(
            "{} (upstream status {})",
            check.health.as_str(),
            check.upstream_status
        ));
        let key = self
            .store
            .set_provider_key_health(
                &req.organization,
                &req.provider,
                &req.name,
                check.health,
                audit,
            )
            .await
            .map_err(store_status)?;
        let key: pb::ProviderKey = key.into();
        reply(pb::TestProviderKeyResponse {
            health: key.health,
            upstream_status: u32::from(check.upstream_status),
            message: check.message,
            key: Some(key),
        })
    }

    // === models ===

    async fn create_model(
        &self,
        request: Request<pb::CreateModelRequest>,
    ) -> Reply<pb::CreateModelResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let catalog = model_pricing::catalog("")?;
        let deployments = deployments(req.deployments.clone())?;
        let new = model_pricing::for_new_model(&req, &deployments, &catalog)?;
        let target = format!("{}/{}", req.organization, new.name);
        let audit = Audit::new(&actor, "model.create", target);
        let model = self
            .store
            .create_model(&req.organization, new, audit)
            .await
            .map_err(store_status)?;
        reply(pb::CreateModelResponse {
            model: Some(model.into()),
        })
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Reply<pb::GetModelResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let model = self
            .store
            .get_model(&req.organization, &req.name)
            .await
            .map_err(store_status)?;
        reply(pb::GetModelResponse {
            model: Some(model.into()),
        })
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Reply<pb::ListModelsResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization)])?;
        let models = self
            .store
            .list_models(&req.organization)
            .await
            .map_err(store_status)?;
        reply(pb::ListModelsResponse {
            models: models.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_model(
        &self,
        request: Request<pb::UpdateModelRequest>,
    ) -> Reply<pb::UpdateModelResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let patch = store::ModelPatch {
            deployments: if req.replace_deployments {
                Some(deployments(req.deployments)?)
            } else {
                None
            },
            input_price_micros_per_mtok: req
                .input_price_micros_per_mtok
                .map(|p| price("input_price_micros_per_mtok", p))
                .transpose()?,
            output_price_micros_per_mtok: req
                .output_price_micros_per_mtok
                .map(|p| price("output_price_micros_per_mtok", p))
                .transpose()?,
            context_window: req.context_window,
            cached_input_price_micros_per_mtok: req
                .cached_input_price_micros_per_mtok
                .map(|p| price("cached_input_price_micros_per_mtok", p).map(Some))
                .transpose()?,
            price_source: None,
            catalog_id: None,
        };
        let operator_priced = patch.input_price_micros_per_mtok.is_some()
            || patch.output_price_micros_per_mtok.is_some()
            || patch.cached_input_price_micros_per_mtok.is_some();
        let patch = if req.catalog_pricing {
            if operator_priced {
                return Err(Status::invalid_argument(
                    "catalog_pricing: give prices or follow the catalog, not both",
                ));
            }
            let current = self
                .store
                .get_model(&req.organization, &req.name)
                .await
                .map_err(store_status)?;
            let deployments = patch.deployments.as_deref().unwrap_or(&current.deployments);
            let catalog = model_pricing::catalog("")?;
            let entry = model_pricing::entry_for(&catalog, &req.name, deployments).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the pricing catalog does not know model '{}' or its upstream models: set its prices instead",
                    req.name
                ))
            })?;
            store::ModelPatch {
                deployments: patch.deployments,
                ..model_pricing::catalog_patch(entry)
            }
        } else if operator_priced {
            store::ModelPatch {
                price_source: Some(store::PriceSource::Operator),
                catalog_id: Some(String::new()),
                ..patch
            }
        } else {
            patch
        };
        let audit = Audit::new(
            &actor,
            "model.update",
            format!("{}/{}", req.organization, req.name),
        );
        let model = self
            .store
            .update_model(&req.organization, &req.name, patch, audit)
            .await
            .map_err(store_status)?;
        reply(pb::UpdateModelResponse {
            model: Some(model.into()),
        })
    }

    async fn sync_model_pricing(
        &self,
        request: Request<pb::SyncModelPricingRequest>,
    ) -> Reply<pb::SyncModelPricingResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization)])?;
        let catalog = model_pricing::catalog(&req.catalog_toml)?;
        let models = self
            .store
            .list_models(&req.organization)
            .await
            .map_err(store_status)?;
        let mut response = pb::SyncModelPricingResponse {
            catalog_as_of: catalog.as_of.clone(),
            ..Default::default()
        };
        for model in models {
            let Some(entry) = model_pricing::entry_for(&catalog, &model.name, &model.deployments)
            else {
                response.unknown.push(model.name);
                continue;
            };
            let skipped = if model.price_source == store::PriceSource::Operator && !req.force {
                "operator-set prices kept (force to replace them)"
            } else if model_pricing::is_current(&model, entry) {
                "already current"
            } else if req.dry_run {
                "dry run"
            } else {
                let audit = Audit::new(
                    &actor,
                    "model.sync_pricing",
                    format!(
                        "{}/{} <- catalog {} ({})",
                        req.organization, model.name, entry.id, catalog.as_of
                    ),
                );
                self.store
                    .update_model(
                        &req.organization,
                        &model.name,
                        model_pricing::catalog_patch(entry),
                        audit,
                    )
                    .await
                    .map_err(store_status)?;
                ""
            };
            response
                .changes
                .push(model_pricing::change(&model.name, entry, skipped));
        }
        reply(response)
    }

    // === usage ===

    async fn query_usage(
        &self,
        request: Request<pb::QueryUsageRequest>,
    ) -> Reply<pb::QueryUsageResponse> {
        let query = usage_query::query(request.into_inner(), sluice_shared::time::now_us())?;
        let (rows, total) = self.store.query_usage(query).await.map_err(store_status)?;
        reply(pb::QueryUsageResponse {
            rows: rows.into_iter().map(Into::into).collect(),
            total: Some(total.into()),
        })
    }

    // === budgets ===

    async fn create_budget(
        &self,
        request: Request<pb::CreateBudgetRequest>,
    ) -> Reply<pb::CreateBudgetResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let new = store::NewBudget {
            target: budgets::target(req.target)?,
            period: budgets::period(req.period)?,
            limit_micros: budgets::limit(req.limit_micros)?,
            posture: budgets::posture(req.posture)?.ok_or_else(|| {
                Status::invalid_argument("posture: hard (refuse once spent) or soft (alert only)")
            })?,
            alert_percents: budgets::alert_percents(req.alert_percents)?,
        };
        let audit = Audit::new(&actor, "budget.create", new.period.label(&new.target)).with_detail(
            format!(
                "{} micro-dollars, {}",
                new.limit_micros,
                new.posture.as_str().to_lowercase()
            ),
        );
        let budget = self
            .store
            .create_budget(new, sluice_shared::time::now_us(), audit)
            .await
            .map_err(store_status)?;
        reply(pb::CreateBudgetResponse {
            budget: Some(budget.into()),
        })
    }

    async fn list_budgets(
        &self,
        request: Request<pb::ListBudgetsRequest>,
    ) -> Reply<pb::ListBudgetsResponse> {
        let req = request.into_inner();
        names(&[("organization", &req.organization)])?;
        let budgets = self
            .store
            .list_budgets(&req.organization, sluice_shared::time::now_us())
            .await
            .map_err(store_status)?;
        reply(pb::ListBudgetsResponse {
            budgets: budgets.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_budget(
        &self,
        request: Request<pb::UpdateBudgetRequest>,
    ) -> Reply<pb::UpdateBudgetResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let target = budgets::target(req.target)?;
        let period = budgets::period(req.period)?;
        let patch = store::BudgetPatch {
            limit_micros: req.limit_micros.map(budgets::limit).transpose()?,
            posture: budgets::posture(req.posture)?,
            alert_percents: if req.replace_alert_percents {
                Some(budgets::alert_percents(req.alert_percents)?)
            } else {
                None
            },
        };
        let audit = Audit::new(&actor, "budget.update", period.label(&target));
        let budget = self
            .store
            .update_budget(&target, period, patch, sluice_shared::time::now_us(), audit)
            .await
            .map_err(store_status)?;
        reply(pb::UpdateBudgetResponse {
            budget: Some(budget.into()),
        })
    }

    async fn delete_budget(
        &self,
        request: Request<pb::DeleteBudgetRequest>,
    ) -> Reply<pb::DeleteBudgetResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let target = budgets::target(req.target)?;
        let period = budgets::period(req.period)?;
        let audit = Audit::new(&actor, "budget.delete", period.label(&target));
        self.store
            .delete_budget(&target, period, audit)
            .await
            .map_err(store_status)?;
        reply(pb::DeleteBudgetResponse {})
    }

    async fn delete_model(
        &self,
        request: Request<pb::DeleteModelRequest>,
    ) -> Reply<pb::DeleteModelResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("organization", &req.organization), ("name", &req.name)])?;
        let audit = Audit::new(
            &actor,
            "model.delete",
            format!("{}/{}", req.organization, req.name),
        );
        self.store
            .delete_model(&req.organization, &req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::DeleteModelResponse {})
    }

    // === virtual keys ===

    async fn create_virtual_key(
        &self,
        request: Request<pb::CreateVirtualKeyRequest>,
    ) -> Reply<pb::CreateVirtualKeyResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("project", &req.project),
            ("name", &req.name),
        ])?;
        model_names("allowed_models", &req.allowed_models)?;
        let minted = token::mint(token::VIRTUAL_KEY_PREFIX);
        let new = store::NewVirtualKey {
            id: new_id(),
            name: req.name.clone(),
            prefix: minted.display_prefix.clone(),
            key_hash: minted.hash.clone(),
            allowed_models: req.allowed_models,
            expires_at_us: expiry("expires_at_us", req.expires_at_us)?,
        };
        let target = format!("{}/{}/{}", req.organization, req.project, req.name);
        let audit = Audit::new(&actor, "virtual_key.create", target)
            .with_detail(format!("prefix={}", minted.display_prefix));
        let key = self
            .store
            .create_virtual_key(&req.organization, &req.project, new, audit)
            .await
            .map_err(store_status)?;
        reply(pb::CreateVirtualKeyResponse {
            virtual_key: Some(key.into()),
            key: minted.value.expose().to_owned(),
        })
    }

    async fn get_virtual_key(
        &self,
        request: Request<pb::GetVirtualKeyRequest>,
    ) -> Reply<pb::GetVirtualKeyResponse> {
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("project", &req.project),
            ("name", &req.name),
        ])?;
        let key = self
            .store
            .get_virtual_key(&req.organization, &req.project, &req.name)
            .await
            .map_err(store_status)?;
        reply(pb::GetVirtualKeyResponse {
            virtual_key: Some(key.into()),
        })
    }

    async fn list_virtual_keys(
        &self,
        request: Request<pb::ListVirtualKeysRequest>,
    ) -> Reply<pb::ListVirtualKeysResponse> {
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("project", &req.project),
        ])?;
        check(validation::display_name("prefix", &req.prefix))?;
        let keys = self
            .store
            .list_virtual_keys(&req.organization, &req.project, &req.prefix)
            .await
            .map_err(store_status)?;
        reply(pb::ListVirtualKeysResponse {
            virtual_keys: keys.into_iter().map(Into::into).collect(),
        })
    }

    async fn update_virtual_key(
        &self,
        request: Request<pb::UpdateVirtualKeyRequest>,
    ) -> Reply<pb::UpdateVirtualKeyResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("project", &req.project),
            ("name", &req.name),
        ])?;
        let allowed_models = if req.replace_allowed_models {
            model_names("allowed_models", &req.allowed_models)?;
            Some(req.allowed_models)
        } else {
            None
        };
        let patch = store::VirtualKeyPatch {
            allowed_models,
            expires_at_us: req
                .expires_at_us
                .map(|e| expiry("expires_at_us", e))
                .transpose()?,
        };
        let target = format!("{}/{}/{}", req.organization, req.project, req.name);
        let audit = Audit::new(&actor, "virtual_key.update", target);
        let key = self
            .store
            .update_virtual_key(&req.organization, &req.project, &req.name, patch, audit)
            .await
            .map_err(store_status)?;
        reply(pb::UpdateVirtualKeyResponse {
            virtual_key: Some(key.into()),
        })
    }

    async fn revoke_virtual_key(
        &self,
        request: Request<pb::RevokeVirtualKeyRequest>,
    ) -> Reply<pb::RevokeVirtualKeyResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("project", &req.project),
            ("name", &req.name),
        ])?;
        let target = format!("{}/{}/{}", req.organization, req.project, req.name);
        let audit = Audit::new(&actor, "virtual_key.revoke", target);
        let key = self
            .store
            .revoke_virtual_key(&req.organization, &req.project, &req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::RevokeVirtualKeyResponse {
            virtual_key: Some(key.into()),
        })
    }

    async fn delete_virtual_key(
        &self,
        request: Request<pb::DeleteVirtualKeyRequest>,
    ) -> Reply<pb::DeleteVirtualKeyResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[
            ("organization", &req.organization),
            ("project", &req.project),
            ("name", &req.name),
        ])?;
        let target = format!("{}/{}/{}", req.organization, req.project, req.name);
        let audit = Audit::new(&actor, "virtual_key.delete", target);
        self.store
            .delete_virtual_key(&req.organization, &req.project, &req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::DeleteVirtualKeyResponse {})
    }

    // === admin tokens ===

    async fn create_admin_token(
        &self,
        request: Request<pb::CreateAdminTokenRequest>,
    ) -> Reply<pb::CreateAdminTokenResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("name", &req.name)])?;
        let scope = scope_from_proto("scope", req.scope)?;
        let (token, new) = mint_admin_token(&req.name, scope);
        let audit = Audit::new(&actor, "admin_token.create", &req.name).with_detail(format!(
            "scope={} prefix={}",
            scope.as_str(),
            new.prefix
        ));
        let created = self
            .store
            .create_admin_token(new, audit)
            .await
            .map_err(store_status)?;
        reply(pb::CreateAdminTokenResponse {
            admin_token: Some(created.into()),
            token: token.expose().to_owned(),
        })
    }

    async fn list_admin_tokens(
        &self,
        _request: Request<pb::ListAdminTokensRequest>,
    ) -> Reply<pb::ListAdminTokensResponse> {
        let tokens = self.store.list_admin_tokens().await.map_err(store_status)?;
        reply(pb::ListAdminTokensResponse {
            admin_tokens: tokens.into_iter().map(Into::into).collect(),
        })
    }

    async fn revoke_admin_token(
        &self,
        request: Request<pb::RevokeAdminTokenRequest>,
    ) -> Reply<pb::RevokeAdminTokenResponse> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        names(&[("name", &req.name)])?;
        let audit = Audit::new(&actor, "admin_token.revoke", &req.name);
        let token = self
            .store
            .revoke_admin_token(&req.name, audit)
            .await
            .map_err(store_status)?;
        reply(pb::RevokeAdminTokenResponse {
            admin_token: Some(token.into()),
        })
    }

    // === audit ===

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        let req = request.into_inner();
        for (field, value) in [
            ("actor", &req.actor),
            ("action", &req.action),
            ("target_prefix", &req.target_prefix),
        ] {
            check(validation::display_name(field, value))?;
        }
        let limit = match req.limit {
            0 => DEFAULT_AUDIT_LIMIT,
            n => n.min(MAX_AUDIT_LIMIT),
        };
        let events = self
            .store
            .list_audit_events(store::AuditFilter {
                actor: req.actor,
                action: req.action,
                target_prefix: req.target_prefix,
                limit,
            })
            .await
            .map_err(store_status)?;
        reply(pb::ListAuditEventsResponse {
            events: events.into_iter().map(Into::into).collect(),
        })
    }

    // === fleet ===

    async fn list_proxies(
        &self,
        _request: Request<pb::ListProxiesRequest>,
    ) -> Reply<pb::ListProxiesResponse> {
        let proxies = self.store.list_proxies().await.map_err(store_status)?;
        let config_version = self.store.config_version().await.map_err(store_status)?;
        reply(pb::ListProxiesResponse {
            proxies: proxies.into_iter().map(Into::into).collect(),
            config_version,
        })
    }

    // === vault ===

    async fn get_vault_status(
        &self,
        _request: Request<pb::GetVaultStatusRequest>,
    ) -> Reply<pb::GetVaultStatusResponse> {
        let counts = self
            .store
            .provider_keys_per_master_key_version()
            .await
            .map_err(store_status)?;
        let config_version = self.store.config_version().await.map_err(store_status)?;
        reply(pb::GetVaultStatusResponse {
            active_master_key_version: self.vault.active_version(),
            keys_per_master_key_version: counts.into_iter().collect(),
            config_version,
        })
    }

    async fn rewrap_provider_keys(
        &self,
        request: Request<pb::RewrapProviderKeysRequest>,
    ) -> Reply<pb::RewrapProviderKeysResponse> {
        let actor = actor(&request)?;
        let rewrapped = self
            .vault
            .rewrap_all(self.store.as_ref())
            .await
            .map_err(vault_status)?;
        tracing::info!(%actor, rewrapped, "re-wrapped provider keys on request");
        reply(pb::RewrapProviderKeysResponse { rewrapped })
    }
}

/// A new admin token: the value (shown once) and the record to store.
pub fn mint_admin_token(name: &str, scope: TokenScope) -> (SecretString, store::NewAdminToken) {
    let prefix = match scope {
        TokenScope::DataPlane => "sluice-dp-",
        TokenScope::Admin | TokenScope::ReadOnly => token::ADMIN_TOKEN_PREFIX,
    };
    let minted = token::mint(prefix);
    let new = store::NewAdminToken {
        id: new_id(),
        name: name.to_owned(),
        scope,
        prefix: minted.display_prefix,
        token_hash: minted.hash,
    };
    (minted.value, new)
}
