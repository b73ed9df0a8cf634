//! What the translation tests of every family share: a multi-turn chat, a text stream, a
//! refused field, reading an OpenAI event stream, and a tool call's round trip through
//! `/v1/chat/completions`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use crate::mock_openai::TOOL_ARGUMENTS;
use crate::proxy::{Http, HttpResponse};

/// The one tool the round trips offer; the mock upstreams call it with [`TOOL_ARGUMENTS`].
pub fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

/// The chunks of an OpenAI event stream, checking it ends with `[DONE]`.
pub fn chunks_of(text: &str) -> Vec<Value> {
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// Asks `model` about the weather with [`weather_tool`]: the answer must be a call of it with
/// the mock's arguments; its result `18C, sunny` is sent back. Returns the tool call as the
/// client saw it and the final answer's text.
pub async fn tool_round_trip(http: &Http, url: &str, key: &str, model: &str) -> (Value, String) {
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let called = http
        .post(
            url,
            Some(key),
            &json!({"model": model, "tools": weather_tool(), "messages": messages}),
        )
        .await
        .unwrap();
    assert_eq!(called.status, 200, "{}", called.text());
    let called = called.json();
    assert_eq!(called["choices"][0]["finish_reason"], "tool_calls");
    let message = called["choices"][0]["message"].clone();
    let call = message["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
    );
    messages.push(message);
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "18C, sunny"}));
    let answered = http
        .post(
            url,
            Some(key),
            &json!({"model": model, "tools": weather_tool(), "messages": messages}),
        )
        .await
        .unwrap();
    assert_eq!(answered.status, 200, "{}", answered.text());
    let text = answered.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    (call, text)
}

/// Streams the same question: returns the chunks.
pub async fn streamed_tool_call(http: &Http, url: &str, key: &str, model: &str) -> Vec<Value> {
    let streamed = http
        .post(
            url,
            Some(key),
            &json!({"model": model, "stream": true, "tools": weather_tool(),
                    "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .await
        .unwrap();
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    chunks_of(&streamed.text())
}

/// A system prompt and three turns (`max_tokens` 50, `temperature` 0.5) to `model`: the
/// answer must be the mock's text as a whole OpenAI chat completion.
pub async fn multi_turn(http: &Http, url: &str, key: &str, model: &str) -> HttpResponse {
    let body = json!({"model": model, "max_tokens": 50, "temperature": 0.5, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "And again?"}]});
    let answer = http.post(url, Some(key), &body).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let chat = answer.json();
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["model"], model);
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "Hello from the mock upstream"
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "stop");
    answer
}

/// A streamed "hi" to `model` asking for usage: every event must be a chunk, the first
/// naming the assistant. Returns the answer and its chunks.
pub async fn streamed_text(
    http: &Http,
    url: &str,
    key: &str,
    model: &str,
) -> (HttpResponse, Vec<Value>) {
    let streamed = http
        .post(
            url,
            Some(key),
            &json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .unwrap();
    assert_eq!(streamed.status, 200, "{}", streamed.text());
    let chunks = chunks_of(&streamed.text());
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    (streamed, chunks)
}

/// `body` must be refused with an OpenAI-shaped 400 naming `field` as untranslatable.
pub async fn refused_untranslatable(http: &Http, url: &str, key: &str, body: &Value, field: &str) {
    let refused = http.post(url, Some(key), body).await.unwrap();
    assert_eq!(refused.status, 400, "{}", refused.text());
    let error = refused.json();
    assert_eq!(error["error"]["code"], "invalid_request");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("`{field}` cannot be translated")),
        "{error}"
    );
}
