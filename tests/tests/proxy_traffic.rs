//! Real control plane, two real proxies, and a mock OpenAI upstream: MOCK and LIVE posture,
//! streaming, usage, every error of DESIGN's table that applies here, and wire hygiene.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use sluice_e2e::mock_openai::{COMPLETION_TOKENS, MockOpenAi, PROMPT_TOKENS};
use sluice_e2e::proxy::{Http, Proxy, ProxyBuilder};
use sluice_e2e::{ControlPlane, ControlPlaneBuilder};

const PROVIDER_KEY: &str = "sk-canary-upstream-key-0042";

struct Stack {
    cp: ControlPlane,
    upstream: MockOpenAi,
    attacker: MockOpenAi,
    proxies: Vec<Proxy>,
    key: String,
    limited_key: String,
    _dirs: Vec<tempfile::TempDir>,
    http: Http,
}

async fn stack() -> Stack {
    let cp_dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneBuilder::new(cp_dir.path()).start();
    let upstream = MockOpenAi::start();
    let attacker = MockOpenAi::start();
    cp.ctl(&["org", "create", "acme"]).ok();
    cp.ctl(&[
        "provider",
        "create",
        "acme/openai",
        "--type",
        "openai",
        "--base-url",
        &upstream.base_url(),
        "--allow-private-network",
        "--timeout-ms",
        "1000",
        "--header",
        "x-team=research",
    ])
    .ok();
    cp.ctl_stdin(&["provider-key", "add", "acme/openai/main"], PROVIDER_KEY)
        .ok();
    for (model, slug) in [
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("broken-key", "fail-401"),
        ("overloaded", "fail-429"),
        ("failing", "fail-500"),
        ("slow", "slow"),
        ("redirecting", "redirect"),
        ("quiet", "no-usage"),
    ] {
        cp.ctl(&[
            "model",
            "create",
            &format!("acme/{model}"),
            "--deployment",
            &format!("openai:{slug}"),
            "--input-price",
            "150000",
            "--output-price",
            "600000",
        ])
        .ok();
    }
    cp.ctl(&[
        "project",
        "create",
        "acme/web",
        "--default-model",
        "gpt-4o-mini",
    ])
    .ok();
    let key = cp.virtual_key("acme/web/app", &[]);
    let limited_key = cp.virtual_key("acme/web/limited", &["gpt-4o-mini"]);
    let token = cp.data_plane_token("proxies");
    let version = cp.config_version();
    let http = Http::new();
    let mut dirs = vec![cp_dir];
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        proxies.push(
            ProxyBuilder::new(dir.path(), &cp.url(), &token)
                .env("SLUICE_PROXY_MAX_BODY_BYTES", "65536")
                .start(),
        );
        dirs.push(dir);
    }
    for proxy in &proxies {
        proxy.wait_for_version(&http, version).await;
    }
    Stack {
        cp,
        upstream,
        attacker,
        proxies,
        key,
        limited_key,
        _dirs: dirs,
        http,
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]})
}

async fn go_live(stack: &Stack) {
    stack
        .cp
        .ctl(&["project", "set-posture", "acme/web", "live"])
        .ok();
    let version = stack.cp.config_version();
    for proxy in &stack.proxies {
        proxy.wait_for_version(&stack.http, version).await;
    }
}

