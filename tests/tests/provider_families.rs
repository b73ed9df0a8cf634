//! OpenAI-compatible provider families on `/v1/chat/completions` and `/v1/embeddings`: Azure
//! OpenAI (the deployment's URL with `api-version`, the key in `api-key`, never in
//! `Authorization`), and vLLM / custom upstreams that need no key (none is sent). MOCK
//! embeddings answer in OpenAI's format without any upstream call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use sluice_e2e::mock_openai::{COMPLETION_TOKENS, MockOpenAi, PROMPT_TOKENS};
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
        "--header",
        "x-team=research",
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

    // Embeddings through Azure: the deployment's embeddings URL, usage metered.
    let body = json!({"model": "chat", "input": ["one", "two"]});
    let response = http
        .post(&proxy.url("/v1/embeddings"), Some(&key), &body)
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["data"].as_array().unwrap().len(), 2);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/openai/deployments/prod%20gpt-4o/embeddings");
    assert_eq!(seen.query, "api-version=2024-10-21");
    assert_eq!(seen.body["model"], "prod gpt-4o");
    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let tokens: (i64, i64, String) = loop {
        let row = sqlx::query_as(
            "SELECT input_tokens, output_tokens, source FROM usage_records \
             WHERE request_id = $1",
        )
        .bind(response.headers["x-request-id"].to_str().unwrap())
        .fetch_optional(&sluice_e2e::usage_rows(&pool).await)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "embeddings usage never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        tokens,
        (PROMPT_TOKENS as i64, 0, "PROVIDER_REPORTED".to_owned())
    );
    let refused = http
        .post(
            &proxy.url("/v1/embeddings"),
            Some(&key),
            &json!({"model": "chat", "input": []}),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["param"], "input");

    let body = json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]});
    let response = http.post(&url, Some(&key), &body).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(
        seen.headers["x-team"], "research",
        "the provider's extra header"
    );
    assert!(
        seen.headers.get("authorization").is_none(),
        "{:?}",
        seen.headers
    );
    assert!(seen.headers.get("api-key").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_embeddings_are_deterministic_and_call_nobody() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let acme = cp.seed_acme(&upstream.base_url(), Some("sk-mock-embeddings"), &[]);
    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let url = proxy.url("/v1/embeddings");
    let ask =
        |input: serde_json::Value| json!({"model": "default", "input": input, "dimensions": 8});
    let first = http
        .post(&url, Some(&acme.key), &ask(json!("hello")))
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let answer = first.json();
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "gpt-4o-mini");
    let vector = answer["data"][0]["embedding"].as_array().unwrap();
    assert_eq!(vector.len(), 8);
    let norm: f64 = vector.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-3, "not a unit vector: {norm}");
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let again = http
        .post(&url, Some(&acme.key), &ask(json!(["hello", "world"])))
        .await
        .unwrap();
    let again = again.json();
    assert_eq!(
        again["data"][0]["embedding"],
        answer["data"][0]["embedding"]
    );
    assert_ne!(
        again["data"][1]["embedding"],
        answer["data"][0]["embedding"]
    );
    assert_eq!(
        upstream.connections(),
        0,
        "MOCK posture called the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responses_api_passes_through_to_openai_and_is_metered() {
    let upstream = MockOpenAi::start();
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let acme = cp.seed_acme(&upstream.base_url(), Some("sk-responses"), &[]);
    cp.go_live("acme/web");
    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let url = proxy.url("/v1/responses");

    let answer = http
        .post(
            &url,
            Some(&acme.key),
            &json!({"model": "gpt-4o-mini", "input": "hi", "api_base": "http://evil"}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["object"], "response");
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert!(seen.body.get("api_base").is_none());
    assert!(seen.body.get("stream_options").is_none());

    let streamed = http
        .post(&url, Some(&acme.key), &json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": "hi"}], "stream": true}))
        .await
        .unwrap();
    assert_eq!(streamed.status, 200);
    assert!(streamed.text().contains("event: response.completed"));
    let seen = upstream.requests().pop().unwrap();
    assert!(
        seen.body.get("stream_options").is_none(),
        "the Responses API refuses stream_options"
    );

    // Both were metered from the upstream's usage.
    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let rows: Vec<(i64, i64, String)> =
            sqlx::query_as("SELECT input_tokens, output_tokens, source FROM usage_records")
                .fetch_all(&sluice_e2e::usage_rows(&pool).await)
                .await
                .unwrap_or_default();
        if rows.len() == 2 {
            for row in rows {
                assert_eq!(
                    row,
                    (
                        PROMPT_TOKENS as i64,
                        COMPLETION_TOKENS as i64,
                        "PROVIDER_REPORTED".to_owned()
                    )
                );
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage never arrived: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // MOCK posture answers in the Responses format too, streaming included.
    cp.ctl(&["project", "set-posture", "acme/web", "mock"]).ok();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let mocked = http
        .post(
            &url,
            Some(&acme.key),
            &json!({"model": "default", "input": "hi", "stream": true}),
        )
        .await
        .unwrap();
    assert_eq!(mocked.status, 200);
    let text = mocked.text();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(kinds.last(), Some(&"response.completed"));
    assert!(kinds.contains(&"response.output_text.delta"));
}
