//! `/v1/chat/completions` on an Anthropic provider: the OpenAI request becomes a Messages API
//! request, and Anthropic's message becomes a `chat.completion`. System prompts, multi-turn
//! conversations, images, tools and tool calls, stop sequences, stop reasons and usage carry
//! over; a field with no Anthropic equivalent is refused (400) rather than silently dropped.

use serde_json::{Map, Value, json};

use super::Anthropic;
use crate::answers::Usage;
use crate::error_response::GatewayError;
use crate::families::translation::{
    ChatTranslation, ChunkIdentity, Image, StreamEvents, ToolChoice, arguments_of, choice,
    content_parts, function_tools, image_of, push_turn, refuse, refuse_untranslated,
    stop_sequences, text_of, tool_choice,
};
use crate::operation::Operation;

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

impl ChatTranslation for Anthropic {
    fn family(&self) -> &'static str {
        "Anthropic"
    }

    fn request(
        &self,
        chat: &Value,
        upstream_model: &str,
        default_max_tokens: u64,
    ) -> Result<Value, GatewayError> {
        request(chat, upstream_model, default_max_tokens)
    }

    fn operation(&self, _stream: bool) -> Operation {
        Operation::Messages
    }

    fn usage(&self, answer: &Value) -> Option<Usage> {
        super::usage::usage_of(&answer["usage"])
    }

    fn response(&self, answer: &Value, usage: &Usage, chunk: &ChunkIdentity) -> Value {
        response(answer, usage, chunk)
    }

    fn stream_events(&self) -> Box<dyn StreamEvents> {
        Box::new(super::stream::AnthropicEvents::default())
    }
}

/// The Messages API request for an OpenAI chat request.
pub fn request(
    chat: &Value,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Value, GatewayError> {
    let object = chat
        .as_object()
        .ok_or_else(|| refuse("the request body must be a JSON object"))?;
    refuse_untranslated(object, TRANSLATED, "an Anthropic", "/v1/messages")?;
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
                    let input = arguments_of(call)?;
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
        push_turn(&mut messages, role, "content", blocks);
    }
    if messages.is_empty() {
        return Err(refuse(
            "`messages` needs at least one user or assistant turn",
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
    if let Some(stops) = stop_sequences(object.get("stop")) {
        out.insert("stop_sequences".into(), stops);
    }
    if let Some(user) = object.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = object.get("tools").and_then(Value::as_array) {
        let tools = function_tools(tools, "Anthropic", |name, parameters| {
            json!({"name": name,
                   "input_schema": parameters.cloned().unwrap_or_else(|| json!({"type": "object"}))})
        })?;
        out.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = tool_choice(object.get("tool_choice"))?.map(|choice| match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Named(name) => json!({"type": "tool", "name": name}),
    });
    if object.get("parallel_tool_calls") == Some(&json!(false)) {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

/// A user or assistant turn's content blocks: text and images.
fn content_blocks(content: &Value) -> Result<Vec<Value>, GatewayError> {
    content_parts(content)?.iter().map(part).collect()
}

fn part(part: &Value) -> Result<Value, GatewayError> {
    match part["type"].as_str() {
        Some("text") => Ok(json!({"type": "text", "text": part["text"]})),
        Some("image_url") => Ok(match image_of(part)? {
            Image::Inline { media_type, data } => json!({"type": "image", "source":
                {"type": "base64", "media_type": media_type, "data": data}}),
            Image::Url(url) => json!({"type": "image", "source": {"type": "url", "url": url}}),
        }),
        other => Err(refuse(format!(
            "content part `{}` has no Anthropic equivalent",
            other.unwrap_or("?")
        ))),
    }
}

/// The `chat.completion` for Anthropic's message.
pub fn response(message: &Value, usage: &Usage, chunk: &ChunkIdentity) -> Value {
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
    let finish_reason = finish_reason(message["stop_reason"].as_str());
    chunk.completion(vec![choice(0, text, tool_calls, finish_reason)], usage)
}

/// OpenAI's finish reason for Anthropic's stop reason.
pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::error_code::ErrorCode;

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
        let usage =
            crate::families::anthropic::usage::usage_of(&message["usage"]).unwrap_or_default();
        let chat = response(&message, &usage, &ChunkIdentity::new("req1", "claude", 7));
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
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 0}})
        );
    }
}
