//! Tokens limited to one organisation. Each admin RPC's request says what it reaches: the
//! whole deployment (organisations, tokens, the vault, the fleet), one organisation (named in
//! the request, or first in a budget's or rate limit's target), or — for the audit log — what
//! the handler filters. A token of another organisation gets the answer a missing
//! organisation gets, whether or not it exists.

use sluice_proto::admin::v1 as pb;
use tonic::{Request, Status};

use super::auth::Principal;

pub(super) enum Reach<'a> {
    /// Global tokens only.
    Everything,
    /// This organisation's resources.
    Organization(&'a str),
    /// Every organisation's rows, which the handler narrows to the caller's own (the audit
    /// log), or nothing beyond the caller itself (`GetCaller`).
    Narrowed,
}

pub(super) trait Reaches {
    fn reach(&self) -> Reach<'_>;
}

macro_rules! reaching {
    (everything: $($message:ident),+ $(,)?) => {
        $(impl Reaches for pb::$message {
            fn reach(&self) -> Reach<'_> {
                Reach::Everything
            }
        })+
    };
    (organization: $($message:ident),+ $(,)?) => {
        $(impl Reaches for pb::$message {
            fn reach(&self) -> Reach<'_> {
                Reach::Organization(&self.organization)
            }
        })+
    };
    (target: $($message:ident),+ $(,)?) => {
        $(impl Reaches for pb::$message {
            fn reach(&self) -> Reach<'_> {
                Reach::Organization(
                    self.target.as_ref().map_or("", |target| target.organization.as_str()),
                )
            }
        })+
    };
}

reaching!(everything:
    CreateOrganizationRequest, GetOrganizationRequest, ListOrganizationsRequest,
    UpdateOrganizationRequest, DeleteOrganizationRequest,
    CreateAdminTokenRequest, ListAdminTokensRequest, RevokeAdminTokenRequest,
    GetVaultStatusRequest, RewrapProviderKeysRequest, ListProxiesRequest,
);
reaching!(organization:
    CreateProjectRequest, GetProjectRequest, ListProjectsRequest, UpdateProjectRequest,
    DeleteProjectRequest, SetProjectPostureRequest, GetProjectReadinessRequest,
    CreateProviderRequest, GetProviderRequest, ListProvidersRequest, UpdateProviderRequest,
    DeleteProviderRequest,
    CreateProviderKeyRequest, GetProviderKeyRequest, ListProviderKeysRequest,
    RotateProviderKeyRequest, RevokeProviderKeyRequest, DeleteProviderKeyRequest,
    TestProviderKeyRequest,
    CreateModelRequest, GetModelRequest, ListModelsRequest, UpdateModelRequest,
    DeleteModelRequest, SyncModelPricingRequest,
    QueryUsageRequest, ListRunCallsRequest, ListBudgetsRequest, ListRateLimitsRequest,
    CreateVirtualKeyRequest, GetVirtualKeyRequest, ListVirtualKeysRequest,
    UpdateVirtualKeyRequest, RevokeVirtualKeyRequest, DeleteVirtualKeyRequest,
);
reaching!(target:
    CreateBudgetRequest, UpdateBudgetRequest, DeleteBudgetRequest,
    CreateRateLimitRequest, UpdateRateLimitRequest, DeleteRateLimitRequest,
);

/// Every admin-side token may ask who it is.
impl Reaches for pb::GetCallerRequest {
    fn reach(&self) -> Reach<'_> {
        Reach::Narrowed
    }
}

impl Reaches for pb::ListAuditEventsRequest {
    fn reach(&self) -> Reach<'_> {
        Reach::Narrowed
    }
}

/// The organisation the caller is limited to, if any.
pub(super) fn limited_to<T>(request: &Request<T>) -> Option<&str> {
    request
        .extensions()
        .get::<Principal>()
        .and_then(|principal| principal.organization.as_deref())
}

/// Refuses a request its token may not make; see the module docs.
pub(super) fn check<T: Reaches>(request: &Request<T>, method: &str) -> Result<(), Status> {
    let Some(principal) = request.extensions().get::<Principal>() else {
        return Err(Status::unauthenticated("missing admin token"));
    };
    let Some(own) = principal.organization.as_deref() else {
        return Ok(());
    };
    match request.get_ref().reach() {
        Reach::Everything => Err(Status::permission_denied(format!(
            "token '{}' is limited to organisation '{own}'; {method} needs a global token",
            principal.token_name
        ))),
        Reach::Organization(named) if named == own => Ok(()),
        Reach::Organization(named) => Err(not_found(named)),
        Reach::Narrowed => Ok(()),
    }
}

/// What a missing organisation answers, the same for one that exists elsewhere.
fn not_found(named: &str) -> Status {
    Status::not_found(format!("organization '{named}' not found"))
}
