//! OpenAI's usage, as its chat completions, Responses and embeddings answers report it:
//! read straight into numbers (no JSON tree on the hot path). Streamed chat chunks carry the
//! usage in their last chunk (when asked for), Responses events in `response.completed`.

use crate::answers::json_cursor::{JsonCursor, string_chars};
use bytes::Bytes;

use crate::answers::{StreamMeter, StreamReader, Usage, UsageReader, chat_error_event};
use crate::error_response::GatewayError;

pub struct OpenAiUsage;

impl UsageReader for OpenAiUsage {
    fn whole(&self, answer: &[u8]) -> Option<Usage> {
        usage_from_answer(answer)
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(OpenAiEvents::default())
    }
}

/// The usage OpenAI's `usage` object holds (`null` holds none), walked for its counts: the
/// Responses API names them input/output, chat completions prompt/completion. `None` when
/// the input count is missing or a count is not a whole number (or null).
fn usage_of(json: &[u8]) -> Option<Usage> {
    let mut usage = Usage::default();
    let mut input = None;
    let mut well_formed = true;
    let mut read = |cursor: &mut JsonCursor<'_>| match cursor.value() {
        Some(b"null") => None,
        value => {
            let count = value.and_then(|digits| std::str::from_utf8(digits).ok()?.parse().ok());
            well_formed &= count.is_some();
            count
        }
    };
    JsonCursor::new(json).object(|key, cursor| match key {
        b"prompt_tokens" | b"input_tokens" => input = read(cursor),
        b"completion_tokens" | b"output_tokens" => {
            usage.output_tokens = read(cursor).unwrap_or(0);
        }
        b"prompt_tokens_details" | b"input_tokens_details" => {
            cursor.object(|key, field| {
                if key == b"cached_tokens" {
                    usage.cached_input_tokens = read(field).unwrap_or(0);
                }
            });
        }
        b"completion_tokens_details" | b"output_tokens_details" => {
            cursor.object(|key, field| {
                if key == b"reasoning_tokens" {
                    usage.reasoning_tokens = read(field).unwrap_or(0);
                }
            });
        }
        _ => {}
    })?;
    usage.input_tokens = input?;
    well_formed.then_some(usage)
}

/// The `usage` object of a whole answer. OpenAI writes it last, so the last unescaped
/// `"usage":` key is tried first and only its value is parsed; anything unusual falls back to
/// reading the whole answer.
pub fn usage_from_answer(body: &[u8]) -> Option<Usage> {
    usage_at_last_key(body).or_else(|| {
        let mut usage = None;
        JsonCursor::new(body).object(|key, cursor| {
            if key == b"usage" {
                usage = cursor.value();
            }
        })?;
        usage_of(usage?)
    })
}

const USAGE_KEY: &[u8] = b"\"usage\"";

/// Built once: building a searcher costs about what searching an answer for the key does.
static USAGE_KEY_FINDER: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(USAGE_KEY));

fn usage_at_last_key(body: &[u8]) -> Option<Usage> {
    let at = USAGE_KEY_FINDER.rfind(body)?;
    // An escaped quote means the text sits inside a string, not a key.
    if at > 0 && body[at - 1] == b'\\' {
        return None;
    }
    let rest = body[at + USAGE_KEY.len()..]
        .trim_ascii_start()
        .strip_prefix(b":")?;
    usage_of(JsonCursor::new(rest).value()?)
}

#[derive(Default)]
pub struct OpenAiEvents {
    meter: StreamMeter,
    /// The stream is the Responses API's (its events carry a `type`).
    responses: bool,
}

impl StreamReader for OpenAiEvents {
    /// A chat completion chunk (its text in `choices[].delta.content`, its usage in the last
    /// chunk when asked for), or a Responses API event (its text in
    /// `response.output_text.delta`, its usage in the `response.completed` event's response).
    fn event(&mut self, data: &[u8]) {
        if data == b"[DONE]" {
            self.meter.terminated = true;
            return;
        }
        let (mut usage, mut response_usage, mut kind, mut delta) = (None, None, None, None);
        let content_chars = &mut self.meter.content_chars;
        let walked = JsonCursor::new(data).object(|key, cursor| match key {
            b"usage" => usage = cursor.value().and_then(usage_of),
            b"choices" => {
                cursor.array(|choice| {
                    choice.object(|key, field| {
                        if key == b"delta" {
                            field.object(|key, text| {
                                if key == b"content" {
                                    *content_chars +=
                                        text.value().and_then(string_chars).unwrap_or(0);
                                }
                            });
                        }
                    });
                });
            }
            b"type" => kind = cursor.value(),
            b"delta" => delta = cursor.value(),
            b"response" => {
                cursor.object(|key, field| {
                    if key == b"usage" {
                        response_usage = field.value().and_then(usage_of);
                    }
                });
            }
            _ => {}
        });
        if walked.is_none() {
            self.meter.undecodable = true;
            return;
        }
        self.responses |= kind.is_some();
        if let Some(usage) = usage.or(response_usage) {
            self.meter.usage = Some(usage);
        }
        match kind {
            Some(b"\"response.output_text.delta\"") => {
                self.meter.content_chars += delta.and_then(string_chars).unwrap_or(0);
            }
            // The Responses API has no `[DONE]`: its last event says how the answer ended.
            Some(
                b"\"response.completed\"" | b"\"response.incomplete\"" | b"\"response.failed\"",
            ) => {
                self.meter.terminated = true;
            }
            _ => {}
        }
    }

