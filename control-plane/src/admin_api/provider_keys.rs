//! Provider keys: sealed by the vault on the way in, never shown again; rotation, revocation (guarded for LIVE projects), and the key check.

use super::*;

pub(super) async fn create_provider_key<S: Store>(
    api: &AdminApi<S>,
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
    let new = api
        .new_provider_key(&req.organization, &req.provider, &req.name, &secret)
        .await?;
    let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
    let audit = Audit::new(&actor, "provider_key.create", target)
        .with_detail(format!("fingerprint={}", new.fingerprint));
    let key = api
        .store
        .create_provider_key(&req.organization, &req.provider, new, audit)
        .await
        .map_err(store_status)?;
    reply(pb::CreateProviderKeyResponse {
        provider_key: Some(key.into()),
    })
}

pub(super) async fn get_provider_key<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::GetProviderKeyRequest>,
) -> Reply<pb::GetProviderKeyResponse> {
    let req = request.into_inner();
    names(&[
        ("organization", &req.organization),
        ("provider", &req.provider),
        ("name", &req.name),
    ])?;
    let key = api
        .store
        .get_provider_key(&req.organization, &req.provider, &req.name)
        .await
        .map_err(store_status)?;
    reply(pb::GetProviderKeyResponse {
        provider_key: Some(key.into()),
    })
}

pub(super) async fn list_provider_keys<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListProviderKeysRequest>,
) -> Reply<pb::ListProviderKeysResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    if !req.provider.is_empty() {
        names(&[("provider", &req.provider)])?;
    }
    let keys = api
        .store
        .list_provider_keys(&req.organization, &req.provider)
        .await
        .map_err(store_status)?;
    reply(pb::ListProviderKeysResponse {
        provider_keys: keys.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn rotate_provider_key<S: Store>(
    api: &AdminApi<S>,
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
    let new = api
        .new_provider_key(&req.organization, &req.provider, &req.new_name, &secret)
        .await?;
    let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
    let audit = Audit::new(&actor, "provider_key.rotate", target).with_detail(format!(
        "new_key={} fingerprint={}",
        req.new_name, new.fingerprint
    ));
    let (retiring, active) = api
        .store
        .rotate_provider_key(&req.organization, &req.provider, &req.name, new, audit)
        .await
        .map_err(store_status)?;
    reply(pb::RotateProviderKeyResponse {
        retiring: Some(retiring.into()),
        active: Some(active.into()),
    })
}

pub(super) async fn revoke_provider_key<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::RevokeProviderKeyRequest>,
) -> Reply<pb::RevokeProviderKeyResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[
        ("organization", &req.organization),
        ("provider", &req.provider),
        ("name", &req.name),
    ])?;
    let stranded = api
        .check_key_removal(&req.organization, &req.provider, &req.name, req.force)
        .await?;
    let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
    let mut audit = Audit::new(&actor, "provider_key.revoke", target);
    if let Some(detail) = stranded {
        audit = audit.with_detail(detail);
    }
    let key = api
        .store
        .revoke_provider_key(&req.organization, &req.provider, &req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::RevokeProviderKeyResponse {
        provider_key: Some(key.into()),
    })
}

pub(super) async fn delete_provider_key<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::DeleteProviderKeyRequest>,
) -> Reply<pb::DeleteProviderKeyResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[
        ("organization", &req.organization),
        ("provider", &req.provider),
        ("name", &req.name),
    ])?;
    let stranded = api
        .check_key_removal(&req.organization, &req.provider, &req.name, req.force)
        .await?;
    let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
    let mut audit = Audit::new(&actor, "provider_key.delete", target);
    if let Some(detail) = stranded {
        audit = audit.with_detail(detail);
    }
    api.store
        .delete_provider_key(&req.organization, &req.provider, &req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteProviderKeyResponse {})
}

pub(super) async fn test_provider_key<S: Store>(
    api: &AdminApi<S>,
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
    let provider = api
        .store
        .get_provider(&req.organization, &req.provider)
        .await
        .map_err(store_status)?;
    let sealed = api
        .store
        .sealed_provider_key(&req.organization, &req.provider, &req.name)
        .await
        .map_err(store_status)?;
    let secret = api
        .vault
        .open_provider_key(&sealed.id, &sealed.org_id, &sealed.sealed_secret)
        .map_err(vault_status)?;
    let model = (!req.model.is_empty()).then_some(req.model.as_str());
    let check = api.key_checker.check(&provider, &secret, model).await;
    drop(secret);
    let target = format!("{}/{}/{}", req.organization, req.provider, req.name);
    let audit = Audit::new(&actor, "provider_key.test", target).with_detail(format!(
        "{} (upstream status {})",
        check.health.as_str(),
        check.upstream_status
    ));
    let key = api
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
