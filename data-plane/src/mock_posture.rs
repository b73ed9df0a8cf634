//! Answers for projects in MOCK posture: deterministic, in OpenAI's exact response format
//! (JSON, or SSE chunks ending in a usage chunk and `[DONE]`), with no upstream connection and
//! no cost.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Token counts Sluice estimates itself: about four characters per token, OpenAI's rule of
/// thumb for English text (at least 1).
pub fn estimate_tokens(text_chars: usize) -> u64 {
    (text_chars as u64).div_ceil(4).max(1)
}

/// Characters of every string under `messages` (content parts included).
pub fn message_chars(messages: &Value) -> usize {
    match messages {
        Value::String(text) => text.chars().count(),
        Value::Array(items) => items.iter().map(message_chars).sum(),
        Value::Object(map) => map.values().map(message_chars).sum(),
        _ => 0,
    }
}

/// [`message_chars`] of the JSON in `raw`, counted as it is read rather than over a parsed
/// value (a stream's estimate is spooled before its first byte leaves); `None` if it is not
/// JSON.
pub fn message_chars_of(raw: &[u8]) -> Option<usize> {
    use serde::de::DeserializeSeed;
    let mut reader = serde_json::Deserializer::from_slice(raw);
    let chars = StringChars.deserialize(&mut reader).ok()?;
    reader.end().ok()?;
    Some(chars)
}

/// Sums the characters of every string value (not object keys) of whatever it reads.
#[derive(Clone, Copy)]
struct StringChars;

impl<'de> serde::de::DeserializeSeed<'de> for StringChars {
    type Value = usize;

    fn deserialize<D: serde::Deserializer<'de>>(self, reader: D) -> Result<usize, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StringChars {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_str<E>(self, text: &str) -> Result<usize, E> {
        Ok(text.chars().count())
    }

    fn visit_bool<E>(self, _: bool) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_i64<E>(self, _: i64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_u64<E>(self, _: u64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_f64<E>(self, _: f64) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_unit<E>(self) -> Result<usize, E> {
        Ok(0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<usize, A::Error> {
        let mut chars = 0;
        while let Some(more) = items.next_element_seed(self)? {
            chars += more;
        }
        Ok(chars)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut chars = 0;
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            chars += map.next_value_seed(self)?;
        }
        Ok(chars)
    }
}

pub struct MockAnswer {
    pub body: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

fn reply_text(messages: &Value) -> String {
    let digest = Sha256::digest(messages.to_string().as_bytes());
    format!(
        "This is a mock response from Sluice: the project is in MOCK posture, so no provider was \
         called and nothing was spent. Request digest {}.",
        hex::encode(&digest[..4])
    )
}

/// The mock reply to `messages` and the token counts both answer formats report.
fn reply_and_counts(messages: &Value) -> (String, u64, u64) {
    let text = reply_text(messages);
    let prompt_tokens = estimate_tokens(message_chars(messages));
    let completion_tokens = estimate_tokens(text.chars().count());
    (text, prompt_tokens, completion_tokens)
}

pub fn chat_completion(
    messages: &Value,
    model: &str,
    request_id: &str,
    created: i64,
) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(messages);
    let answer = json!({
        "id": format!("chatcmpl-{request_id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage(prompt_tokens, completion_tokens),
        "system_fingerprint": "sluice-mock"
    });
    MockAnswer {
        body: answer.to_string(),
        prompt_tokens,
        completion_tokens,
    }
}

/// The same answer as server-sent events: a role chunk, content chunks, a finish chunk, a
/// usage chunk (empty `choices`, as OpenAI sends with `include_usage`) and `[DONE]`.
pub fn chat_completion_stream(
    messages: &Value,
    model: &str,
    request_id: &str,
    created: i64,
) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(messages);
    let id = format!("chatcmpl-{request_id}");
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "sluice-mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for word in text.split_inclusive(' ') {
        events.push(chunk(json!({"content": word}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push(json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "system_fingerprint": "sluice-mock", "choices": [],
        "usage": usage(prompt_tokens, completion_tokens)
    }));
    let mut sse = String::new();
    for event in events {
        sse.push_str("data: ");
        sse.push_str(&event.to_string());
        sse.push_str("\n\n");
    }
    sse.push_str("data: [DONE]\n\n");
    MockAnswer {
        body: sse,
        prompt_tokens,
        completion_tokens,
    }
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// A Responses API object (`"object": "response"`) in OpenAI's shape; `status` and `usage`
/// vary between the stream's first event and its last.
fn response_object(
    id: &str,
    message_id: &str,
    model: &str,
    created: i64,
    text: Option<&str>,
    tokens: Option<(u64, u64)>,
) -> Value {
    let output = match text {
        Some(text) => json!([{
            "type": "message", "id": message_id, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]
        }]),
        None => json!([]),
    };
    let usage = tokens.map_or(Value::Null, |(input, output)| {
        json!({
            "input_tokens": input, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input + output
        })
    });
    json!({
        "id": id, "object": "response", "created_at": created,
        "status": if text.is_some() { "completed" } else { "in_progress" },
        "error": null, "incomplete_details": null, "model": model,
        "output": output, "usage": usage
    })
}

/// The MOCK answer on `/v1/responses`.
pub fn response(input: &Value, model: &str, request_id: &str, created: i64) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(input);
    let body = response_object(
        &format!("resp_{request_id}"),
        &format!("msg_{request_id}"),
        model,
        created,
        Some(&text),
        Some((prompt_tokens, completion_tokens)),
    );
    MockAnswer {
        body: body.to_string(),
        prompt_tokens,
        completion_tokens,
    }
}

/// The MOCK answer on `/v1/responses` with `stream: true`: the Responses API's event
/// sequence, from `response.created` to `response.completed` (which carries the usage).
pub fn response_stream(input: &Value, model: &str, request_id: &str, created: i64) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(input);
    let id = format!("resp_{request_id}");
    let item = format!("msg_{request_id}");
    let pending = response_object(&id, &item, model, created, None, None);
    let done = response_object(
        &id,
        &item,
        model,
        created,
        Some(&text),
        Some((prompt_tokens, completion_tokens)),
    );
    let part = json!({"type": "output_text", "text": text, "annotations": []});
    let events = [
        json!({"type": "response.created", "response": pending}),
        json!({"type": "response.in_progress", "response": pending}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "message", "id": item, "status": "in_progress", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": item, "output_index": 0, "content_index": 0,
               "part": {"type": "output_text", "text": "", "annotations": []}}),
        json!({"type": "response.output_text.delta", "item_id": item, "output_index": 0, "content_index": 0, "delta": text}),
        json!({"type": "response.output_text.done", "item_id": item, "output_index": 0, "content_index": 0, "text": text}),
        json!({"type": "response.content_part.done", "item_id": item, "output_index": 0, "content_index": 0, "part": part}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]}),
        json!({"type": "response.completed", "response": done}),
    ];
    let mut body = String::new();
    for (sequence, mut event) in events.into_iter().enumerate() {
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        event["sequence_number"] = json!(sequence);
        body.push_str(&format!("event: {kind}\ndata: {event}\n\n"));
    }
    MockAnswer {
        body,
        prompt_tokens,
        completion_tokens,
    }
}

