//! `sluicectl org`: organisations.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum OrgCommand {
    Create {
        name: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    Get {
        name: String,
    },
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    Update {
        name: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    Delete {
        name: String,
    },
}

pub(crate) const ORG_COLUMNS: &[&str] = &["name", "display_name", "created_at", "id"];

pub(crate) fn org_row(o: pb::Organization) -> Vec<Value> {
    vec![
        json!(o.name),
        json!(o.display_name),
        time(o.created_at_us),
        json!(o.id),
    ]
}

pub(crate) async fn org(client: &mut Client, command: OrgCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        OrgCommand::Create { name, display_name } => {
            let response = client
                .create_organization(pb::CreateOrganizationRequest { name, display_name })
                .await?;
            Listing::one(
                ORG_COLUMNS,
                org_row(required(response.into_inner().organization)?),
            )
        }
        OrgCommand::Get { name } => {
            let response = client
                .get_organization(pb::GetOrganizationRequest { name })
                .await?;
            Listing::one(
                ORG_COLUMNS,
                org_row(required(response.into_inner().organization)?),
            )
        }
        OrgCommand::List { prefix } => {
            let response = client
                .list_organizations(pb::ListOrganizationsRequest {
                    name_prefix: prefix,
                })
                .await?;
            Listing::many(
                ORG_COLUMNS,
                response
                    .into_inner()
                    .organizations
                    .into_iter()
                    .map(org_row)
                    .collect(),
            )
        }
        OrgCommand::Update { name, display_name } => {
            let response = client
                .update_organization(pb::UpdateOrganizationRequest { name, display_name })
                .await?;
            Listing::one(
                ORG_COLUMNS,
                org_row(required(response.into_inner().organization)?),
            )
        }
        OrgCommand::Delete { name } => {
            client
                .delete_organization(pb::DeleteOrganizationRequest { name: name.clone() })
                .await?;
            deleted("organization", &name)
        }
    })
}
