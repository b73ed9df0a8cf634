//! `sluicectl fleet`: each proxy, the config version it runs, and what it leaves out of its
//! attempts (deployments ejected, keys asked to wait).

use crate::*;

pub(crate) const FLEET_COLUMNS: &[&str] = &[
    "proxy_id",
    "connected",
    "acked_version",
    "nacked_version",
    "nack_reason",
    "last_seen_at",
    "address",
    "left_out",
];

pub(crate) async fn fleet(client: &mut Client, format: Format) -> anyhow::Result<String> {
    let response = client
        .list_proxies(pb::ListProxiesRequest {})
        .await?
        .into_inner();
    let rows = response
        .proxies
        .into_iter()
        .map(|p| {
            vec![
                json!(p.proxy_id),
                json!(p.connected),
                json!(p.acked_version),
                json!(p.nacked_version),
                json!(p.nack_reason),
                time(p.last_seen_at_us),
                json!(p.address),
                json!(p.left_out),
            ]
        })
        .collect();
    let listing = Listing::many(FLEET_COLUMNS, rows);
    Ok(match format {
        Format::Table => format!(
            "config version {}\n\n{}",
            response.config_version,
            listing.render(format)
        ),
        Format::Json => {
            let proxies: Value = serde_json::from_str(&listing.render(format))?;
            serde_json::to_string_pretty(
                &json!({"config_version": response.config_version, "proxies": proxies}),
            )?
        }
    })
}