fn assert_error(response: &sluice_e2e::proxy::HttpResponse, status: u16, code: &str, next: &str) {
    assert_eq!(response.status.as_u16(), status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["next_action"], next, "{body}");
    let request_id = body["error"]["request_id"].as_str().unwrap();
    assert_eq!(
        response.headers["x-request-id"].to_str().unwrap(),
        request_id
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(body["error"]["type"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_then_live_through_two_proxies() {
    let stack = stack().await;
    let http = &stack.http;

    // MOCK: exact OpenAI shape, from both proxies, and not one upstream connection.
    for proxy in &stack.proxies {
        let response = http
            .post(
                &proxy.url("/v1/chat/completions"),
                Some(&stack.key),
                &chat("default"),
            )
            .await
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let body = response.json();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-4o-mini");
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .contains("MOCK posture")
        );
        assert!(response.headers.contains_key("x-request-id"));
        let (status, frames) = http.post_streaming(&proxy.url("/v1/chat/completions"), &stack.key, &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(status, 200);
        let text: String = frames
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(
            text.contains("chat.completion.chunk")
                && text.contains("\"usage\"")
                && text.ends_with("data: [DONE]\n\n")
        );
        let models = http
            .get(&proxy.url("/v1/models"), Some(&stack.limited_key))
            .await
            .unwrap()
            .json();
        assert_eq!(
            models["data"].as_array().unwrap().len(),
            1,
            "a key lists only what it may use: {models}"
        );
    }
    assert_eq!(
        stack.upstream.connections(),
        0,
        "MOCK posture made an upstream connection"
    );

    // LIVE: the decrypted provider key and the upstream slug go upstream; nothing else does.
    go_live(&stack).await;
    let proxy = &stack.proxies[0];
    let mut request = chat("gpt-4o-mini");
    request["api_base"] = json!(format!("http://{}/v1", stack.attacker.addr));
    request["base_url"] = json!(format!("http://{}/v1", stack.attacker.addr));
    request["extra_body"] = json!({"api_base": format!("http://{}", stack.attacker.addr), "base_url": format!("http://{}", stack.attacker.addr)});
    request["metadata"] = json!({"note": "kept"});
    let attacker_host = stack.attacker.addr.to_string();
    let response = http
        .send(
            "POST",
            &proxy.url("/v1/chat/completions"),
            Some(&stack.key),
            &[
                ("x-portkey-custom-host", &attacker_host),
                ("x-sluice-secret-tag", "internal"),
                ("x-forwarded-host", &attacker_host),
                ("cookie", "session=1"),
            ],
            Bytes::from(request.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "Hello from the mock upstream"
    );
    assert_eq!(
        stack.attacker.connections(),
        0,
        "a request steered the proxy to another host"
    );
    let seen = stack.upstream.requests();
    let upstream_request = seen.last().unwrap();
    assert_eq!(upstream_request.path, "/v1/chat/completions");
    assert_eq!(upstream_request.body["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(
        upstream_request.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str()
    );
    assert_eq!(upstream_request.headers["x-team"], "research");
    let names: BTreeSet<&str> = upstream_request
        .headers
        .keys()
        .map(|k| k.as_str())
        .collect();
    let allowed: BTreeSet<&str> = [
        "host",
        "content-type",
        "accept",
        "user-agent",
        "authorization",
        "content-length",
        "x-team",
    ]
    .into();
    assert!(
        names.is_subset(&allowed),
        "unexpected headers upstream: {:?}",
        names.difference(&allowed).collect::<Vec<_>>()
    );
    let body_text = upstream_request.body.to_string();
    assert!(
        !body_text.contains("api_base")
            && !body_text.contains("base_url")
            && !body_text.contains("extra_body"),
        "{body_text}"
    );
    assert!(
        !body_text.contains(&stack.key),
        "the virtual key went upstream"
    );
    assert_eq!(upstream_request.body["metadata"]["note"], "kept");

    // Streaming: the first chunk reaches the client before the upstream sends its last.
    let started = Instant::now();
    let (status, frames) = http
        .post_streaming(&proxy.url("/v1/chat/completions"), &stack.key, &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(status, 200);
    let first_content = frames
        .iter()
        .find(|(_, b)| String::from_utf8_lossy(b).contains("Hello"))
        .expect("content chunk")
        .0;
    let last_sent = stack.upstream.last_chunk_sent().unwrap();
    assert!(
        first_content < last_sent,
        "the stream was buffered: first chunk {:?} after start, last upstream chunk {:?}",
        first_content - started,
        last_sent - started
    );
    let streamed: String = frames
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(streamed.contains("\"usage\"") && streamed.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        stack.upstream.requests().last().unwrap().body["stream_options"]["include_usage"],
        true
    );
    // A stream whose upstream sends no usage block.
    let (status, _) = http.post_streaming(&proxy.url("/v1/chat/completions"), &stack.key, &json!({"model": "quiet", "stream": true, "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200);

    // Usage reaches the control plane with the tokens the upstream reported.
    let pool = sluice_e2e::store_of(&stack.cp.data_dir).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows: Vec<(String, String, i64, i64, i64)> = loop {
        let rows = sqlx::query_as("SELECT model, source, input_tokens, output_tokens, cost_micros FROM usage_records ORDER BY started_at_us")
            .fetch_all(&sluice_e2e::usage_rows(&pool).await)
            .await
            .unwrap();
        if rows.len() >= 7 {
            break rows;
        }
        assert!(Instant::now() < deadline, "usage never arrived: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mock_rows = rows.iter().filter(|r| r.1 == "MOCK").count();
    assert_eq!(mock_rows, 4, "{rows:?}");
    assert!(rows.iter().filter(|r| r.1 == "MOCK").all(|r| r.4 == 0));
    let live: Vec<_> = rows.iter().filter(|r| r.1 == "PROVIDER_REPORTED").collect();
    assert_eq!(live.len(), 2, "{rows:?}");
    for row in live {
        assert_eq!(
            (row.2, row.3),
            (PROMPT_TOKENS as i64, COMPLETION_TOKENS as i64)
        );
        // 11 × 0.15 + 7 × 0.60 = 5.85 µ$, rounded up.
        assert_eq!(row.4, 6);
    }
    assert!(
        rows.iter().any(|r| r.0 == "quiet" && r.1 == "ESTIMATED"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_typed() {
    let stack = stack().await;
    let http = &stack.http;
    let url = stack.proxies[1].url("/v1/chat/completions");

    let no_key = http.post(&url, None, &chat("gpt-4o-mini")).await.unwrap();
    assert_error(&no_key, 401, "invalid_api_key", "fix");
    let bad_key = http
        .post(&url, Some("sk-sluice-not-a-key"), &chat("gpt-4o-mini"))
        .await
        .unwrap();
    assert_error(&bad_key, 401, "invalid_api_key", "fix");
    assert_error(
        &http
            .post(&url, Some(&stack.key), &chat("no-such-model"))
            .await
            .unwrap(),
        404,
        "unsupported_model",
        "fix",
    );
    assert_error(
        &http
            .post(&url, Some(&stack.limited_key), &chat("failing"))
            .await
            .unwrap(),
        403,
        "unsupported_model",
        "fix",
    );
    let malformed = http
        .send(
            "POST",
            &url,
            Some(&stack.key),
            &[],
            Bytes::from_static(b"{\"model\": "),
        )
        .await
        .unwrap();
    assert_error(&malformed, 400, "invalid_request", "fix");
    assert!(
        malformed.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
    assert_error(
        &http
            .post(&url, Some(&stack.key), &json!({"model": "gpt-4o-mini"}))
            .await
            .unwrap(),
        400,
        "invalid_request",
        "fix",
    );
    assert_error(
        &http
            .post(&url, Some(&stack.key), &json!([1, 2]))
            .await
            .unwrap(),
        400,
        "invalid_request",
        "fix",
    );
    // Refused by its declared length, again and again: the client must always read the 413,
    // never a connection reset from a socket closed with its body unread.
    let huge = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    for _ in 0..25 {
        assert_error(
            &http.post(&url, Some(&stack.key), &huge).await.unwrap(),
            413,
            "request_too_large",
            "fix",
        );
        // Refused before the body is read at all: the same.
        assert_error(
            &http
                .post(&url, Some("sk-sluice-not-a-key"), &huge)
                .await
                .unwrap(),
            401,
            "invalid_api_key",
            "fix",
        );
    }
    let wrong_method = http.get(&url, Some(&stack.key)).await.unwrap();
    assert_eq!(wrong_method.status, 405);
    assert_error(
        &http
            .get(&stack.proxies[1].url("/v2/nothing"), None)
            .await
            .unwrap(),
        404,
        "not_found",
        "fix",
    );

    go_live(&stack).await;
    assert_error(
        &http
            .post(&url, Some(&stack.key), &chat("broken-key"))
            .await
            .unwrap(),
        502,
        "provider_key_invalid",
        "fix",
    );
    let limited = http
        .post(&url, Some(&stack.key), &chat("overloaded"))
        .await
        .unwrap();
    assert_error(&limited, 429, "upstream_rate_limited", "retry");
    assert_error(
        &http
            .post(&url, Some(&stack.key), &chat("failing"))
            .await
            .unwrap(),
        502,
        "upstream_unavailable",
        "retry",
    );
    assert_error(
        &http
            .post(&url, Some(&stack.key), &chat("redirecting"))
            .await
            .unwrap(),
        502,
        "upstream_unavailable",
        "retry",
    );
    let started = Instant::now();
    assert_error(
        &http
            .post(&url, Some(&stack.key), &chat("slow"))
            .await
            .unwrap(),
        504,
        "upstream_timeout",
        "retry",
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the provider timeout (1 s) was not applied"
    );

    // A model whose only provider key is revoked is not ready.
    stack
        .cp
        .ctl(&["provider-key", "revoke", "acme/openai/main"])
        .ok();
    let version = stack.cp.config_version();
    stack.proxies[1].wait_for_version(http, version).await;
    assert_error(
        &http
            .post(&url, Some(&stack.key), &chat("gpt-4o-mini"))
            .await
            .unwrap(),
        409,
        "provider_not_ready",
        "fix",
    );

    // A revoked virtual key stops working on both proxies.
    stack.cp.ctl(&["vkey", "revoke", "acme/web/app"]).ok();
    let version = stack.cp.config_version();
    for proxy in &stack.proxies {
        proxy.wait_for_version(http, version).await;
        assert_error(
            &http
                .post(
                    &proxy.url("/v1/chat/completions"),
                    Some(&stack.key),
                    &chat("gpt-4o-mini"),
                )
                .await
                .unwrap(),
            401,
            "invalid_api_key",
            "fix",
        );
    }
}
