//! Proxies without their control plane: they keep serving the last validated snapshot, a
//! restarted proxy serves from its on-disk copy (provider keys still sealed), and all catch up
//! when the control plane returns. A snapshot a proxy cannot accept is NACKed, the old one keeps
//! serving, and `sluicectl fleet` shows why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_e2e::mock_openai::MockOpenAi;
use sluice_e2e::proxy::{Http, Proxy, ProxyBuilder};
use sluice_e2e::{ControlPlane, ControlPlaneBuilder, contains_bytes, files_under};

const PROVIDER_KEY: &str = "sk-canary-static-stability-77";

/// A LIVE project on the mock upstream; returns (virtual key, data-plane token).
fn seed(cp: &ControlPlane, upstream: &MockOpenAi) -> (String, String) {
    let acme = cp.seed_acme(&upstream.base_url(), Some(PROVIDER_KEY), &[]);
    cp.go_live("acme/web");
    (acme.key, acme.token)
}

async fn answers(http: &Http, proxy: &Proxy, key: &str, model: &str) -> bool {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    matches!(http.post(&proxy.url("/v1/chat/completions"), Some(key), &body).await, Ok(r) if r.status == 200)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_outlive_their_control_plane() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let (key, token) = seed(&cp, &upstream);
    let version = cp.config_version();
    let http = Http::new();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = ProxyBuilder::new(dirs[0].path(), &cp.url(), &token).start();
    let second = ProxyBuilder::new(dirs[1].path(), &cp.url(), &token).start();
    for proxy in [&first, &second] {
        proxy.wait_for_version(&http, version).await;
        assert!(answers(&http, proxy, &key, "gpt-4o-mini").await);
        assert_eq!(
            proxy.metric(&http, "sluice_config_version").await as u64,
            version
        );
        assert_eq!(
            proxy.metric(&http, "sluice_control_plane_connected").await,
            1.0
        );
        assert!(proxy.metric(&http, "sluice_config_age_seconds").await >= 0.0);
        // The allocator's own counters, for allocations per request and heap in use.
        assert!(proxy.metric(&http, "sluice_heap_allocations_total").await > 0.0);
        assert!(proxy.metric(&http, "sluice_heap_allocated_bytes").await > 0.0);
    }

    // The control plane dies.
    let cp_addr = cp.addr.clone();
    drop(cp.stop());
    for proxy in [&first, &second] {
        eventually("the proxy notices the control plane is gone", async || {
            proxy.metric(&http, "sluice_control_plane_connected").await == 0.0
        })
        .await;
        for _ in 0..5 {
            assert!(
                answers(&http, proxy, &key, "gpt-4o-mini").await,
                "a proxy stopped serving without its control plane"
            );
        }
    }

    // A proxy restarted meanwhile serves from its saved snapshot, keys still sealed on disk.
    // The copy on disk follows the version served: it is waited for.
    eventually("the served version is saved", async || {
        second.metric(&http, "sluice_config_saved_version").await as u64 == version
    })
    .await;
    drop(second.kill());
    for (path, bytes) in files_under(dirs[1].path()) {
        assert!(
            !contains_bytes(&bytes, PROVIDER_KEY.as_bytes()),
            "{} holds the plaintext key",
            path.display()
        );
    }
    let second = ProxyBuilder::new(dirs[1].path(), &format!("http://{cp_addr}"), &token).start();
    let ready = http.get(&second.url("/readyz"), None).await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    assert_eq!(ready.json()["config_version"], version);
    assert!(ready.json()["reason"].as_str().unwrap().contains("stale"));
    assert!(
        answers(&http, &second, &key, "gpt-4o-mini").await,
        "the restarted proxy cannot serve from disk"
    );

    // The control plane returns where it was; a change made now reaches both proxies.
    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .env("SLUICE_LISTEN_ADDR", &cp_addr)
        .start();
    cp.ctl(&[
        "model",
        "create",
        "acme/after-outage",
        "--deployment",
        "openai:gpt-4o-mini",
    ])
    .ok();
    let newer = cp.config_version();
    for proxy in [&first, &second] {
        proxy.wait_for_version(&http, newer).await;
        assert!(answers(&http, proxy, &key, "after-outage").await);
        eventually("reconnected", async || {
            proxy.metric(&http, "sluice_control_plane_connected").await == 1.0
        })
        .await;
    }
    let fleet = cp.ctl(&["-o", "json", "fleet"]).json();
    assert!(
        fleet["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"] == true)
            .all(|p| p["acked_version"] == newer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_snapshot_keeps_the_old_one_serving() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let (key, token) = seed(&cp, &upstream);
    let version = cp.config_version();
    let http = Http::new();
    let dir = tempfile::tempdir().unwrap();
    // This proxy may call only loopback upstreams.
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_UPSTREAM_HOSTS", "127.0.0.1")
        .env("SLUICE_PROXY_ID", "edge-1")
        .start();
    proxy.wait_for_version(&http, version).await;

    cp.ctl(&[
        "provider",
        "create",
        "acme/elsewhere",
        "--type",
        "openai",
        "--base-url",
        "https://api.elsewhere.example/v1",
    ])
    .ok();
    let rejected = cp.config_version();
    let reason = loop {
        let fleet = cp.ctl(&["-o", "json", "fleet"]).json();
        let row = fleet["proxies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["proxy_id"] == "edge-1")
            .cloned()
            .unwrap();
        if row["nacked_version"] == rejected {
            assert_eq!(
                row["acked_version"], version,
                "the proxy must keep the old version"
            );
            break row["nack_reason"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reason.contains("api.elsewhere.example") && reason.contains("allowlist"),
        "{reason}"
    );
    assert!(cp.ctl(&["fleet"]).ok().contains("allowlist"));
    assert_eq!(
        proxy.metric(&http, "sluice_config_rejected_total").await,
        1.0
    );
    assert_eq!(
        proxy.metric(&http, "sluice_config_version").await as u64,
        version
    );
    assert!(
        answers(&http, &proxy, &key, "gpt-4o-mini").await,
        "the old snapshot stopped serving"
    );

    // Removing the offending provider gives a snapshot the proxy accepts.
    cp.ctl(&["provider", "delete", "acme/elsewhere"]).ok();
    let fixed = cp.config_version();
    proxy.wait_for_version(&http, fixed).await;
    assert!(answers(&http, &proxy, &key, "gpt-4o-mini").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_saved_snapshot_is_refused_not_half_served() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let (key, token) = seed(&cp, &upstream);
    let http = Http::new();
    let dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(dir.path(), &cp.url(), &token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    // The copy on disk follows the ACK.
    let saved = dir.path().join("snapshot.bin");
    eventually("the snapshot is saved", async || saved.exists()).await;
    let cp_url = cp.url();
    drop(proxy.kill());
    drop(cp.stop());

    let good = std::fs::read(&saved).unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (damage, bytes) in [
        ("truncated", good[..good.len() - 7].to_vec()),
        ("one flipped bit", flipped),
    ] {
        std::fs::write(&saved, &bytes).unwrap();
        let proxy = ProxyBuilder::new(dir.path(), &cp_url, &token).start();
        let ready = http.get(&proxy.url("/readyz"), None).await.unwrap();
        assert_eq!(ready.status, 503, "{damage}: {}", ready.text());
        assert_eq!(ready.json()["ready"], false);
        let refused = http
            .post(
                &proxy.url("/v1/chat/completions"),
                Some(&key),
                &json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
            .unwrap();
        assert_eq!(refused.status, 503, "{damage}");
        assert_eq!(refused.json()["error"]["code"], "not_ready");
        assert!(
            proxy.output.text().contains("ignoring the saved snapshot"),
            "{damage}: {}",
            proxy.output.text()
        );
    }
}
