//! Gemini's native endpoints: `models/{model}:generateContent` and `:streamGenerateContent`
//! under `/v1beta/` and `/v1/`, the virtual key as `?key=` or `x-goog-api-key` (never passed
//! on), passed through to a Google provider (its key as `x-goog-api-key`, the upstream model in
//! the URL, no model in the body), metered from `usageMetadata` (thinking tokens as output);
//! MOCK answers in Gemini's format; an OpenAI-family model gets `provider_mismatch` in
//! Google's error shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use serde_json::json;
use sluice_e2e::mock_openai::{
    COMPLETION_TOKENS, GEMINI_SIGNATURE, GEMINI_THOUGHTS, PROMPT_TOKENS, TOOL_ARGUMENTS,
};
use sluice_e2e::proxy::{Http, HttpResponse};
use sluice_e2e::translated::{
    multi_turn, refused_untranslatable, streamed_text, streamed_tool_call, tool_round_trip,
};
use sluice_e2e::{FamilyStack, await_usage, family_stack};

/// POSTs to a Gemini endpoint with the key as `x-goog-api-key`, as Google's SDKs send it.
async fn gemini_post(http: &Http, url: &str, key: &str, body: &Bytes) -> HttpResponse {
    http.send("POST", url, None, &[("x-goog-api-key", key)], body.clone())
        .await
        .unwrap()
}

const GOOGLE_KEY: &str = "AIza-canary-google-7788";

/// A LIVE stack whose model `gemini` is served by a Google provider, and a proxy on it.
async fn gemini_stack() -> FamilyStack {
    let family = family_stack("google", GOOGLE_KEY, "gemini", "gemini-2.5-flash").await;
    // A model Google does not know, for its 404.
    let cp = &family.stack.cp;
    cp.ctl(&[
        "model",
        "create",
        "acme/gemini-missing",
        "--deployment",
        "google:missing",
    ])
    .ok();
    family
        .proxy
        .wait_for_version(&family.http, cp.config_version())
        .await;
    family
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_content_passes_through_is_metered_and_stays_in_its_family() {
    let sluice_e2e::FamilyStack {
        stack:
            sluice_e2e::LiveStack {
                upstream,
                cp_dir,
                cp,
                acme,
            },
        proxy_dir: _proxy_dir,
        proxy,
        http,
    } = gemini_stack().await;
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

    let pool = sluice_e2e::store_of(cp_dir.path()).await;
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

/// `/v1/chat/completions` on a Gemini model: the request becomes a `generateContent` request
/// (system instruction apart, `model` role for the assistant, the model in the URL), the
/// answer a `chat.completion` with OpenAI usage; a tool call makes the round trip with its
/// signature; streams translate chunk by chunk; Google's errors and untranslatable fields
/// come back as OpenAI-shaped 400s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_are_translated_to_gemini_and_back() {
    let sluice_e2e::FamilyStack {
        stack:
            sluice_e2e::LiveStack {
                upstream,
                cp_dir,
                cp: _cp,
                acme,
            },
        proxy_dir: _proxy_dir,
        proxy,
        http,
    } = gemini_stack().await;
    let url = proxy.url("/v1/chat/completions");

    // Plain text, multi-turn with a system prompt.
    let answer = multi_turn(&http, &url, &acme.key, "gemini").await;
    let chat = answer.json();
    assert_eq!(chat["usage"]["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(
        chat["usage"]["completion_tokens"],
        COMPLETION_TOKENS + GEMINI_THOUGHTS
    );
    assert_eq!(
        chat["usage"]["completion_tokens_details"]["reasoning_tokens"],
        GEMINI_THOUGHTS
    );
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.headers["x-goog-api-key"], GOOGLE_KEY);
    assert_eq!(
        seen.body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(seen.body["generationConfig"]["maxOutputTokens"], 50);
    assert_eq!(seen.body["generationConfig"]["temperature"], 0.5);
    let roles: Vec<&str> = seen.body["contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "model", "user"]);
    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
    let row: (i64, i64) = await_usage(&pool, "input_tokens, output_tokens", &id).await;
    assert_eq!(
        row,
        (
            PROMPT_TOKENS as i64,
            (COMPLETION_TOKENS + GEMINI_THOUGHTS) as i64
        )
    );

    // A tool call round trip: the call comes back as an OpenAI tool call, its result goes
    // to Gemini as a functionResponse with the call's signature restored.
    let (_, answer) = tool_round_trip(&http, &url, &acme.key, "gemini").await;
    assert_eq!(answer, r#"The tool said: {"content":"18C, sunny"}"#);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(
        seen.body["contents"][1]["parts"][0]["thoughtSignature"],
        GEMINI_SIGNATURE
    );
    assert_eq!(
        seen.body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "weather"
    );

    // Streams: text deltas in order, then the finish reason, then usage when asked.
    let (streamed, chunks) = streamed_text(&http, &url, &acme.key, "gemini").await;
    assert_eq!(streamed.headers["content-type"], "text/event-stream");
    let content: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(content, ["Hello from", " the mock upstream"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(
        usage["completion_tokens"],
        COMPLETION_TOKENS + GEMINI_THOUGHTS
    );
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(
        seen.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(seen.query, "alt=sse");
    let id = streamed.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let row: (i64, i64) = await_usage(&pool, "input_tokens, output_tokens", &id).await;
    assert_eq!(
        row,
        (
            PROMPT_TOKENS as i64,
            (COMPLETION_TOKENS + GEMINI_THOUGHTS) as i64
        )
    );

    // A streamed tool call arrives whole, then finishes as tool_calls.
    let chunks = streamed_tool_call(&http, &url, &acme.key, "gemini").await;
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .unwrap();
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], TOOL_ARGUMENTS);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    // What cannot be translated, and Google's own refusal, are OpenAI-shaped 400s.
    let untranslatable = json!({"model": "gemini", "logprobs": true,
                                "messages": [{"role": "user", "content": "hi"}]});
    refused_untranslatable(&http, &url, &acme.key, &untranslatable, "logprobs").await;
    let missing = http
        .post(
            &url,
            Some(&acme.key),
            &json!({"model": "gemini-missing", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("models/missing is not found"),
        "{}",
        missing.text()
    );
}
