//! `/v1/chat/completions` on a provider family that does not speak OpenAI's chat format.
//! Each such family implements [`ChatTranslation`] in its own module (`families::*`) and
//! hands it out through `Family::chat_translation`; the hot path never names a family. Whole
//! answers come back as one `chat.completion`, their usage read from the same parse; streams
//! are read by [`TranslatedEvents`], which parses each upstream event once for the family's
//! [`StreamEvents`] to turn into `chat.completion.chunk`s and usage, and ends with the usage
//! chunk (when asked for) and `[DONE]`.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{Value, json};
use sluice_shared::error_code::ErrorCode;

use crate::answers::{StreamMeter, StreamReader, Usage};
use crate::error_response::GatewayError;
use crate::operation::Operation;

/// A provider family reached from OpenAI's chat format.
pub trait ChatTranslation: Sync {
    /// The family's name, for messages.
    fn family(&self) -> &'static str;

    /// The family's request for an OpenAI chat request, or a 400 naming what cannot be
    /// translated.
    fn request(
        &self,
        chat: &Value,
        upstream_model: &str,
        default_max_tokens: u64,
    ) -> Result<Value, GatewayError>;

    /// The family's own operation the translated request goes to.
    fn operation(&self, stream: bool) -> Operation;

    /// The usage a whole answer reports (read from the same parse as its response).
    fn usage(&self, answer: &Value) -> Option<Usage>;

    /// The `chat.completion` for a whole answer (its usage already read).
    fn response(&self, answer: &Value, usage: &Usage, chunk: &ChunkIdentity) -> Value;

    /// A fresh reader for one streamed answer's events.
    fn stream_events(&self) -> Box<dyn StreamEvents>;
}

/// Turns a family's stream events, one JSON `data:` payload at a time, into chunks.
pub trait StreamEvents: Send {
    fn event(&mut self, event: &Value, out: &mut ChatChunks);
}

/// What every chunk and completion of one answer repeats.
#[derive(Debug, Clone)]
pub struct ChunkIdentity {
    pub id: String,
    pub model: String,
    pub created: i64,
}

impl ChunkIdentity {
    pub fn new(request_id: &str, model: &str, created: i64) -> Self {
        Self {
            id: format!("chatcmpl-{request_id}"),
            model: model.to_owned(),
            created,
        }
    }

    /// A `chat.completion` with these choices and usage.
    pub fn completion(&self, choices: Vec<Value>, usage: &Usage) -> Value {
        json!({"id": self.id, "object": "chat.completion", "created": self.created,
               "model": self.model, "choices": choices, "usage": openai_usage(usage)})
    }
}

/// OpenAI's `usage` object: prompt tokens include cached ones, completion tokens include
/// reasoning ones.
pub fn openai_usage(usage: &Usage) -> Value {
    json!({"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
           "total_tokens": usage.input_tokens + usage.output_tokens,
           "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
           "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}})
}

/// An assistant message with text and tool calls, as a choice of a `chat.completion`.
pub fn choice(index: u64, text: String, tool_calls: Vec<Value>, finish_reason: &str) -> Value {
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    json!({"index": index, "message": message, "logprobs": null, "finish_reason": finish_reason})
}

/// A 400 naming what cannot be translated.
pub fn refuse(message: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorCode::InvalidRequest, message)
}

/// Refuses any field outside `translated` (gateway-control fields are removed elsewhere).
pub fn refuse_untranslated(
    object: &serde_json::Map<String, Value>,
    translated: &[&str],
    family: &str,
    native: &str,
) -> Result<(), GatewayError> {
    for key in object.keys() {
        if !translated.contains(&key.as_str())
            && !crate::request::fields::GATEWAY_CONTROL_FIELDS.contains(&key.as_str())
        {
            return Err(refuse(format!(
                "`{key}` cannot be translated for {family} model: remove it, or call {native}"
            )));
        }
    }
    Ok(())
}

/// A system prompt's or tool result's text: a string, or its text parts joined.
pub fn text_of(content: &Value) -> Result<String, GatewayError> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("text") => Ok(part["text"].as_str().unwrap_or_default().to_owned()),
                _ => Err(refuse("only text can go in a system prompt or tool result")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        Value::Null => Ok(String::new()),
        _ => Err(refuse("`content` must be a string or a list of parts")),
    }
}

/// The parts of OpenAI content: a string is one text part.
pub fn content_parts(content: &Value) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::String(text) => Ok(vec![json!({"type": "text", "text": text})]),
        Value::Array(parts) => Ok(parts.clone()),
        Value::Null => Ok(Vec::new()),
        _ => Err(refuse("`content` must be a string or a list of parts")),
    }
}

/// An image part's `data:` URL as (media type, base64 data), or its http(s) URL.
pub enum Image<'a> {
    Inline { media_type: &'a str, data: &'a str },
    Url(&'a str),
}

