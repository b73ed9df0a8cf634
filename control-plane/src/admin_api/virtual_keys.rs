//! Virtual keys: minted once, stored as hashes.

use super::*;

pub(super) async fn create_virtual_key<S: Store>(
    api: &AdminApi<S>,
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
        expires_at_us: non_negative("expires_at_us", req.expires_at_us)?,
    };
    let target = format!("{}/{}/{}", req.organization, req.project, req.name);
    let audit = Audit::new(&actor, "virtual_key.create", target)
        .with_detail(format!("prefix={}", minted.display_prefix));
    let key = api
        .store
        .create_virtual_key(&req.organization, &req.project, new, audit)
        .await
        .map_err(store_status)?;
    reply(pb::CreateVirtualKeyResponse {
        virtual_key: Some(key.into()),
        key: minted.value.expose().to_owned(),
    })
}

pub(super) async fn get_virtual_key<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::GetVirtualKeyRequest>,
) -> Reply<pb::GetVirtualKeyResponse> {
    let req = request.into_inner();
    names(&[
        ("organization", &req.organization),
        ("project", &req.project),
        ("name", &req.name),
    ])?;
    let key = api
        .store
        .get_virtual_key(&req.organization, &req.project, &req.name)
        .await
        .map_err(store_status)?;
    reply(pb::GetVirtualKeyResponse {
        virtual_key: Some(key.into()),
    })
}

pub(super) async fn list_virtual_keys<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListVirtualKeysRequest>,
) -> Reply<pb::ListVirtualKeysResponse> {
    let req = request.into_inner();
    names(&[
        ("organization", &req.organization),
        ("project", &req.project),
    ])?;
    check(validation::display_name("prefix", &req.prefix))?;
    let keys = api
        .store
        .list_virtual_keys(&req.organization, &req.project, &req.prefix)
        .await
        .map_err(store_status)?;
    reply(pb::ListVirtualKeysResponse {
        virtual_keys: keys.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn update_virtual_key<S: Store>(
    api: &AdminApi<S>,
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
            .map(|e| non_negative("expires_at_us", e))
            .transpose()?,
    };
    let target = format!("{}/{}/{}", req.organization, req.project, req.name);
    let audit = Audit::new(&actor, "virtual_key.update", target);
    let key = api
        .store
        .update_virtual_key(&req.organization, &req.project, &req.name, patch, audit)
        .await
        .map_err(store_status)?;
    reply(pb::UpdateVirtualKeyResponse {
        virtual_key: Some(key.into()),
    })
}

pub(super) async fn revoke_virtual_key<S: Store>(
    api: &AdminApi<S>,
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
    let key = api
        .store
        .revoke_virtual_key(&req.organization, &req.project, &req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::RevokeVirtualKeyResponse {
        virtual_key: Some(key.into()),
    })
}

pub(super) async fn delete_virtual_key<S: Store>(
    api: &AdminApi<S>,
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
    api.store
        .delete_virtual_key(&req.organization, &req.project, &req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteVirtualKeyResponse {})
}
