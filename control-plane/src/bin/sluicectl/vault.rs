//! `sluicectl vault`: master key versions and re-wrapping.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum VaultCommand {
    Status,
    /// Re-wrap every provider key under the newest master key now.
    Rewrap,
}

pub(crate) async fn vault(client: &mut Client, command: VaultCommand) -> anyhow::Result<Listing> {
    Ok(match command {
        VaultCommand::Status => {
            let status = client
                .get_vault_status(pb::GetVaultStatusRequest {})
                .await?
                .into_inner();
            let mut rows: Vec<Vec<Value>> = status
                .keys_per_master_key_version
                .into_iter()
                .map(|(version, keys)| {
                    vec![
                        json!(version),
                        json!(keys),
                        json!(version == status.active_master_key_version),
                    ]
                })
                .collect();
            rows.sort_by_key(|row| row[0].as_u64());
            if rows.is_empty() {
                rows.push(vec![
                    json!(status.active_master_key_version),
                    json!(0),
                    json!(true),
                ]);
            }
            Listing::many(&["master_key_version", "provider_keys", "active"], rows)
        }
        VaultCommand::Rewrap => {
            let response = client
                .rewrap_provider_keys(pb::RewrapProviderKeysRequest {})
                .await?;
            Listing::one(&["rewrapped"], vec![json!(response.into_inner().rewrapped)])
        }
    })
}
