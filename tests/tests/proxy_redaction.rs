//! Invariant 3 on the traffic path: with the control plane and a proxy both logging at trace
//! level (hyper and h2 included), LIVE calls — success, stream, an upstream that rejects the
//! key — leave the provider key, the virtual key and the data-plane token in no log, no file
//! of either data directory, and no error body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use sluice_e2e::mock_openai::MockOpenAi;
use sluice_e2e::proxy::{Http, ProxyBuilder};
use sluice_e2e::{ControlPlaneBuilder, Leftovers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_files_or_bodies() {
    let provider_key = format!("sk-canary-proxy-{:x}", std::process::id());
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path())
        .env("SLUICE_LOG", "trace")
        .start();
    let acme = cp.seed_acme(&upstream.base_url(), Some(&provider_key), &[]);
    cp.ctl(&[
        "model",
        "create",
        "acme/broken",
        "--deployment",
        "openai:fail-401",
    ])
    .ok();
    cp.go_live("acme/web");
    let (virtual_key, token) = (acme.key, acme.token);
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &token)
        .env("SLUICE_PROXY_LOG", "trace")
        .start();
    let http = Http::new();
    proxy.wait_for_version(&http, cp.config_version()).await;

    let url = proxy.url("/v1/chat/completions");
    let mut bodies = String::new();
    for model in ["gpt-4o-mini", "broken", "missing"] {
        let response = http
            .post(
                &url,
                Some(&virtual_key),
                &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
            .unwrap();
        bodies.push_str(&response.text());
    }
    let (_, frames) = http.post_streaming(&url, &virtual_key, &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    for (_, frame) in frames {
        bodies.push_str(&String::from_utf8_lossy(&frame));
    }
    bodies.push_str(
        &http
            .post(&url, Some("sk-sluice-wrong"), &json!({}))
            .await
            .unwrap()
            .text(),
    );
    assert!(
        upstream
            .requests()
            .iter()
            .any(|r| r.headers["authorization"] == format!("Bearer {provider_key}").as_str()),
        "the key never went upstream"
    );
    let left = Leftovers::of(proxy, cp, proxy_dir.path(), cp_dir.path()).await;
    for (name, secret) in [
        ("provider key", provider_key.as_str()),
        ("virtual key", &virtual_key),
        ("data-plane token", &token),
    ] {
        // The whole secret, and its 12-character pieces past any shared prefix.
        let mut forms = vec![secret.to_owned()];
        let chars: Vec<char> = secret.chars().collect();
        forms.extend(
            chars
                .windows(12)
                .skip(10)
                .map(|w| w.iter().collect::<String>()),
        );
        for form in forms {
            left.assert_nowhere(&form, name);
            assert!(!bodies.contains(&form), "a response body leaks the {name}");
        }
    }
}
