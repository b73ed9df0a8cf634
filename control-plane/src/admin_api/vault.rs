//! The vault: master key versions and re-wrapping.

use super::*;

pub(super) async fn get_vault_status<S: Store>(
    api: &AdminApi<S>,
    _request: Request<pb::GetVaultStatusRequest>,
) -> Reply<pb::GetVaultStatusResponse> {
    let counts = api
        .store
        .provider_keys_per_master_key_version()
        .await
        .map_err(store_status)?;
    let config_version = api.store.config_version().await.map_err(store_status)?;
    reply(pb::GetVaultStatusResponse {
        active_master_key_version: api.vault.active_version(),
        keys_per_master_key_version: counts.into_iter().collect(),
        config_version,
    })
}

pub(super) async fn rewrap_provider_keys<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::RewrapProviderKeysRequest>,
) -> Reply<pb::RewrapProviderKeysResponse> {
    let actor = actor(&request)?;
    let rewrapped = api
        .vault
        .rewrap_all(api.store.as_ref())
        .await
        .map_err(vault_status)?;
    tracing::info!(%actor, rewrapped, "re-wrapped provider keys on request");
    reply(pb::RewrapProviderKeysResponse { rewrapped })
}
