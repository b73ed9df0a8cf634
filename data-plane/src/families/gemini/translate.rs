//! `/v1/chat/completions` on a Google provider: the OpenAI request becomes a Gemini
//! `generateContent` request (the model goes in the URL, never the body), and Gemini's
//! candidates become `chat.completion` choices. System prompts, multi-turn conversations,
//! inline images, function tools and calls, stop sequences, sampling, JSON output, stop
//! reasons and usage (cached and thinking tokens) carry over; anything else is refused (400).
//!
//! Gemini 3 models sign their function calls (`thoughtSignature`) and refuse a later turn that
//! replays a call without its signature. OpenAI's tool call has no place for it, so it rides
//! in the tool call's id, which clients send back verbatim, and is restored from there.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::Gemini;
use crate::answers::Usage;
use crate::error_response::GatewayError;
use crate::families::translation::{
    ChatChunks, ChatTranslation, ChunkIdentity, Image, StreamEvents, ToolChoice, arguments_of,
    choice, content_parts, function_tools, image_of, push_turn, refuse, refuse_untranslated,
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
    "n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "response_format",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];

/// Joins a tool call's own id and the signature Gemini gave the call.
const SIGNATURE_MARK: &str = ".sig.";

impl ChatTranslation for Gemini {
    fn family(&self) -> &'static str {
        "Gemini"
    }

    fn request(
        &self,
        chat: &Value,
        _upstream_model: &str,
        _default_max_tokens: u64,
    ) -> Result<Value, GatewayError> {
        request(chat)
    }

    fn operation(&self, stream: bool) -> Operation {
        if stream {
            Operation::StreamGenerateContent
        } else {
            Operation::GenerateContent
        }
    }

    fn usage(&self, answer: &Value) -> Option<Usage> {
        super::usage::usage_of(&answer["usageMetadata"])
    }

    fn response(&self, answer: &Value, usage: &Usage, chunk: &ChunkIdentity) -> Value {
        response(answer, usage, chunk)
    }

    fn stream_events(&self) -> Box<dyn StreamEvents> {
        Box::new(GeminiEvents::default())
    }
}

