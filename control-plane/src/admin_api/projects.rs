//! Projects, and their posture: LIVE only when every model they may use has a usable key.

use super::*;

pub(super) async fn create_project<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::CreateProjectRequest>,
) -> Reply<pb::CreateProjectResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    check(validation::display_name("display_name", &req.display_name))?;
    if !req.default_model.is_empty() {
        names(&[("default_model", &req.default_model)])?;
    }
    let capture = checked(validation::content_capture_bytes(
        "content_capture_bytes",
        req.content_capture_bytes,
    ))?;
    let target = format!("{}/{}", req.organization, req.name);
    let audit = Audit::new(&actor, "project.create", target).with_detail(format!(
        "posture=MOCK content_capture_bytes={capture} metrics_by_key={}",
        req.metrics_by_key
    ));
    let project = api
        .store
        .create_project(
            &req.organization,
            store::NewProject {
                name: req.name,
                display_name: req.display_name,
                default_model: req.default_model,
                content_capture_bytes: capture,
                metrics_by_key: req.metrics_by_key,
            },
            audit,
        )
        .await
        .map_err(store_status)?;
    reply(pb::CreateProjectResponse {
        project: Some(project.into()),
    })
}

pub(super) async fn get_project<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::GetProjectRequest>,
) -> Reply<pb::GetProjectResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let project = api
        .store
        .get_project(&req.organization, &req.name)
        .await
        .map_err(store_status)?;
    reply(pb::GetProjectResponse {
        project: Some(project.into()),
    })
}

pub(super) async fn list_projects<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListProjectsRequest>,
) -> Reply<pb::ListProjectsResponse> {
    let req = request.into_inner();
    names(&[("organization", &req.organization)])?;
    let projects = api
        .store
        .list_projects(&req.organization)
        .await
        .map_err(store_status)?;
    reply(pb::ListProjectsResponse {
        projects: projects.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn update_project<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::UpdateProjectRequest>,
) -> Reply<pb::UpdateProjectResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    if let Some(display) = &req.display_name {
        check(validation::display_name("display_name", display))?;
    }
    if let Some(model) = req.default_model.as_deref().filter(|m| !m.is_empty()) {
        names(&[("default_model", model)])?;
    }
    let capture = req
        .content_capture_bytes
        .map(|bytes| {
            checked(validation::content_capture_bytes(
                "content_capture_bytes",
                bytes,
            ))
        })
        .transpose()?;
    let target = format!("{}/{}", req.organization, req.name);
    // Recording prompts is a privacy decision, and series per key a cost: the audit trail
    // says who turned them on.
    let detail: Vec<String> = [
        capture.map(|bytes| format!("content_capture_bytes={bytes}")),
        req.metrics_by_key.map(|on| format!("metrics_by_key={on}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let audit = if detail.is_empty() {
        Audit::new(&actor, "project.update", target)
    } else {
        Audit::new(&actor, "project.update", target).with_detail(detail.join(" "))
    };
    let patch = store::ProjectPatch {
        display_name: req.display_name,
        default_model: req.default_model,
        posture: None,
        content_capture_bytes: capture,
        metrics_by_key: req.metrics_by_key,
    };
    let project = api
        .store
        .update_project(&req.organization, &req.name, patch, audit)
        .await
        .map_err(store_status)?;
    reply(pb::UpdateProjectResponse {
        project: Some(project.into()),
    })
}

pub(super) async fn delete_project<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::DeleteProjectRequest>,
) -> Reply<pb::DeleteProjectResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let audit = Audit::new(
        &actor,
        "project.delete",
        format!("{}/{}", req.organization, req.name),
    );
    api.store
        .delete_project(&req.organization, &req.name, audit)
        .await
        .map_err(store_status)?;
    reply(pb::DeleteProjectResponse {})
}

pub(super) async fn set_project_posture<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::SetProjectPostureRequest>,
) -> Reply<pb::SetProjectPostureResponse> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    names(&[("organization", &req.organization), ("name", &req.name)])?;
    let posture = posture_from_proto("posture", req.posture)?;
    if posture == Posture::Live {
        super::readiness::check_ready_for_live(api, &req.organization, &req.name).await?;
    }
    let target = format!("{}/{}", req.organization, req.name);
    let audit = Audit::new(&actor, "project.set_posture", target)
        .with_detail(format!("posture={}", posture.as_str()));
    let patch = store::ProjectPatch {
        posture: Some(posture),
        ..Default::default()
    };
    let project = api
        .store
        .update_project(&req.organization, &req.name, patch, audit)
        .await
        .map_err(store_status)?;
    reply(pb::SetProjectPostureResponse {
        project: Some(project.into()),
    })
}