/// The MOCK answer on Anthropic's `/v1/messages`, in its Messages format.
pub fn anthropic_message(messages: &Value, model: &str, request_id: &str) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(messages);
    let body = json!({
        "id": format!("msg_{request_id}"), "type": "message", "role": "assistant",
        "model": model, "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}
    });
    MockAnswer {
        body: body.to_string(),
        prompt_tokens,
        completion_tokens,
    }
}

/// The same as Anthropic's event stream: `message_start`, one text block, `message_delta`
/// with the output usage, `message_stop`.
pub fn anthropic_message_stream(messages: &Value, model: &str, request_id: &str) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(messages);
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": format!("msg_{request_id}"), "type": "message", "role": "assistant",
            "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": completion_tokens}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let body = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    MockAnswer {
        body,
        prompt_tokens,
        completion_tokens,
    }
}

/// A Gemini `GenerateContentResponse`.
fn gemini_response(text: &str, model: &str, usage: Value, finished: bool) -> Value {
    let mut candidate =
        json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if finished {
        candidate["finishReason"] = json!("STOP");
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model})
}

fn gemini_usage(prompt: u64, candidates: Option<u64>) -> Value {
    match candidates {
        Some(candidates) => json!({"promptTokenCount": prompt,
            "candidatesTokenCount": candidates, "totalTokenCount": prompt + candidates}),
        None => json!({"promptTokenCount": prompt, "totalTokenCount": prompt}),
    }
}

/// The MOCK answer on Gemini's `generateContent`.
pub fn gemini(contents: &Value, model: &str) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(contents);
    let body = gemini_response(
        &text,
        model,
        gemini_usage(prompt_tokens, Some(completion_tokens)),
        true,
    );
    MockAnswer {
        body: body.to_string(),
        prompt_tokens,
        completion_tokens,
    }
}

