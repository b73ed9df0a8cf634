//! The audit log.

use super::*;

pub(super) async fn list_audit_events<S: Store>(
    api: &AdminApi<S>,
    request: Request<pb::ListAuditEventsRequest>,
) -> Reply<pb::ListAuditEventsResponse> {
    let organization = tenancy::limited_to(&request).unwrap_or_default().to_owned();
    let req = request.into_inner();
    for (field, value) in [
        ("actor", &req.actor),
        ("action", &req.action),
        ("target_prefix", &req.target_prefix),
    ] {
        check(validation::display_name(field, value))?;
    }
    let limit = match req.limit {
        0 => DEFAULT_AUDIT_LIMIT,
        n => n.min(MAX_AUDIT_LIMIT),
    };
    let events = api
        .store
        .list_audit_events(store::AuditFilter {
            actor: req.actor,
            action: req.action,
            target_prefix: req.target_prefix,
            organization,
            limit,
        })
        .await
        .map_err(store_status)?;
    reply(pb::ListAuditEventsResponse {
        events: events.into_iter().map(Into::into).collect(),
    })
}
