//! Providers: where and how an upstream is reached, checked for where a key may go.

use super::*;

pub(super) async fn create_provider<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::CreateProviderRequest>,
) -> Reply<pb::CreateProviderResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let kind = kind_from_proto("type", req.r#type)?;
    api.check_base_url(&req.base_url, req.allow_private_network)
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
    let provider = api
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
                send_trace_context: req.send_trace_context.unwrap_or(true),
                retry: given_settings(req.retry)?,
                timeouts: given_settings(req.timeouts)?,
            },
            audit,
        )
        .await
        .map_err(store_status)?;
    reply(pb::CreateProviderResponse {
        provider: Some(provider.into()),
    })
}

pub(super) async fn get_provider<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::GetProviderRequest>,
) -> Reply<pb::GetProviderResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let provider = api
        .store
        .get_provider(&req.organization, &req.name)
        .await
        .map_err(store_status)?;
    reply(pb::GetProviderResponse {
        provider: Some(provider.into()),
    })
}

pub(super) async fn list_providers<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListProvidersRequest>,
) -> Reply<pb::ListProvidersResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    let providers = api
        .store
        .list_providers(&req.organization)
        .await
        .map_err(store_status)?;
    reply(pb::ListProvidersResponse {
        providers: providers.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn update_provider<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::UpdateProviderRequest>,
) -> Reply<pb::UpdateProviderResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let current = api
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
    api.check_base_url(&url, allow_private).await?;
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
        send_trace_context: req.send_trace_context,
        retry: updated_settings(current.retry, req.retry, req.reset_retry)?,
        timeouts: updated_settings(current.timeouts, req.timeouts, req.reset_timeouts)?,
    };
    let provider = api
        .store
        .update_provider(&req.organization, &req.name, patch, audit)
        .await
        .map_err(store_status)?;
    reply(pb::UpdateProviderResponse {
        provider: Some(provider.into()),
    })
}

pub(super) async fn delete_provider<S: Store>(
    api: &AdminApi<S>,
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
    api.store
        .delete_provider(&req.organization, &req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteProviderResponse {})
}
