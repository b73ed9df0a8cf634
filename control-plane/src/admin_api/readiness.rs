//! Execution readiness: what stands between a project and LIVE, each with the move that
//! removes it. `SetProjectPosture` refuses LIVE with the same list `GetProjectReadiness`
//! shows, so the console's blockers and the API's refusal never disagree.

use sluice_proto::admin::v1 as pb;
use tonic::{Request, Status};

use super::{AdminApi, Reply, names, reply, store_status};
use crate::store::{KeyHealth, KeyState, ProviderKind, Store, StoreError};

pub(super) async fn get_project_readiness<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::GetProjectReadinessRequest>,
) -> Reply<pb::GetProjectReadinessResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let project = api
        .store
        .get_project(&req.organization, &req.name)
        .await
        .map_err(store_status)?;
    let (models, blockers) = blockers(api, &req.organization, &req.name).await?;
    reply(pb::GetProjectReadinessResponse {
        posture: super::convert::posture_to_proto(project.posture) as i32,
        blockers,
        models,
    })
}

/// The refusal of LIVE, when anything blocks it.
pub(super) async fn check_ready_for_live<S: Store>(
    api: &AdminApi<S>,
    org: &str,
    name: &str,
) -> Result<(), Status> {
    let (_, blockers) = blockers(api, org, name).await?;
    if blockers.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = blockers
        .iter()
        .map(|blocker| format!("{} ({})", blocker.message, blocker.fix))
        .collect();
    Err(Status::failed_precondition(format!(
        "project '{org}/{name}' cannot go LIVE: {}",
        reasons.join("; ")
    )))
}

/// The models the project may use, and what blocks each from serving LIVE traffic.
async fn blockers<S: Store>(
    api: &AdminApi<S>,
    org: &str,
    name: &str,
) -> Result<(Vec<String>, Vec<pb::ReadinessBlocker>), Status> {
    let readiness = api
        .store
        .project_model_readiness(org, name, None)
        .await
        .map_err(store_status)?;
    let models: Vec<String> = readiness.iter().map(|model| model.model.clone()).collect();
    if readiness.is_empty() {
        return Ok((
            models,
            vec![pb::ReadinessBlocker {
                code: "no_models".into(),
                model: String::new(),
                message: format!("project '{org}/{name}' has no models to serve"),
                fix: "set the project's default model (Projects), or create a virtual key".into(),
            }],
        ));
    }
    let mut blockers = Vec::new();
    for model in readiness.iter().filter(|model| model.usable_keys == 0) {
        blockers.push(why_unusable(api, org, &model.model).await?);
    }
    Ok((models, blockers))
}

/// Why a model has no usable route, from its deployments' providers and keys.
async fn why_unusable<S: Store>(
    api: &AdminApi<S>,
    org: &str,
    model: &str,
) -> Result<pb::ReadinessBlocker, Status> {
    let blocker = |code: &str, message: String, fix: String| pb::ReadinessBlocker {
        code: code.into(),
        model: model.into(),
        message,
        fix,
    };
    let found = match api.store.get_model(org, model).await {
        Ok(found) => found,
        Err(StoreError::NotFound { .. }) => {
            return Ok(blocker(
                "unknown_model",
                format!("model '{model}' does not exist"),
                format!("create a model named '{model}' (Models), or pick another default"),
            ));
        }
        Err(error) => return Err(store_status(error)),
    };
    let Some(first) = found.deployments.first() else {
        return Ok(blocker(
            "no_deployment",
            format!("model '{model}' has no deployment"),
            format!("give '{model}' a deployment on a provider (Models)"),
        ));
    };
    let mut inactive = Vec::new();
    let mut refused = Vec::new();
    for deployment in &found.deployments {
        let provider = api
            .store
            .get_provider(org, &deployment.provider)
            .await
            .map_err(store_status)?;
        if !provider.active {
            inactive.push(provider.name);
            continue;
        }
        let keys = api
            .store
            .list_provider_keys(org, &provider.name)
            .await
            .map_err(store_status)?;
        let live_keys: Vec<_> = keys
            .iter()
            .filter(|key| key.state != KeyState::Revoked)
            .collect();
        if !live_keys.is_empty()
            && !matches!(provider.kind, ProviderKind::Vllm | ProviderKind::Custom)
        {
            refused.extend(live_keys.iter().map(|key| {
                let health = match key.health {
                    KeyHealth::NoModelAccess => "has no access to the model",
                    _ => "was refused by the provider",
                };
                format!("{}/{} {health}", provider.name, key.name)
            }));
        }
    }
    if !refused.is_empty() {
        return Ok(blocker(
            "key_refused",
            format!(
                "every key serving '{model}' is refused: {}",
                refused.join(", ")
            ),
            "fix the key at the provider, then rotate it to the corrected value and test it \
             (Providers)"
                .into(),
        ));
    }
    if inactive.len() == found.deployments.len() {
        return Ok(blocker(
            "provider_inactive",
            format!(
                "every provider serving '{model}' is inactive: {}",
                inactive.join(", ")
            ),
            "activate one of them, or deploy the model on an active provider".into(),
        ));
    }
    Ok(blocker(
        "no_usable_key",
        format!("no usable provider key serves model '{model}'"),
        format!(
            "add a key to provider '{}' (Providers; sluicectl provider-key add {org}/{}/NAME)",
            first.provider, first.provider
        ),
    ))
}
