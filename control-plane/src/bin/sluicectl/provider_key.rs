//! `sluicectl provider-key`: keys added from stdin, shown only by fingerprint; rotation, revocation, the key check.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum ProviderKeyCommand {
    /// Add a key; the secret is read from stdin.
    Add {
        /// ORG/PROVIDER/NAME
        path: String,
    },
    Get {
        path: String,
    },
    /// ORG or ORG/PROVIDER.
    List {
        path: String,
    },
    /// Add a new active key (secret from stdin) and move this one to RETIRING.
    Rotate {
        path: String,
        #[arg(long)]
        new_name: String,
    },
    Revoke {
        path: String,
        /// Even if it is a LIVE project's last usable key for a model (audited).
        #[arg(long)]
        force: bool,
    },
    Delete {
        path: String,
        /// Even if it is a LIVE project's last usable key for a model (audited).
        #[arg(long)]
        force: bool,
    },
    /// Ask the upstream whether the key works (its cheapest authenticated call) and record
    /// the answer as the key's health: valid, invalid_credentials, no_model_access,
    /// unreachable or unexpected.
    Test {
        path: String,
        /// Also check access to this upstream model.
        #[arg(long)]
        model: Option<String>,
    },
}

pub(crate) const PROVIDER_KEY_COLUMNS: &[&str] = &[
    "organization",
    "provider",
    "name",
    "state",
    "last_four",
    "fingerprint",
    "health",
    "created_at",
];

pub(crate) fn provider_key_row(k: pb::ProviderKey) -> Vec<Value> {
    let state = pb::ProviderKeyState::try_from(k.state)
        .map(|s| s.as_str_name())
        .unwrap_or("?");
    let health = pb::ProviderKeyHealth::try_from(k.health)
        .map(|h| h.as_str_name())
        .unwrap_or("?");
    vec![
        json!(k.organization),
        json!(k.provider),
        json!(k.name),
        json!(state.trim_start_matches("PROVIDER_KEY_STATE_")),
        json!(format!("…{}", k.last_four)),
        json!(k.fingerprint),
        json!(health.trim_start_matches("PROVIDER_KEY_HEALTH_")),
        time(k.created_at_us),
    ]
}

pub(crate) async fn provider_key(
    client: &mut Client,
    command: ProviderKeyCommand,
) -> anyhow::Result<Listing> {
    const SHAPE: &str = "ORG/PROVIDER/NAME";
    Ok(match command {
        ProviderKeyCommand::Add { path: p } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let secret = read_secret("provider key")?;
            let response = client
                .create_provider_key(pb::CreateProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    secret: secret.expose().to_owned(),
                })
                .await?;
            Listing::one(
                PROVIDER_KEY_COLUMNS,
                provider_key_row(required(response.into_inner().provider_key)?),
            )
        }
        ProviderKeyCommand::Get { path: p } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .get_provider_key(pb::GetProviderKeyRequest {
                    organization,
                    provider,
                    name,
                })
                .await?;
            Listing::one(
                PROVIDER_KEY_COLUMNS,
                provider_key_row(required(response.into_inner().provider_key)?),
            )
        }
        ProviderKeyCommand::List { path: p } => {
            let (organization, provider) = match p.split_once('/') {
                Some((org, provider)) => (org.to_owned(), provider.to_owned()),
                None => (p.clone(), String::new()),
            };
            let response = client
                .list_provider_keys(pb::ListProviderKeysRequest {
                    organization,
                    provider,
                })
                .await?;
            Listing::many(
                PROVIDER_KEY_COLUMNS,
                response
                    .into_inner()
                    .provider_keys
                    .into_iter()
                    .map(provider_key_row)
                    .collect(),
            )
        }
        ProviderKeyCommand::Rotate { path: p, new_name } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let secret = read_secret("new provider key")?;
            let response = client
                .rotate_provider_key(pb::RotateProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    new_name,
                    new_secret: secret.expose().to_owned(),
                })
                .await?
                .into_inner();
            Listing::many(
                PROVIDER_KEY_COLUMNS,
                vec![
                    provider_key_row(required(response.retiring)?),
                    provider_key_row(required(response.active)?),
                ],
            )
        }
        ProviderKeyCommand::Test { path: p, model } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .test_provider_key(pb::TestProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    model: model.unwrap_or_default(),
                })
                .await?
                .into_inner();
            let health = pb::ProviderKeyHealth::try_from(response.health)
                .map_or("unknown", |h| h.as_str_name())
                .trim_start_matches("PROVIDER_KEY_HEALTH_")
                .to_lowercase();
            Listing::one(
                &["key", "result", "upstream_status", "message"],
                vec![
                    json!(p),
                    json!(health),
                    json!(response.upstream_status),
                    json!(response.message),
                ],
            )
        }
        ProviderKeyCommand::Revoke { path: p, force } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            let response = client
                .revoke_provider_key(pb::RevokeProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    force,
                })
                .await?;
            Listing::one(
                PROVIDER_KEY_COLUMNS,
                provider_key_row(required(response.into_inner().provider_key)?),
            )
        }
        ProviderKeyCommand::Delete { path: p, force } => {
            let [organization, provider, name] = path::<3>(&p, SHAPE)?;
            client
                .delete_provider_key(pb::DeleteProviderKeyRequest {
                    organization,
                    provider,
                    name,
                    force,
                })
                .await?;
            deleted("provider key", &p)
        }
    })
}
