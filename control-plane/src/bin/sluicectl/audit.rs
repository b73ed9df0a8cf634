//! `sluicectl audit`: the audit log.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    List {
        #[arg(long, default_value = "")]
        actor: String,
        #[arg(long, default_value = "")]
        action: String,
        /// Keep events whose target starts with this.
        #[arg(long, default_value = "")]
        target: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

pub(crate) const AUDIT_COLUMNS: &[&str] = &["at", "actor", "action", "target", "detail"];

pub(crate) fn audit_row(e: pb::AuditEvent) -> Vec<Value> {
    vec![
        time(e.at_us),
        json!(e.actor),
        json!(e.action),
        json!(e.target),
        json!(e.detail),
    ]
}

pub(crate) async fn audit(client: &mut Client, command: AuditCommand) -> anyhow::Result<Listing> {
    let AuditCommand::List {
        actor,
        action,
        target,
        limit,
    } = command;
    let response = client
        .list_audit_events(pb::ListAuditEventsRequest {
            actor,
            action,
            target_prefix: target,
            limit,
        })
        .await?;
    Ok(Listing::many(
        AUDIT_COLUMNS,
        response
            .into_inner()
            .events
            .into_iter()
            .map(audit_row)
            .collect(),
    ))
}
