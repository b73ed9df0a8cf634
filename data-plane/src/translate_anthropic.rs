//! `/v1/chat/completions` on an Anthropic provider: the OpenAI request becomes a Messages API
//! request, and Anthropic's message becomes a `chat.completion`. System prompts, multi-turn
//! conversations, images, tools and tool calls, stop sequences, stop reasons and usage carry
//! over; a field with no Anthropic equivalent is refused (400) rather than silently dropped.

use serde_json::{Map, Value, json};
use sluice_shared::error_code::ErrorCode;

use crate::chat_request::GATEWAY_CONTROL_FIELDS;
use crate::error_response::GatewayError;

/// Request fields that carry over (the rest are refused).
const TRANSLATED: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
];
fn refuse(message: String) -> GatewayError {
    GatewayError::new(ErrorCode::InvalidRequest, message)
}

/// The Messages API request for an OpenAI chat request.
pub fn request(
    chat: &Value,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Value, GatewayError> {
    let object = chat
        .as_object()
        .ok_or_else(|| refuse("the request body must be a JSON object".into()))?;
    for key in object.keys() {
        if !TRANSLATED.contains(&key.as_str()) && !GATEWAY_CONTROL_FIELDS.contains(&key.as_str()) {
            return Err(refuse(format!(
                "`{key}` cannot be translated for an Anthropic model: remove it, or call /v1/messages"
            )));
        }
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for message in object["messages"].as_array().into_iter().flatten() {
        let role = message["role"].as_str().unwrap_or_default();
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.push(text_of(&message["content"])?);
                continue;
            }
            "user" => ("user", content_blocks(&message["content"])?),
            "assistant" => {
                let mut blocks = if message["content"].is_null() {
                    Vec::new()
                } else {
                    content_blocks(&message["content"])?
                };
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(arguments).map_err(|_| {
                        refuse("a tool call's `arguments` is not a JSON object".into())
                    })?;
                    blocks.push(json!({"type": "tool_use", "id": call["id"],
                        "name": call["function"]["name"], "input": input}));
                }
                ("assistant", blocks)
            }
            "tool" => (
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": message["tool_call_id"],
                    "content": text_of(&message["content"])?}),
                ],
            ),
            other => {
                return Err(refuse(format!(
                    "message role `{other}` has no Anthropic equivalent"
                )));
            }
        };
        // Anthropic wants roles to alternate: consecutive turns of one role become one.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    if messages.is_empty() {
        return Err(refuse(
            "`messages` needs at least one user or assistant turn".into(),
        ));
    }
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| object.get(*k).and_then(Value::as_u64))
        .unwrap_or(default_max_tokens);
    let mut out = Map::new();
    out.insert("model".into(), json!(upstream_model));
    out.insert("max_tokens".into(), json!(max_tokens));
    out.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    for key in ["temperature", "top_p", "stream"] {
        if let Some(value) = object.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), value.clone());
        }
    }
    match object.get("stop") {
        Some(Value::String(stop)) => {
            out.insert("stop_sequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) => {
            out.insert("stop_sequences".into(), json!(stops));
        }
        _ => {}
    }
    if let Some(user) = object.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = object.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .map(|tool| {
                if tool["type"] != "function" {
                    return Err(refuse("only function tools translate to Anthropic".into()));
                }
                let function = &tool["function"];
                let mut translated = json!({"name": function["name"],
                "input_schema": if function["parameters"].is_object() {
                    function["parameters"].clone()
                } else {
                    json!({"type": "object"})
                }});
                if let Some(description) = function["description"].as_str() {
                    translated["description"] = json!(description);
                }
                Ok(translated)
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match object.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => Some(match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(refuse(format!(
                    "tool_choice `{other}` has no Anthropic equivalent"
                )));
            }
        }),
        Some(named) => Some(json!({"type": "tool", "name": named["function"]["name"]})),
    };
    if object.get("parallel_tool_calls") == Some(&json!(false)) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

/// A message's text: a string, or its text parts joined.
fn text_of(content: &Value) -> Result<String, GatewayError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("text") => Ok(part["text"].as_str().unwrap_or_default().to_owned()),
                _ => Err(refuse(
                    "only text can go in a system prompt or tool result".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        Value::Null => Ok(String::new()),
        _ => Err(refuse(
            "`content` must be a string or a list of parts".into(),
        )),
    }
}

