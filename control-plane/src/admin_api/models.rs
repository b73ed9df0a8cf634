//! Models and their deployments, priced from the catalog or by the operator.

use super::*;

pub(super) async fn create_model<S: Store>(
    api: &AdminApi<S>,
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
    let model = api
        .store
        .create_model(&req.organization, new, audit)
        .await
        .map_err(store_status)?;
    reply(pb::CreateModelResponse {
        model: Some(model.into()),
    })
}

pub(super) async fn get_model<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::GetModelRequest>,
) -> Reply<pb::GetModelResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let model = api
        .store
        .get_model(&req.organization, &req.name)
        .await
        .map_err(store_status)?;
    reply(pb::GetModelResponse {
        model: Some(model.into()),
    })
}

pub(super) async fn list_models<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListModelsRequest>,
) -> Reply<pb::ListModelsResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    let models = api
        .store
        .list_models(&req.organization)
        .await
        .map_err(store_status)?;
    reply(pb::ListModelsResponse {
        models: models.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn update_model<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::UpdateModelRequest>,
) -> Reply<pb::UpdateModelResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let touches_settings =
        req.retry.is_some() || req.reset_retry || req.timeouts.is_some() || req.reset_timeouts;
    let (retry, timeouts) = if touches_settings {
        let current = api
            .store
            .get_model(&req.organization, &req.name)
            .await
            .map_err(store_status)?;
        (
            updated_settings(current.retry, req.retry, req.reset_retry)?,
            updated_settings(current.timeouts, req.timeouts, req.reset_timeouts)?,
        )
    } else {
        (None, None)
    };
    let patch = store::ModelPatch {
        deployments: if req.replace_deployments {
            Some(deployments(req.deployments)?)
        } else {
            None
        },
        input_price_micros_per_mtok: req
            .input_price_micros_per_mtok
            .map(|p| non_negative("input_price_micros_per_mtok", p))
            .transpose()?,
        output_price_micros_per_mtok: req
            .output_price_micros_per_mtok
            .map(|p| non_negative("output_price_micros_per_mtok", p))
            .transpose()?,
        context_window: req.context_window,
        cached_input_price_micros_per_mtok: req
            .cached_input_price_micros_per_mtok
            .map(|p| non_negative("cached_input_price_micros_per_mtok", p).map(Some))
            .transpose()?,
        price_source: None,
        catalog_id: None,
        retry,
        timeouts,
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
        let current = api
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
            retry: patch.retry,
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
    let model = api
        .store
        .update_model(&req.organization, &req.name, patch, audit)
        .await
        .map_err(store_status)?;
    reply(pb::UpdateModelResponse {
        model: Some(model.into()),
    })
}

pub(super) async fn sync_model_pricing<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::SyncModelPricingRequest>,
) -> Reply<pb::SyncModelPricingResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    let catalog = model_pricing::catalog(&req.catalog_toml)?;
    let models = api
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
            api.store
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
