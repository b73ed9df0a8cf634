//! Anthropic's native `POST /v1/messages`: the virtual key as `x-api-key`, passed through to
//! an Anthropic provider (its key as `x-api-key`, `anthropic-version` set, the upstream model
//! name), JSON and event streams metered from Anthropic's usage (cache reads counted as
//! cached input); MOCK answers in Anthropic's format; an OpenAI-family model is refused with
//! `provider_mismatch` in Anthropic's error shape, and an Anthropic model on OpenAI's native
//! endpoints in OpenAI's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use serde_json::{Value, json};
use sluice_e2e::mock_openai::{
    ANTHROPIC_CACHE_READ, COMPLETION_TOKENS, PROMPT_TOKENS, TOOL_ARGUMENTS,
};
use sluice_e2e::proxy::{Http, HttpResponse};
use sluice_e2e::translated::{
    multi_turn, refused_untranslatable, streamed_text, streamed_tool_call, tool_round_trip,
};
use sluice_e2e::{FamilyStack, await_usage, family_stack};

const ANTHROPIC_KEY: &str = "sk-ant-canary-4411";

/// A LIVE stack whose model `claude` is served by an Anthropic provider, and a proxy on it.
async fn anthropic_stack() -> FamilyStack {
    family_stack("anthropic", ANTHROPIC_KEY, "claude", "claude-sonnet-4-5").await
}

async fn messages(http: &Http, url: &str, key: &str, body: &Value) -> HttpResponse {
    http.send(
        "POST",
        url,
        None,
        &[("x-api-key", key), ("anthropic-version", "2023-06-01")],
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pass_through_are_metered_and_stay_in_their_family() {
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
    } = anthropic_stack().await;
    let url = proxy.url("/v1/messages");
    let ask = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 256, "stream": stream,
               "system": "Be brief.", "messages": [{"role": "user", "content": "hi"}]})
    };

    let answer = messages(&http, &url, &acme.key, &ask("claude", false)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["type"], "message");
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.body["model"], "claude-sonnet-4-5");
    let first_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();

    let streamed = messages(&http, &url, &acme.key, &ask("claude", true)).await;
    assert_eq!(streamed.status, 200);
    let text = streamed.text();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(kinds.last(), Some(&"message_stop"));
    let stream_id = streamed.headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    // Both metered: Anthropic's input excludes cache reads; Sluice counts them in, as cached.
    let pool = sluice_e2e::store_of(cp_dir.path()).await;
    for id in [first_id, stream_id] {
        let row: (i64, i64, i64, String) = await_usage(
            &pool,
            "input_tokens, cached_input_tokens, output_tokens, source",
            &id,
        )
        .await;
        assert_eq!(
            row,
            (
                (PROMPT_TOKENS + ANTHROPIC_CACHE_READ) as i64,
                ANTHROPIC_CACHE_READ as i64,
                COMPLETION_TOKENS as i64,
                "PROVIDER_REPORTED".to_owned()
            )
        );
    }

    // An OpenAI-family model on Anthropic's endpoint: refused, in Anthropic's shape.
    let mismatch = messages(&http, &url, &acme.key, &ask("gpt-4o-mini", false)).await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.text());
    let error = mismatch.json();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "provider_mismatch");
    assert_eq!(error["error"]["next_action"], "fix");
    // And the other way: OpenAI's native endpoints refuse an Anthropic model, in their shape.
    for (path, body) in [
        ("/v1/embeddings", json!({"model": "claude", "input": "hi"})),
        ("/v1/responses", json!({"model": "claude", "input": "hi"})),
    ] {
        let refused = http
            .post(&proxy.url(path), Some(&acme.key), &body)
            .await
            .unwrap();
        assert_eq!(refused.status, 400, "{path}: {}", refused.text());
        let error = refused.json();
        assert_eq!(error["error"]["code"], "provider_mismatch", "{path}");
        assert_eq!(error["error"]["next_action"], "fix");
        assert_eq!(error["error"]["param"], "model");
    }
    // Anthropic requires max_tokens; so does Sluice's native endpoint.
    let no_max = messages(
        &http,
        &url,
        &acme.key,
        &json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(no_max.status, 400);
    assert_eq!(no_max.json()["error"]["type"], "invalid_request_error");
    // A bad key is refused in Anthropic's shape too.
    let bad = messages(&http, &url, "sk-sluice-nope", &ask("claude", false)).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"]["type"], "authentication_error");

    // MOCK posture answers in Anthropic's format, streams included, with no upstream call.
    cp.ctl(&["project", "set-posture", "acme/web", "mock"]).ok();
    proxy.wait_for_version(&http, cp.config_version()).await;
    let calls = upstream.requests().len();
    let mocked = messages(&http, &url, &acme.key, &ask("claude", false)).await;
    assert_eq!(mocked.status, 200);
    let mocked = mocked.json();
    assert_eq!(mocked["type"], "message");
    assert_eq!(mocked["content"][0]["type"], "text");
    assert!(mocked["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let mocked_stream = messages(&http, &url, &acme.key, &ask("claude", true)).await;
    let kinds: Vec<String> = mocked_stream
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("event: ").map(str::to_owned))
        .collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        upstream.requests().len(),
        calls,
        "MOCK posture called the upstream"
    );
}

