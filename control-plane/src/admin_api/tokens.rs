//! Admin and data-plane tokens.

use super::*;

pub(super) async fn create_admin_token<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::CreateAdminTokenRequest>,
) -> Reply<pb::CreateAdminTokenResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("name", &req.name)])?;
    let scope = scope_from_proto("scope", req.scope)?;
    let (token, mut new) = mint_admin_token(&req.name, scope);
    match (scope.is_per_organization(), req.organization.is_empty()) {
        (true, true) => {
            return Err(Status::invalid_argument(
                "organization: required for the org-admin and org-read-only scopes",
            ));
        }
        (false, false) => {
            return Err(Status::invalid_argument(
                "organization: only tokens of the org-admin and org-read-only scopes name one",
            ));
        }
        (true, false) => {
            names(&[("organization", &req.organization)])?;
            let org = api
                .store
                .get_organization(&req.organization)
                .await
                .map_err(store_status)?;
            new.organization_id = Some(org.id);
        }
        (false, true) => {}
    }
    let limited = if req.organization.is_empty() {
        String::new()
    } else {
        format!(" organization={}", req.organization)
    };
    let audit = Audit::new(&actor, "admin_token.create", &req.name).with_detail(format!(
        "scope={} prefix={}{limited}",
        scope.as_str(),
        new.prefix
    ));
    let created = api
        .store
        .create_admin_token(new, audit)
        .await
        .map_err(store_status)?;
    reply(pb::CreateAdminTokenResponse {
        admin_token: Some(created.into()),
        token: token.expose().to_owned(),
    })
}

pub(super) async fn list_admin_tokens<S: Store>(
    api: &AdminApi<S>,
    _request: Request<pb::ListAdminTokensRequest>,
) -> Reply<pb::ListAdminTokensResponse> {
    let tokens = api.store.list_admin_tokens().await.map_err(store_status)?;
    reply(pb::ListAdminTokensResponse {
        admin_tokens: tokens.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn revoke_admin_token<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::RevokeAdminTokenRequest>,
) -> Reply<pb::RevokeAdminTokenResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("name", &req.name)])?;
    let audit = Audit::new(&actor, "admin_token.revoke", &req.name);
    let token = api
        .store
        .revoke_admin_token(&req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::RevokeAdminTokenResponse {
        admin_token: Some(token.into()),
    })
}
