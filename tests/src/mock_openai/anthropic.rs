//! The Anthropic family's answers: the Messages API (a message, or its event stream), model
//! listings as key checks see them, and Anthropic's error shape; each built from the fixtures in
//! `tests/fixtures/anthropic/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::fixtures::fixture;
use super::*;

/// Anthropic's `GET /v1/models[/{id}]`: a key containing `invalid` gets its authentication
/// error (401), `noaccess` its permission error (403), model `claude-nope` not found (404).
pub(super) fn anthropic_models_answer(key: &str, model: Option<&str>) -> MockResponse {
    let error = anthropic_error;
    if key.contains("invalid") {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if key.contains("noaccess") {
        return error(
            StatusCode::FORBIDDEN,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        );
    }
    let info = |id: &str| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-09-29T00:00:00Z"});
    match model {
        Some("claude-nope") => error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "model: claude-nope",
        ),
        Some(id) => json_response(StatusCode::OK, info(id)),
        None => json_response(
            StatusCode::OK,
            json!({"data": [info("claude-sonnet-4-5")], "has_more": false,
                   "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"}),
        ),
    }
}

/// Anthropic's Messages API: a `message`, or with `stream: true` its event stream; model
/// `fail-401` gets Anthropic's authentication error. Usage reports [`PROMPT_TOKENS`] input
/// tokens plus [`ANTHROPIC_CACHE_READ`] read from the cache, and [`COMPLETION_TOKENS`]. With
/// tools it calls the first one; given a tool result, it answers with it.
pub(super) fn anthropic_answer(headers: &HeaderMap, body: &Value) -> MockResponse {
    let model = body["model"].as_str().unwrap_or_default();
    if model == "fail-401" || headers.get("x-api-key").is_none() {
        return anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    let last_blocks = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .cloned()
        .unwrap_or_default();
    let result = last_blocks.iter().find(|b| b["type"] == "tool_result");
    let tool = body["tools"][0]["name"].as_str();
    let (block, stop_reason) = if let Some(result) = result {
        (
            json!({"type": "text", "text": format!("The tool said: {}", result["content"])}),
            "end_turn",
        )
    } else if let Some(tool) = tool {
        (
            json!({"type": "tool_use", "id": "toolu_mock", "name": tool,
                   "input": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()}),
            "tool_use",
        )
    } else {
        (
            json!({"type": "text", "text": "Hello from the mock upstream"}),
            "end_turn",
        )
    };
    if body["stream"] != json!(true) {
        let mut message = fixture("anthropic/message.json");
        message["model"] = json!(model);
        message["content"] = json!([block]);
        message["stop_reason"] = json!(stop_reason);
        if model == "no-usage" {
            message.as_object_mut().unwrap().remove("usage");
        }
        return json_response(StatusCode::OK, message);
    }
    let (start, delta) = if block["type"] == "tool_use" {
        (
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
            json!({"type": "input_json_delta", "partial_json": TOOL_ARGUMENTS}),
        )
    } else {
        (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": block["text"]}),
        )
    };
    let mut events: Vec<(String, Value)> = fixture("anthropic/stream.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|event| (event["type"].as_str().unwrap().to_owned(), event.clone()))
        .collect();
    for (kind, event) in &mut events {
        match kind.as_str() {
            "message_start" => event["message"]["model"] = json!(model),
            "content_block_start" => event["content_block"] = start.clone(),
            "content_block_delta" => event["delta"] = delta.clone(),
            "message_delta" => event["delta"]["stop_reason"] = json!(stop_reason),
            _ => {}
        }
        if model == "no-usage" {
            // A compatible server that leaves the usage out.
            if let Some(object) = event.as_object_mut() {
                object.remove("usage");
            }
            if let Some(message) = event["message"].as_object_mut() {
                message.remove("usage");
            }
        }
    }
    sse_response(&events)
}

/// Anthropic's error shape.
pub(super) fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> MockResponse {
    let mut error = fixture("anthropic/error.json");
    error["error"]["type"] = json!(kind);
    error["error"]["message"] = json!(message);
    json_response(status, error)
}
