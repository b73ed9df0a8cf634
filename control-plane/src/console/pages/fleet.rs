//! The fleet: every proxy, the config version it serves against the newest, its last
//! rejection and why, how stale it is, and what it left out of its attempts.

use axum::response::Response;
use sluice_proto::admin::v1 as pb;
use sluice_shared::time::now_us;

use super::super::html::{Markup, html, markup, utc};
use super::super::layout::{self, Section, empty};
use super::super::request::{Failure, Page};

pub async fn page(page: Page) -> Response {
    let content = render(&page).await;
    layout::page(&page, None, Section::Fleet, "Fleet", content)
}

async fn render(page: &Page) -> Result<Markup, Failure> {
    let fleet = page.answer(
        page.admin()
            .list_proxies(page.call(pb::ListProxiesRequest {}))
            .await,
    )?;
    let mut body = markup!(
        "<p>The newest config version is <strong>{}</strong>. A proxy that serves an older one \
         is stale; one that rejected a version (NACK) keeps serving its last good one.</p>",
        fleet.config_version
    );
    if fleet.proxies.is_empty() {
        body.push(&empty(
            "No proxy has connected yet.",
            "Start one with a data-plane token (sluicectl token create NAME --scope data-plane) \
             pointed at this control plane.",
        ));
        return Ok(body);
    }
    let now = now_us();
    let mut rows = Markup::new();
    for proxy in &fleet.proxies {
        let behind = fleet.config_version.saturating_sub(proxy.acked_version);
        let freshness = if !proxy.connected {
            markup!("<span class=\"badge bad\">disconnected</span>")
        } else if behind == 0 {
            markup!("<span class=\"badge good\">current</span>")
        } else {
            markup!(
                "<span class=\"badge warn\">{} version(s) behind</span>",
                behind
            )
        };
        let nack = if proxy.nacked_version == 0 {
            markup!("none")
        } else {
            markup!(
                "version {}: <span class=\"nack-reason\">{}</span>",
                proxy.nacked_version,
                proxy.nack_reason
            )
        };
        let seen_ago_s = (now - proxy.last_seen_at_us).max(0) / 1_000_000;
        let left_out = if proxy.left_out.is_empty() {
            markup!("none")
        } else {
            let mut list = Markup::new();
            for each in &proxy.left_out {
                html!(list, "<li>{}</li>", each);
            }
            markup!("<ul class=\"blockers\">{}</ul>", list)
        };
        html!(
            rows,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td><td>{}</td>\
             <td>{}</td><td>{} <span class=\"meta\">({} s ago)</span></td><td>{}</td></tr>",
            proxy.proxy_id,
            proxy.address,
            proxy.acked_version,
            freshness,
            nack,
            utc(proxy.last_seen_at_us),
            seen_ago_s,
            left_out
        );
    }
    html!(
        body,
        "<div class=\"table-wrap\"><table><thead><tr><th scope=\"col\">Proxy</th>\
         <th scope=\"col\">Address</th><th scope=\"col\" class=\"num\">Serves version</th>\
         <th scope=\"col\">Freshness</th><th scope=\"col\">Last NACK</th>\
         <th scope=\"col\">Last seen</th><th scope=\"col\">Ejected (left out)</th></tr></thead>\
         <tbody>{}</tbody></table></div>",
        rows
    );
    Ok(body)
}
