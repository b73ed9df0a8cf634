//! OpenAI-compatible provider families on `/v1/chat/completions`: Azure OpenAI (the
//! deployment's URL with `api-version`, the key in `api-key`, never in `Authorization`), and
//! vLLM / custom upstreams that need no key (none is sent).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use sluice_e2e::mock_openai::{COMPLETION_TOKENS, MockOpenAi};
use sluice_e2e::proxy::{Http, ProxyBuilder};
use sluice_e2e::{ControlPlane, ControlPlaneBuilder};

const AZURE_KEY: &str = "azure-canary-key-5c1d";

fn seed(cp: &ControlPlane, upstream: &MockOpenAi) -> (String, String) {
    cp.ctl(&["org", "create", "acme"]).ok();
    let base = format!("http://{}", upstream.addr);
    let refused = cp.ctl(&[
        "provider",
        "create",
        "acme/azure",
        "--type",
        "azure-openai",
        "--base-url",
        &base,
        "--allow-private-network",
    ]);
    assert!(refused.err().contains("api_version"), "{}", refused.err());
    cp.ctl(&[
        "provider",
        "create",
        "acme/azure",
        "--type",
        "azure-openai",
        "--base-url",
        &base,
        "--api-version",
        "2024-10-21",
        "--allow-private-network",
    ])
    .ok();
    cp.ctl_stdin(&["provider-key", "add", "acme/azure/main"], AZURE_KEY)
        .ok();
    let vllm_base = format!("http://{}/v1", upstream.addr);
    cp.ctl(&[
        "provider",
        "create",
        "acme/vllm",
        "--type",
        "vllm",
        "--base-url",
        &vllm_base,
        "--allow-private-network",
    ])
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/chat",
        "--deployment",
        "azure:prod gpt-4o",
    ])
    .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/llama",
        "--deployment",
        "vllm:meta-llama/Llama-3.1-8B-Instruct",
    ])
    .ok();
    cp.ctl(&["project", "create", "acme/web", "--default-model", "chat"])
        .ok();
    // Every model has a route: Azure with its key, vLLM without one.
    cp.ctl(&["project", "set-posture", "acme/web", "live"]).ok();
    (
        cp.virtual_key("acme/web/app", &[]),
        cp.data_plane_token("proxies"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_and_keyless_vllm_are_called_their_own_way() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let (key, token) = seed(&cp, &upstream);
    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let url = proxy.url("/v1/chat/completions");

    for stream in [false, true] {
        let body = json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let response = http.post(&url, Some(&key), &body).await.unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let seen = upstream.requests().pop().unwrap();
        assert_eq!(
            seen.path,
            "/openai/deployments/prod%20gpt-4o/chat/completions"
        );
        assert_eq!(seen.query, "api-version=2024-10-21");
        assert_eq!(seen.headers["api-key"], AZURE_KEY);
        assert!(
            seen.headers.get("authorization").is_none(),
            "{:?}",
            seen.headers
        );
        if !stream {
            assert_eq!(
                response.json()["usage"]["completion_tokens"],
                COMPLETION_TOKENS
            );
        }
    }

    let body = json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(&url, Some(&key), &body).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert!(
        seen.headers.get("authorization").is_none(),
        "{:?}",
        seen.headers
    );
    assert!(seen.headers.get("api-key").is_none());
}
