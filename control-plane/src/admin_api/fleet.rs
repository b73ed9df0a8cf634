//! The fleet: each proxy and the config version it runs.

use super::*;

pub(super) async fn list_proxies<S: Store>(
    api: &AdminApi<S>,
    _request: Request<pb::ListProxiesRequest>,
) -> Reply<pb::ListProxiesResponse> {
    let proxies = api.store.list_proxies().await.map_err(store_status)?;
    let config_version = api.store.config_version().await.map_err(store_status)?;
    reply(pb::ListProxiesResponse {
        proxies: proxies.into_iter().map(Into::into).collect(),
        config_version,
    })
}
