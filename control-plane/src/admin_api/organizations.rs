//! Organisations: create, read, list, update, delete.

use super::*;

pub(super) async fn create_organization<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::CreateOrganizationRequest>,
) -> Reply<pb::CreateOrganizationResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("name", &req.name)])?;
    check(validation::display_name("display_name", &req.display_name))?;
    let audit = Audit::new(&actor, "organization.create", &req.name);
    let org = api
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

pub(super) async fn get_organization<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::GetOrganizationRequest>,
) -> Reply<pb::GetOrganizationResponse> {
    let req = request.into_inner();
    names(&[("name", &req.name)])?;
    let org = api
        .store
        .get_organization(&req.name)
        .await
        .map_err(store_status)?;
    reply(pb::GetOrganizationResponse {
        organization: Some(org.into()),
    })
}

pub(super) async fn list_organizations<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListOrganizationsRequest>,
) -> Reply<pb::ListOrganizationsResponse> {
    let req = request.into_inner();
    check(validation::display_name("name_prefix", &req.name_prefix))?;
    let orgs = api
        .store
        .list_organizations(&req.name_prefix)
        .await
        .map_err(store_status)?;
    reply(pb::ListOrganizationsResponse {
        organizations: orgs.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn update_organization<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::UpdateOrganizationRequest>,
) -> Reply<pb::UpdateOrganizationResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("name", &req.name)])?;
    if let Some(display) = &req.display_name {
        check(validation::display_name("display_name", display))?;
    }
    let audit = Audit::new(&actor, "organization.update", &req.name);
    let org = api
        .store
        .update_organization(&req.name, req.display_name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::UpdateOrganizationResponse {
        organization: Some(org.into()),
    })
}

pub(super) async fn delete_organization<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::DeleteOrganizationRequest>,
) -> Reply<pb::DeleteOrganizationResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("name", &req.name)])?;
    let audit = Audit::new(&actor, "organization.delete", &req.name);
    api.store
        .delete_organization(&req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteOrganizationResponse {})
}