/// A user or assistant turn's content blocks: text and images.
fn content_blocks(content: &Value) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::String(text) => Ok(vec![json!({"type": "text", "text": text})]),
        Value::Array(parts) => parts.iter().map(part).collect(),
        _ => Err(refuse(
            "`content` must be a string or a list of parts".into(),
        )),
    }
}

fn part(part: &Value) -> Result<Value, GatewayError> {
    match part["type"].as_str() {
        Some("text") => Ok(json!({"type": "text", "text": part["text"]})),
        Some("image_url") => {
            let url = part["image_url"]["url"].as_str().unwrap_or_default();
            if let Some(data) = url.strip_prefix("data:") {
                let (media_type, encoded) = data
                    .split_once(";base64,")
                    .ok_or_else(|| refuse("an image data URL must be base64".into()))?;
                Ok(json!({"type": "image", "source":
                    {"type": "base64", "media_type": media_type, "data": encoded}}))
            } else if url.starts_with("https://") || url.starts_with("http://") {
                Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
            } else {
                Err(refuse(
                    "an image must be a data URL or an http(s) URL".into(),
                ))
            }
        }
        other => Err(refuse(format!(
            "content part `{}` has no Anthropic equivalent",
            other.unwrap_or("?")
        ))),
    }
}

/// The `chat.completion` for Anthropic's message.
pub fn response(message: &Value, model: &str, id: &str, created: i64) -> Value {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({"id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": block["input"].to_string()}})),
            _ => {}
        }
    }
    let finish_reason = match message["stop_reason"].as_str() {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    };
    let usage = &message["usage"];
    let count = |key: &str| usage[key].as_u64().unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    let prompt = count("input_tokens") + cached + count("cache_creation_input_tokens");
    let completion = count("output_tokens");
    let mut assistant = json!({"role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null});
    if !tool_calls.is_empty() {
        assistant["tool_calls"] = Value::Array(tool_calls);
    }
    json!({
        "id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created,
        "model": model,
        "choices": [{"index": 0, "message": assistant, "logprobs": null, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_turns_images_and_tools_translate() {
        let chat = json!({
            "model": "claude", "max_tokens": 100, "stop": "END", "user": "u-1",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"q\":\"png\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "an image format"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false
        });
        let out = request(&chat, "claude-sonnet-4-5", 4096).unwrap();
        assert_eq!(out["model"], "claude-sonnet-4-5");
        assert_eq!(out["system"], "Be brief.");
        assert_eq!(out["max_tokens"], 100);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"]["user_id"], "u-1");
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(
            messages.len(),
            3,
            "tool result and next user turn merge: {messages:?}"
        );
        assert_eq!(
            messages[0]["content"][1]["source"]["media_type"],
            "image/png"
        );
        assert_eq!(messages[1]["content"][0]["type"], "tool_use");
        assert_eq!(messages[1]["content"][0]["input"]["q"], "png");
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][1]["text"], "Thanks");
        assert_eq!(
            out["tools"][0]["input_schema"]["properties"]["q"]["type"],
            "string"
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn what_cannot_be_translated_is_refused() {
        for extra in [
            json!({"n": 2}),
            json!({"logprobs": true}),
            json!({"response_format": {"type": "json_object"}}),
        ] {
            let mut chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (key, value) in extra.as_object().unwrap() {
                chat[key] = value.clone();
            }
            let error = request(&chat, "m", 16).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(
                error.message.contains("cannot be translated"),
                "{}",
                error.message
            );
        }
        let audio = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]});
        assert!(request(&audio, "m", 16).is_err());
    }

    #[test]
    fn answers_come_back_as_chat_completions() {
        let message = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": "Looking"},
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 6}});
        let chat = response(&message, "claude", "req1", 7);
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chat["choices"][0]["message"]["content"], "Looking");
        let call = &chat["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "lookup");
        assert_eq!(
            serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
            json!({"q": "x"})
        );
        assert_eq!(
            chat["usage"],
            json!({"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 4}})
        );
    }
}