/// `/v1/chat/completions` on an Anthropic model: the request is translated to the Messages
/// API (system prompt apart, turns in order), the answer comes back as a `chat.completion`
/// with OpenAI-style usage, and a field with no Anthropic equivalent is refused, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_are_translated_to_anthropic_and_back() {
    let sluice_e2e::FamilyStack {
        stack:
            sluice_e2e::LiveStack {
                upstream,
                cp_dir: _cp_dir,
                cp: _cp,
                acme,
            },
        proxy_dir: _proxy_dir,
        proxy,
        http,
    } = anthropic_stack().await;
    let url = proxy.url("/v1/chat/completions");
    let chat = multi_turn(&http, &url, &acme.key, "claude").await.json();
    assert_eq!(
        chat["usage"]["prompt_tokens"],
        PROMPT_TOKENS + ANTHROPIC_CACHE_READ
    );
    assert_eq!(
        chat["usage"]["prompt_tokens_details"]["cached_tokens"],
        ANTHROPIC_CACHE_READ
    );
    assert_eq!(chat["usage"]["completion_tokens"], COMPLETION_TOKENS);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(seen.body["model"], "claude-sonnet-4-5");
    assert_eq!(seen.body["system"], "Be brief.");
    assert_eq!(seen.body["max_tokens"], 50);
    let roles: Vec<&str> = seen.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);

    let untranslatable =
        json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": "hi"}]});
    refused_untranslatable(&http, &url, &acme.key, &untranslatable, "n").await;
    // A tool call round trip: Anthropic's tool_use comes back as an OpenAI tool call, and
    // the tool's result goes back as a tool_result for that call.
    let (call, answer) = tool_round_trip(&http, &url, &acme.key, "claude").await;
    assert_eq!(call["id"], "toolu_mock");
    assert_eq!(answer, r#"The tool said: "18C, sunny""#);
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.body["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        seen.body["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_mock", "content": "18C, sunny"})
    );
    // Streamed, the call's arguments arrive as deltas of one tool call.
    let chunks = streamed_tool_call(&http, &url, &acme.key, "claude").await;
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, TOOL_ARGUMENTS);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    // Streams translate chunk by chunk, usage last when asked for.
    let (_, chunks) = streamed_text(&http, &url, &acme.key, "claude").await;
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from the mock upstream");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS + ANTHROPIC_CACHE_READ);
    assert_eq!(usage["completion_tokens"], COMPLETION_TOKENS);
    assert_eq!(upstream.requests().pop().unwrap().body["stream"], true);
}