    fn meter(&self) -> &StreamMeter {
        &self.meter
    }

    /// The Responses API ends a failed stream with its `error` event; the `error` member is
    /// what the SDKs raise on, for both APIs.
    fn error_event(&self, error: GatewayError, request_id: &str) -> Bytes {
        if !self.responses {
            return chat_error_event(error, request_id);
        }
        let mut body = error.body(request_id);
        body["type"] = "error".into();
        body["code"] = error.code.as_str().into();
        body["message"] = error.message.as_str().into();
        body["param"] = serde_json::Value::Null;
        Bytes::from(format!("event: error\ndata: {body}\n\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::read_stream_for_test as read_stream;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\
        \"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn usage_is_found_at_every_chunk_boundary() {
        let bytes = STREAM.as_bytes();
        for size in 1..bytes.len() {
            let meter = read_stream(&OpenAiUsage, bytes, size);
            assert_eq!(
                meter.usage,
                Some(Usage {
                    input_tokens: 12,
                    output_tokens: 3,
                    cached_input_tokens: 4,
                    reasoning_tokens: 1
                }),
                "chunk size {size}"
            );
            assert_eq!(meter.content_chars, 5);
            assert!(meter.terminated);
        }
    }

    #[test]
    fn responses_api_streams_are_metered_too() {
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n\
            event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi there\"}\n\n\
            event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\
            \"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":2},\
            \"output_tokens\":4,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":13}}}\n\n";
        let meter = read_stream(&OpenAiUsage, stream.as_bytes(), stream.len());
        assert_eq!(meter.content_chars, 8);
        assert!(meter.terminated);
        assert_eq!(
            meter.usage,
            Some(Usage {
                input_tokens: 9,
                output_tokens: 4,
                cached_input_tokens: 2,
                reasoning_tokens: 1
            })
        );
        let whole = br#"{"id":"resp_1","object":"response","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7},"user":null}"#;
        assert_eq!(usage_from_answer(whole).map(|u| u.output_tokens), Some(2));
    }

    #[test]
    fn usage_objects_read_whole_numbers_or_nothing() {
        let read = |json: &str| usage_of(json.as_bytes());
        assert_eq!(
            read(
                r#" { "prompt_tokens" : 7, "completion_tokens": null, "prompt_tokens_details": null } "#
            ),
            Some(Usage {
                input_tokens: 7,
                ..Usage::default()
            })
        );
        assert_eq!(read("null"), None);
        assert_eq!(read(r#"{"completion_tokens":3}"#), None, "no input count");
        assert_eq!(read(r#"{"prompt_tokens":null}"#), None);
        for malformed in [
            r#"{"prompt_tokens":1.5}"#,
            r#"{"prompt_tokens":"7"}"#,
            r#"{"prompt_tokens":7,"completion_tokens":-1}"#,
            r#"{"prompt_tokens":7,"completion_tokens_details":{"reasoning_tokens":true}}"#,
            r#"{"prompt_tokens":7"#,
        ] {
            assert_eq!(read(malformed), None, "{malformed}");
        }
    }

    #[test]
    fn usage_from_whole_answers() {
        let answer = br#"{"id":"x","choices":[{"message":{"content":"the \"usage\": {\"prompt_tokens\": 99}"}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
        assert_eq!(
            usage_from_answer(answer),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 3,
                ..Usage::default()
            })
        );
        // Usage first, then other fields: still found.
        let early = br#"{"usage": {"prompt_tokens": 5, "completion_tokens": 1}, "choices": []}"#;
        assert_eq!(usage_from_answer(early).map(|u| u.input_tokens), Some(5));
        // Only a quoted mention inside content: falls back and finds none.
        let mention = br#"{"choices":[{"message":{"content":"\"usage\": {}"}}]}"#;
        assert_eq!(usage_from_answer(mention), None);
        assert_eq!(usage_from_answer(b"not json"), None);
        assert_eq!(usage_from_answer(br#"{"usage": null}"#), None);
    }

    #[test]
    fn garbage_never_panics_and_reports_nothing() {
        let meter = read_stream(
            &OpenAiUsage,
            b"data: {not json\n\ndata: \xff\xfe\n\ndata: [DONE]\n",
            7,
        );
        assert!(meter.usage.is_none());
        assert!(meter.terminated);
    }
}