/// The same on `streamGenerateContent?alt=sse`: the text in two chunks, the last with the
/// finish reason and the full usage.
pub fn gemini_stream(contents: &Value, model: &str) -> MockAnswer {
    let (text, prompt_tokens, completion_tokens) = reply_and_counts(contents);
    let split = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(text.len(), |(at, _)| at);
    let (first, second) = text.split_at(split);
    let chunks = [
        gemini_response(first, model, gemini_usage(prompt_tokens, None), false),
        gemini_response(
            second,
            model,
            gemini_usage(prompt_tokens, Some(completion_tokens)),
            true,
        ),
    ];
    let body = chunks
        .iter()
        .map(|chunk| format!("data: {chunk}\r\n\r\n"))
        .collect();
    MockAnswer {
        body,
        prompt_tokens,
        completion_tokens,
    }
}

/// Width of a MOCK embedding unless the request asks for `dimensions` (OpenAI's
/// text-embedding-3-small default).
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 1536;
pub const MAX_EMBEDDING_DIMENSIONS: usize = 4096;

/// Deterministic unit vectors, one per input, in OpenAI's embeddings format: the same input
/// always embeds the same, so tests and demos can compare them.
pub fn embeddings(inputs: &[String], model: &str, dimensions: usize) -> MockAnswer {
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let mut vector = Vec::with_capacity(dimensions);
            let mut block = 0u32;
            while vector.len() < dimensions {
                let digest = Sha256::new()
                    .chain_update(input.as_bytes())
                    .chain_update(block.to_le_bytes())
                    .finalize();
                vector.extend(
                    digest
                        .iter()
                        .map(|byte| f64::from(*byte) / 127.5 - 1.0)
                        .take(dimensions - vector.len()),
                );
                block += 1;
            }
            let norm = vector
                .iter()
                .map(|x| x * x)
                .sum::<f64>()
                .sqrt()
                .max(f64::EPSILON);
            let vector: Vec<f64> = vector
                .iter()
                .map(|x| (x / norm * 1e6).round() / 1e6)
                .collect();
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    let prompt_tokens = inputs
        .iter()
        .map(|input| estimate_tokens(input.chars().count()))
        .sum();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    MockAnswer {
        body: answer.to_string(),
        prompt_tokens,
        completion_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_while_reading_matches_counting_the_parsed_value() {
        for raw in [
            r#"[{"role":"user","content":"héllo \"wörld\" \u00e9"}]"#,
            r#"[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:x"}}],"n":1.5,"b":true,"z":null}]"#,
            r#""plain""#,
            "[]",
        ] {
            let parsed: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(
                message_chars_of(raw.as_bytes()),
                Some(message_chars(&parsed)),
                "{raw}"
            );
        }
        assert_eq!(message_chars_of(b"[1, 2"), None);
        assert_eq!(message_chars_of(b"[] trailing"), None);
    }

    fn body() -> Value {
        serde_json::from_str(r#"[{"role":"user","content":"Hello there"}]"#).unwrap()
    }

    #[test]
    fn answers_are_deterministic_and_well_formed() {
        let a = chat_completion(&body(), "m", "r1", 1);
        let b = chat_completion(&body(), "m", "r1", 1);
        assert_eq!(a.body, b.body);
        let parsed: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(parsed["object"], "chat.completion");
        assert_eq!(parsed["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            parsed["usage"]["prompt_tokens"],
            estimate_tokens("userHello there".len())
        );
    }

    #[test]
    fn streams_end_with_usage_and_done() {
        let answer = chat_completion_stream(&body(), "m", "r1", 1);
        let events: Vec<&str> = answer
            .body
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .collect();
        assert_eq!(*events.last().unwrap(), "data: [DONE]");
        let usage: Value =
            serde_json::from_str(events[events.len() - 2].trim_start_matches("data: ")).unwrap();
        assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
        assert_eq!(
            usage["usage"]["completion_tokens"],
            answer.completion_tokens
        );
        let text: String = events[1..events.len() - 3]
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(e.trim_start_matches("data: ")).unwrap()["choices"][0]
                    ["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let whole: Value =
            serde_json::from_str(&chat_completion(&body(), "m", "r1", 1).body).unwrap();
        assert_eq!(text, whole["choices"][0]["message"]["content"]);
    }
}
