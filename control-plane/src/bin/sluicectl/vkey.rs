//! `sluicectl vkey`: virtual keys, shown once.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum VkeyCommand {
    /// Create a key; it is printed once and never again.
    Create {
        /// ORG/PROJECT/NAME
        path: String,
        /// Comma-separated model names; empty: every model of the organization.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Expire after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    Get {
        path: String,
    },
    /// ORG/PROJECT.
    List {
        path: String,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    Update {
        path: String,
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    Revoke {
        path: String,
    },
    Delete {
        path: String,
    },
}

pub(crate) const VKEY_COLUMNS: &[&str] = &[
    "organization",
    "project",
    "name",
    "prefix",
    "allowed_models",
    "expires_at",
    "revoked_at",
];

pub(crate) fn vkey_row(v: pb::VirtualKey) -> Vec<Value> {
    vec![
        json!(v.organization),
        json!(v.project),
        json!(v.name),
        json!(v.prefix),
        json!(v.allowed_models),
        time(v.expires_at_us),
        time(v.revoked_at_us),
    ]
}

pub(crate) async fn vkey(
    client: &mut Client,
    command: VkeyCommand,
    format: Format,
) -> anyhow::Result<String> {
    const SHAPE: &str = "ORG/PROJECT/NAME";
    let listing = match command {
        VkeyCommand::Create {
            path: p,
            models,
            expires_in_days,
        } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .create_virtual_key(pb::CreateVirtualKeyRequest {
                    organization,
                    project,
                    name,
                    allowed_models: models.into_iter().filter(|m| !m.is_empty()).collect(),
                    expires_at_us: expires_in_days.map(days_from_now_us).unwrap_or(0),
                })
                .await?
                .into_inner();
            let key = SecretString::new(response.key.clone());
            return Ok(shown_once(
                "key",
                &key,
                VKEY_COLUMNS,
                vkey_row(required(response.virtual_key)?),
                format,
            ));
        }
        VkeyCommand::Get { path: p } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .get_virtual_key(pb::GetVirtualKeyRequest {
                    organization,
                    project,
                    name,
                })
                .await?;
            Listing::one(
                VKEY_COLUMNS,
                vkey_row(required(response.into_inner().virtual_key)?),
            )
        }
        VkeyCommand::List { path: p, prefix } => {
            let [organization, project] = path::<2>(&p, "ORG/PROJECT")?;
            let response = client
                .list_virtual_keys(pb::ListVirtualKeysRequest {
                    organization,
                    project,
                    prefix,
                })
                .await?;
            Listing::many(
                VKEY_COLUMNS,
                response
                    .into_inner()
                    .virtual_keys
                    .into_iter()
                    .map(vkey_row)
                    .collect(),
            )
        }
        VkeyCommand::Update {
            path: p,
            models,
            expires_in_days,
        } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .update_virtual_key(pb::UpdateVirtualKeyRequest {
                    organization,
                    project,
                    name,
                    replace_allowed_models: models.is_some(),
                    allowed_models: models
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|m| !m.is_empty())
                        .collect(),
                    expires_at_us: expires_in_days.map(days_from_now_us),
                })
                .await?;
            Listing::one(
                VKEY_COLUMNS,
                vkey_row(required(response.into_inner().virtual_key)?),
            )
        }
        VkeyCommand::Revoke { path: p } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .revoke_virtual_key(pb::RevokeVirtualKeyRequest {
                    organization,
                    project,
                    name,
                })
                .await?;
            Listing::one(
                VKEY_COLUMNS,
                vkey_row(required(response.into_inner().virtual_key)?),
            )
        }
        VkeyCommand::Delete { path: p } => {
            let [organization, project, name] = path::<3>(&p, SHAPE)?;
            client
                .delete_virtual_key(pb::DeleteVirtualKeyRequest {
                    organization,
                    project,
                    name,
                })
                .await?;
            deleted("virtual key", &p)
        }
    };
    Ok(listing.render(format))
}