pub fn image_of(part: &Value) -> Result<Image<'_>, GatewayError> {
    let url = part["image_url"]["url"].as_str().unwrap_or_default();
    if let Some(data) = url.strip_prefix("data:") {
        let (media_type, data) = data
            .split_once(";base64,")
            .ok_or_else(|| refuse("an image data URL must be base64"))?;
        Ok(Image::Inline { media_type, data })
    } else if url.starts_with("https://") || url.starts_with("http://") {
        Ok(Image::Url(url))
    } else {
        Err(refuse("an image must be a data URL or an http(s) URL"))
    }
}

/// A tool call's `arguments` string as the JSON object the other families want.
pub fn arguments_of(call: &Value) -> Result<Value, GatewayError> {
    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    serde_json::from_str(arguments)
        .map_err(|_| refuse("a tool call's `arguments` is not a JSON object"))
}

/// Appends a turn, merging it into the previous one of the same role: both families want
/// roles to alternate. `key` names the list the turn's items live in.
pub fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, items: Vec<Value>) {
    match turns.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(existing) = last[key].as_array_mut() {
                existing.extend(items);
            }
        }
        _ => turns.push(json!({"role": role, key: items})),
    }
}

/// Each function tool as the family declares it: `declare` maps the function's name and
/// parameters (JSON Schema, if given), its description is copied; other tool kinds are refused.
pub fn function_tools(
    tools: &[Value],
    family: &str,
    declare: impl Fn(&Value, Option<&Value>) -> Value,
) -> Result<Vec<Value>, GatewayError> {
    tools
        .iter()
        .map(|tool| {
            if tool["type"] != "function" {
                return Err(refuse(format!("only function tools translate to {family}")));
            }
            let function = &tool["function"];
            let parameters = Some(&function["parameters"]).filter(|p| p.is_object());
            let mut declaration = declare(&function["name"], parameters);
            if let Some(description) = function["description"].as_str() {
                declaration["description"] = json!(description);
            }
            Ok(declaration)
        })
        .collect()
}

/// OpenAI's `tool_choice`, for a family to express in its own terms.
pub enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    /// One named function.
    Named(&'a Value),
}

pub fn tool_choice(choice: Option<&Value>) -> Result<Option<ToolChoice<'_>>, GatewayError> {
    Ok(match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => Some(match mode.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(refuse(format!(
                    "tool_choice `{other}` is not one OpenAI defines"
                )));
            }
        }),
        Some(named) => Some(ToolChoice::Named(&named["function"]["name"])),
    })
}

/// `stop` as a list of sequences.
pub fn stop_sequences(stop: Option<&Value>) -> Option<Value> {
    match stop {
        Some(Value::String(stop)) => Some(json!([stop])),
        Some(Value::Array(stops)) => Some(json!(stops)),
        _ => None,
    }
}

/// The chunks of one translated stream, queued until the body sends them.
pub struct ChatChunks {
    identity: ChunkIdentity,
    include_usage: bool,
    out: VecDeque<Bytes>,
    meter: StreamMeter,
    finished: bool,
}

impl ChatChunks {
    pub fn new(identity: ChunkIdentity, include_usage: bool) -> Self {
        Self {
            identity,
            include_usage,
            out: VecDeque::new(),
            meter: StreamMeter::default(),
            finished: false,
        }
    }

    fn push(&mut self, value: &Value) {
        if !self.finished {
            self.out
                .push_back(Bytes::from(format!("data: {value}\n\n")));
        }
    }

    /// The usage the upstream reported so far; families overwrite it as their events say.
    pub fn usage_mut(&mut self) -> &mut Usage {
        self.meter.usage_mut()
    }

    /// A chunk of choice `index` with this delta and, at its end, a finish reason.
    pub fn delta(&mut self, index: u64, delta: Value, finish_reason: Option<&str>) {
        self.meter.content_chars += generated_chars(&delta);
        let chunk = json!({"id": self.identity.id, "object": "chat.completion.chunk",
            "created": self.identity.created, "model": self.identity.model,
            "choices": [{"index": index, "delta": delta, "logprobs": null,
                         "finish_reason": finish_reason}]});
        self.push(&chunk);
    }

    /// An error the upstream sent mid-stream, in OpenAI's error shape, ending the stream.
    pub fn error(&mut self, message: &Value, code: &Value) {
        let error = json!({"error": {"message": message, "type": "upstream_error", "code": code}});
        self.push(&error);
        self.finish();
    }

    /// The family's closing event: the usage chunk (when asked for) and `[DONE]`.
    pub fn close(&mut self) {
        self.ended_well();
        self.finish();
    }

    /// The upstream said its answer is complete (for a family whose stream has no closing
    /// event, the stream's end then finishes it).
    pub fn ended_well(&mut self) {
        self.meter.terminated = true;
    }

    /// The usage chunk (when asked for) and `[DONE]`, once.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        if self.include_usage {
            let usage = self.meter.usage.unwrap_or_default();
            let chunk = json!({"id": self.identity.id, "object": "chat.completion.chunk",
                "created": self.identity.created, "model": self.identity.model,
                "choices": [], "usage": openai_usage(&usage)});
            self.push(&chunk);
        }
        self.finished = true;
        self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    }

    pub fn identity(&self) -> &ChunkIdentity {
        &self.identity
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn pop(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }
}