/// The `generateContent` request for an OpenAI chat request.
pub fn request(chat: &Value) -> Result<Value, GatewayError> {
    let object = chat
        .as_object()
        .ok_or_else(|| refuse("the request body must be a JSON object"))?;
    refuse_untranslated(
        object,
        TRANSLATED,
        "a Gemini",
        "/v1beta/models/{model}:generateContent",
    )?;
    if object.get("parallel_tool_calls") == Some(&json!(false)) {
        return Err(refuse(
            "`parallel_tool_calls: false` cannot be translated for a Gemini model: Gemini decides how many calls to make",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Gemini answers a call by the function's name, so each call id's name is remembered.
    let mut call_names: HashMap<String, Value> = HashMap::new();
    for message in object["messages"].as_array().into_iter().flatten() {
        let (role, parts) = match message["role"].as_str().unwrap_or_default() {
            "system" | "developer" => {
                system.push(text_of(&message["content"])?);
                continue;
            }
            "user" => ("user", user_parts(&message["content"])?),
            "assistant" => {
                let mut parts = user_parts(&message["content"])?;
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let id = call["id"].as_str().unwrap_or_default();
                    let name = call["function"]["name"].clone();
                    call_names.insert(id.to_owned(), name.clone());
                    let mut part =
                        json!({"functionCall": {"name": name, "args": arguments_of(call)?}});
                    if let Some((_, signature)) = id.split_once(SIGNATURE_MARK) {
                        part["thoughtSignature"] = json!(signature);
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                let name = call_names.get(id).cloned().ok_or_else(|| {
                        refuse(format!(
                            "the tool message for `{id}` answers no tool call of an earlier assistant turn; Gemini needs the call to name the function"
                        ))
                    })?;
                let text = text_of(&message["content"])?;
                // Gemini wants an object; a JSON object result goes as is, anything else wrapped.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({"content": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => {
                return Err(refuse(format!(
                    "message role `{other}` has no Gemini equivalent"
                )));
            }
        };
        if parts.is_empty() {
            continue;
        }
        push_turn(&mut contents, role, "parts", parts);
    }
    if contents.is_empty() {
        return Err(refuse(
            "`messages` needs at least one user or assistant turn",
        ));
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    let config = generation_config(object)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = object.get("tools").and_then(Value::as_array) {
        let declarations = function_tools(tools, "Gemini", |name, parameters| {
            let mut declaration = json!({"name": name});
            // Full JSON Schema, as OpenAI's tools carry it.
            if let Some(parameters) = parameters {
                declaration["parametersJsonSchema"] = parameters.clone();
            }
            declaration
        })?;
        out.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    let calling = tool_choice(object.get("tool_choice"))?.map(|choice| match choice {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Named(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    });
    if let Some(calling) = calling {
        out.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": calling}),
        );
    }
    Ok(Value::Object(out))
}

fn generation_config(object: &Map<String, Value>) -> Result<Map<String, Value>, GatewayError> {
    let mut config = Map::new();
    let present = |key: &str| object.get(key).filter(|v| !v.is_null());
    if let Some(max) = present("max_completion_tokens").or_else(|| present("max_tokens")) {
        config.insert("maxOutputTokens".into(), max.clone());
    }
    for (ours, theirs) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ] {
        if let Some(value) = present(ours) {
            config.insert(theirs.into(), value.clone());
        }
    }
    if let Some(stops) = stop_sequences(object.get("stop")) {
        config.insert("stopSequences".into(), stops);
    }
    if let Some(format) = present("response_format") {
        match format["type"].as_str() {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                config.insert(
                    "responseJsonSchema".into(),
                    format["json_schema"]["schema"].clone(),
                );
            }
            other => {
                return Err(refuse(format!(
                    "response_format `{}` has no Gemini equivalent",
                    other.unwrap_or("?")
                )));
            }
        }
    }
    Ok(config)
}

/// A user or assistant turn's parts: text and inline images.
fn user_parts(content: &Value) -> Result<Vec<Value>, GatewayError> {
    content_parts(content)?
        .iter()
        .map(|part| match part["type"].as_str() {
            Some("text") => Ok(json!({"text": part["text"]})),
            Some("image_url") => match image_of(part)? {
                Image::Inline { media_type, data } => {
                    Ok(json!({"inlineData": {"mimeType": media_type, "data": data}}))
                }
                Image::Url(_) => Err(refuse(
                    "Gemini takes images inline: send the image as a base64 data URL",
                )),
            },
            other => Err(refuse(format!(
                "content part `{}` has no Gemini equivalent",
                other.unwrap_or("?")
            ))),
        })
        .filter(|part| {
            // Empty text (an assistant turn that only called tools) is no part at all.
            !matches!(part, Ok(p) if p["text"] == "")
        })
        .collect()
}

/// OpenAI's finish reason for Gemini's, given whether the candidate called a function.
fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// A tool call for Gemini's `functionCall` part; `number` makes the id unique when Gemini
/// gives none.
fn tool_call(part: &Value, completion_id: &str, number: usize) -> Value {
    let call = &part["functionCall"];
    let mut id = match call["id"].as_str() {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!(
            "call_{}_{number}",
            completion_id.trim_start_matches("chatcmpl-")
        ),
    };
    if let Some(signature) = part["thoughtSignature"].as_str() {
        id.push_str(SIGNATURE_MARK);
        id.push_str(signature);
    }
    let arguments = if call["args"].is_object() {
        call["args"].to_string()
    } else {
        "{}".to_owned()
    };
    json!({"id": id, "type": "function",
           "function": {"name": call["name"], "arguments": arguments}})
}

/// The text of a candidate's parts, leaving out thought summaries.
fn visible_text(part: &Value) -> Option<&str> {
    (part["thought"] != json!(true))
        .then(|| part["text"].as_str())
        .flatten()
}

/// The `chat.completion` for Gemini's answer.
pub fn response(answer: &Value, usage: &Usage, chunk: &ChunkIdentity) -> Value {
    let mut choices = Vec::new();
    let mut calls = 0;
    for (position, candidate) in answer["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(piece) = visible_text(part) {
                text.push_str(piece);
            } else if part["functionCall"].is_object() {
                tool_calls.push(tool_call(part, &chunk.id, calls));
                calls += 1;
            }
        }
        let reason = finish_reason(
            candidate["finishReason"].as_str().unwrap_or_default(),
            !tool_calls.is_empty(),
        );
        let index = candidate["index"].as_u64().unwrap_or(position as u64);
        choices.push(choice(index, text, tool_calls, reason));
    }
    if choices.is_empty() {
        // A prompt Gemini blocked has no candidates, only feedback.
        choices.push(choice(0, String::new(), Vec::new(), "content_filter"));
    }
    chunk.completion(choices, usage)
}

/// A streamed Gemini answer: every event is a whole `GenerateContentResponse` with the
/// candidates' new parts; function calls arrive whole; the last events carry the finish
/// reason and the complete usage.
#[derive(Default)]
pub struct GeminiEvents {
    /// Candidates that have had their role chunk, with the tool calls each made so far.
    started: Vec<(u64, usize)>,
    calls: usize,
}

impl GeminiEvents {
    /// The tool calls candidate `index` has made, starting it with a role chunk if new.
    fn start(&mut self, index: u64, out: &mut ChatChunks) -> usize {
        if let Some(position) = self.started.iter().position(|(i, _)| *i == index) {
            return position;
        }
        out.delta(index, json!({"role": "assistant", "content": ""}), None);
        self.started.push((index, 0));
        self.started.len() - 1
    }
}

impl StreamEvents for GeminiEvents {
    fn event(&mut self, event: &Value, out: &mut ChatChunks) {
        if event["error"].is_object() {
            out.error(&event["error"]["message"], &event["error"]["status"]);
            return;
        }
        if let Some(usage) = super::usage::usage_of(&event["usageMetadata"]) {
            *out.usage_mut() = usage;
        }
        let candidates = event["candidates"].as_array();
        for (position, candidate) in candidates.into_iter().flatten().enumerate() {
            let index = candidate["index"].as_u64().unwrap_or(position as u64);
            let slot = self.start(index, out);
            for part in candidate["content"]["parts"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(text) = visible_text(part) {
                    if !text.is_empty() {
                        out.delta(index, json!({"content": text}), None);
                    }
                } else if part["functionCall"].is_object() {
                    let mut call = tool_call(part, &out.identity().id.clone(), self.calls);
                    self.calls += 1;
                    call["index"] = json!(self.started[slot].1);
                    self.started[slot].1 += 1;
                    out.delta(index, json!({"tool_calls": [call]}), None);
                }
            }
            if let Some(reason) = candidate["finishReason"].as_str() {
                let finish = finish_reason(reason, self.started[slot].1 > 0);
                out.delta(index, json!({}), Some(finish));
                out.ended_well();
            }
        }
        if candidates.is_none_or(Vec::is_empty)
            && event["promptFeedback"]["blockReason"].is_string()
        {
            self.start(0, out);
            out.delta(0, json!({}), Some("content_filter"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::translation::translate_stream_for_test;
    use sluice_shared::error_code::ErrorCode;

    #[test]
    fn system_turns_images_tools_and_config_translate() {
        let chat = json!({
            "model": "gemini", "max_tokens": 100, "stop": ["END"], "temperature": 0.2,
            "top_p": 0.9, "n": 2, "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                "schema": {"type": "object", "additionalProperties": false}}},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1.sig.U0lH",
                    "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"png\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1.sig.U0lH", "content": "an image format"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}}
        });
        let out = request(&chat).unwrap();
        assert!(out.get("model").is_none(), "the model goes in the URL");
        assert_eq!(
            out["systemInstruction"]["parts"][0]["text"],
            "Be brief.\n\nUse tools."
        );
        let contents = out["contents"].as_array().unwrap();
        let roles: Vec<&str> = contents
            .iter()
            .map(|c| c["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["user", "model", "user"],
            "the tool result and the next user turn merge"
        );
        assert_eq!(
            contents[0]["parts"][1]["inlineData"],
            json!({"mimeType": "image/png", "data": "iVBOR"})
        );
        assert_eq!(
            contents[1]["parts"],
            json!([{"functionCall": {"name": "lookup", "args": {"q": "png"}}, "thoughtSignature": "U0lH"}])
        );
        assert_eq!(
            contents[2]["parts"][0]["functionResponse"],
            json!({"name": "lookup", "response": {"content": "an image format"}})
        );
        assert_eq!(contents[2]["parts"][1]["text"], "Thanks");
        let config = &out["generationConfig"];
        assert_eq!(config["maxOutputTokens"], 100);
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(config["topP"], 0.9);
        assert_eq!(config["candidateCount"], 2);
        assert_eq!(config["seed"], 7);
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(config["responseJsonSchema"]["additionalProperties"], false);
        assert_eq!(
            out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["properties"]["q"]["type"],
            "string"
        );
        assert_eq!(
            out["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["lookup"]})
        );
    }

    #[test]
    fn what_cannot_be_translated_is_refused() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in [
            ("logprobs", json!(true)),
            ("user", json!("u-1")),
            ("parallel_tool_calls", json!(false)),
            ("response_format", json!({"type": "grammar"})),
        ] {
            let mut chat = base.clone();
            chat[key] = value;
            let error = request(&chat).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest);
            assert!(error.message.contains(key), "{}", error.message);
        }
        let url_image = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
        assert!(request(&url_image).unwrap_err().message.contains("base64"));
        let orphan = json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_9", "content": "42"}]});
        assert!(request(&orphan).unwrap_err().message.contains("call_9"));
    }

    #[test]
    fn answers_come_back_as_chat_completions() {
        let answer = json!({"candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": true},
                {"text": "Looking"},
                {"functionCall": {"name": "lookup", "args": {"q": "x"}}, "thoughtSignature": "U0lH"}]},
            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 4,
                "candidatesTokenCount": 6, "thoughtsTokenCount": 3, "totalTokenCount": 19}});
        let usage =
            crate::families::gemini::usage::usage_of(&answer["usageMetadata"]).unwrap_or_default();
        let identity = ChunkIdentity::new("req1", "gemini", 7);
        let chat = response(&answer, &usage, &identity);
        let choice = &chat["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Looking");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_req1_0.sig.U0lH");
        assert_eq!(call["function"]["arguments"], "{\"q\":\"x\"}");
        assert_eq!(
            chat["usage"],
            json!({"prompt_tokens": 10, "completion_tokens": 9, "total_tokens": 19,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 3}})
        );
        // The call goes back to Gemini with its signature.
        let next = json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
            chat["choices"][0]["message"].clone(),
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"answer\": 42}"}]});
        let replay = request(&next).unwrap();
        assert_eq!(
            replay["contents"][1]["parts"][1]["thoughtSignature"],
            "U0lH"
        );
        assert_eq!(
            replay["contents"][2]["parts"][0]["functionResponse"]["response"],
            json!({"answer": 42})
        );

        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}});
        let chat = response(&blocked, &Usage::default(), &identity);
        assert_eq!(chat["choices"][0]["finish_reason"], "content_filter");
        let stopped = json!({"candidates": [{"content": {"parts": [{"text": "a"}]},
            "finishReason": "MAX_TOKENS"}]});
        let chat = response(&stopped, &Usage::default(), &identity);
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn streams_become_chunks_with_calls_and_usage() {
        let stream = concat!(
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Let me \"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"check.\"},{\"functionCall\":{\"name\":\"lookup\",\"args\":{\"q\":\"x\"}}}]},\"index\":0}]}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":8,\"thoughtsTokenCount\":2,\"totalTokenCount\":15}}\r\n\r\n",
        );
        let chunks = translate_stream_for_test(&super::Gemini, stream.as_bytes(), true);
        let delta = |i: usize| &chunks[i]["choices"][0]["delta"];
        assert_eq!(delta(0)["role"], "assistant");
        assert_eq!(delta(1)["content"], "Let me ");
        assert_eq!(delta(2)["content"], "check.");
        let call = &delta(3)["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert_eq!(call["function"]["name"], "lookup");
        assert_eq!(call["function"]["arguments"], "{\"q\":\"x\"}");
        assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks[5]["usage"]["prompt_tokens"], 5);
        assert_eq!(chunks[5]["usage"]["completion_tokens"], 10);
        assert_eq!(
            chunks[5]["usage"]["completion_tokens_details"]["reasoning_tokens"],
            2
        );
        assert_eq!(chunks.len(), 6);
    }
}
