//! Gemini's native endpoints: `models/{model}:generateContent` and `:streamGenerateContent`
//! under `/v1beta/` and `/v1/`, the virtual key as `?key=` or `x-goog-api-key` (never passed
//! on), passed through to a Google provider (its key as `x-goog-api-key`, the upstream model in
//! the URL, no model in the body), metered from `usageMetadata` (thinking tokens as output);
//! MOCK answers in Gemini's format; an OpenAI-family model gets `provider_mismatch` in
//! Google's error shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use serde_json::json;
use sluice_e2e::mock_openai::{COMPLETION_TOKENS, GEMINI_THOUGHTS, PROMPT_TOKENS};
use sluice_e2e::proxy::{Http, HttpResponse, ProxyBuilder};
use sluice_e2e::{await_usage, live_stack};

/// POSTs to a Gemini endpoint with the key as `x-goog-api-key`, as Google's SDKs send it.
async fn gemini_post(http: &Http, url: &str, key: &str, body: &Bytes) -> HttpResponse {
    http.send("POST", url, None, &[("x-goog-api-key", key)], body.clone())
        .await
        .unwrap()
}

const GOOGLE_KEY: &str = "AIza-canary-google-7788";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_content_passes_through_is_metered_and_stays_in_its_family() {
    let (upstream, cp_dir, cp, acme) = live_stack("sk-openai-side");
    let base = format!("http://{}", upstream.addr);
    cp.ctl(&[
        "provider",
        "create",
        "acme/google",
        "--type",
        "google",
        "--base-url",
        &base,
        "--allow-private-network",
    ])
    .ok();
    cp.ctl_stdin(&["provider-key", "add", "acme/google/main"], GOOGLE_KEY)
        .ok();
    cp.ctl(&[
        "model",
        "create",
        "acme/gemini",
        "--deployment",
        "google:gemini-2.5-flash",
    ])
    .ok();
    let http = Http::new();
    let proxy_dir = tempfile::tempdir().unwrap();
    let proxy = ProxyBuilder::new(proxy_dir.path(), &cp.url(), &acme.token).start();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let body = Bytes::from(
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
               "generationConfig": {"maxOutputTokens": 64}})
        .to_string(),
    );

    // The key in the query, as Google's samples do; it never goes upstream.
    let url = proxy.url(&format!(
        "/v1beta/models/gemini:generateContent?key={}",
        acme.key
    ));
    let answer = http
        .send("POST", &url, None, &[], body.clone())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.json()["candidates"].is_array());
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.query, "");
    assert_eq!(seen.headers["x-goog-api-key"], GOOGLE_KEY);
    assert!(seen.body.get("model").is_none());
    assert!(
        !format!("{seen:?}").contains(&acme.key),
        "the virtual key went upstream"
    );
    let first_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();

    // Under /v1/ too, streaming, the key as a header.
    let url = proxy.url("/v1/models/gemini:streamGenerateContent?alt=sse");
    let streamed = gemini_post(&http, &url, &acme.key, &body).await;
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    assert_eq!(streamed.text().matches("data: ").count(), 2);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(
        seen.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(seen.query, "alt=sse");
    let stream_id = streamed.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    let db = format!("sqlite://{}", cp_dir.path().join("sluice.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    for id in [first_id, stream_id] {
        let row: (i64, i64, i64) =
            await_usage(&pool, "input_tokens, output_tokens, reasoning_tokens", &id).await;
        assert_eq!(
            row,
            (
                PROMPT_TOKENS as i64,
                (COMPLETION_TOKENS + GEMINI_THOUGHTS) as i64,
                GEMINI_THOUGHTS as i64
            )
        );
    }

    // An OpenAI-family model on Gemini's endpoint: refused in Google's shape.
    let url = proxy.url("/v1beta/models/gpt-4o-mini:generateContent");
    let mismatch = gemini_post(&http, &url, &acme.key, &body).await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.text());
    let error = mismatch.json();
    assert_eq!(error["error"]["code"], 400);
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(error["error"]["sluice_code"], "provider_mismatch");
    assert_eq!(error["error"]["next_action"], "fix");

    // MOCK posture answers in Gemini's format, with no upstream call.
    cp.ctl(&["project", "set-posture", "acme/web", "mock"]).ok();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let calls = upstream.requests().len();
    let url = proxy.url("/v1beta/models/gemini:generateContent");
    let mocked = gemini_post(&http, &url, &acme.key, &body).await;
    assert_eq!(mocked.status, 200);
    let mocked = mocked.json();
    assert_eq!(mocked["candidates"][0]["finishReason"], "STOP");
    assert!(
        mocked["usageMetadata"]["promptTokenCount"]
            .as_u64()
            .unwrap()
            > 0
    );
    let url = proxy.url("/v1beta/models/gemini:streamGenerateContent?alt=sse");
    let mocked = gemini_post(&http, &url, &acme.key, &body).await;
    assert_eq!(mocked.text().matches("data: ").count(), 2);
    assert_eq!(
        upstream.requests().len(),
        calls,
        "MOCK posture called the upstream"
    );
}