/// Characters a chunk's delta or a completion's message generated (text and tool-call
/// arguments), for an estimate when the upstream reports no usage.
pub fn generated_chars(delta: &Value) -> usize {
    let text = delta["content"]
        .as_str()
        .map_or(0, crate::answers::chars_of);
    let arguments: usize = delta["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|call| call["function"]["arguments"].as_str())
        .map(crate::answers::chars_of)
        .sum();
    text + arguments
}

/// A translated stream's reader: each upstream event parsed once, into the family's
/// [`StreamEvents`], which make OpenAI chunks of it and note its usage; an upstream that ends
/// without its closing event still ends the client's stream well.
pub struct TranslatedEvents {
    events: Box<dyn StreamEvents>,
    chunks: ChatChunks,
}

impl TranslatedEvents {
    pub fn new(translation: &dyn ChatTranslation, chunks: ChatChunks) -> Self {
        Self {
            events: translation.stream_events(),
            chunks,
        }
    }
}

impl StreamReader for TranslatedEvents {
    fn event(&mut self, data: &[u8]) {
        if self.chunks.is_finished() {
            return;
        }
        match serde_json::from_slice::<Value>(data) {
            Ok(event) => self.events.event(&event, &mut self.chunks),
            Err(_) => self.chunks.meter.undecodable = true,
        }
    }

    fn meter(&self) -> &StreamMeter {
        &self.chunks.meter
    }

    fn translates(&self) -> bool {
        true
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        self.chunks.pop()
    }

    /// A stream that ended well closes with the usage chunk (if asked) and `[DONE]`; one that
    /// did not is ended by the caller's error event instead, so the client never reads a cut
    /// answer as a whole one.
    fn end(&mut self) {
        if self.chunks.meter.terminated && !self.chunks.meter.undecodable {
            self.chunks.finish();
        }
    }
}

/// Feeds a whole upstream stream through a family's events, byte by byte (every split of
/// the upstream's frames must translate the same), and returns the chunks before `[DONE]`.
#[cfg(test)]
pub fn translate_stream_for_test(
    translation: &dyn ChatTranslation,
    stream: &[u8],
    include_usage: bool,
) -> Vec<Value> {
    let chunks = ChatChunks::new(ChunkIdentity::new("r1", "m", 1), include_usage);
    let mut reader = TranslatedEvents::new(translation, chunks);
    let mut lines = crate::answers::SseLines::new();
    for byte in stream {
        lines.feed(std::slice::from_ref(byte), |data| reader.event(data));
    }
    reader.end();
    let mut sent: Vec<String> = std::iter::from_fn(|| reader.next_chunk())
        .map(|b| String::from_utf8(b.to_vec()).unwrap_or_default())
        .collect();
    assert_eq!(sent.pop().as_deref(), Some("data: [DONE]\n\n"));
    sent.iter()
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::families;
    use crate::routing::tables::ProviderType;

    /// Whatever a client or an upstream sends, translation answers or refuses; it never panics.
    #[test]
    fn hostile_shapes_never_panic() {
        let odd = [
            json!(null),
            json!([]),
            json!("text"),
            json!({"messages": "nope"}),
            json!({"messages": [null, 1, "x", [], {"role": 5}]}),
            json!({"messages": [{"role": "user", "content": 7}]}),
            json!({"messages": [{"role": "user", "content": [null, {"type": "image_url"}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [null, {"function": 1}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": 3, "function": {"arguments": "[1]"}}]}]}),
            json!({"messages": [{"role": "tool", "tool_call_id": null, "content": []}]}),
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [null, {"type": "function"}]}),
            json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": 5, "stop": 3}),
            json!({"messages": [{"role": "user", "content": "hi"}], "response_format": [], "n": "two"}),
        ];
        for family in [ProviderType::Anthropic, ProviderType::Google] {
            let Some(translation) = families::of(family).chat_translation() else {
                panic!("{family:?} translates chat completions");
            };
            for request in &odd {
                let _ = translation.request(request, "m", 16);
            }
            let identity = super::ChunkIdentity::new("r", "m", 0);
            for answer in &odd {
                let usage = translation.usage(answer).unwrap_or_default();
                let _ = translation.response(answer, &usage, &identity);
                let mut events = translation.stream_events();
                let mut chunks = super::ChatChunks::new(identity.clone(), true);
                events.event(answer, &mut chunks);
                for event in [
                    json!({"candidates": [{"content": {"parts": [{"functionCall": 1}, {"text": 5}]}, "index": "x"}]}),
                    json!({"type": "content_block_start", "content_block": {"type": "tool_use"}}),
                    json!({"type": "content_block_delta", "delta": {"type": "input_json_delta"}}),
                    json!({"error": "flat"}),
                ] {
                    events.event(&event, &mut chunks);
                }
                chunks.finish();
            }
        }
    }
}
