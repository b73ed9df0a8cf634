//! Anthropic's usage, as the Messages API reports it: input and cache reads and writes
//! counted apart (normalised here so input includes them all); streamed, the input in
//! `message_start` and the cumulative output in each `message_delta`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use bytes::Bytes;

use crate::answers::{StreamMeter, StreamReader, Usage, UsageReader, chars_of};
use crate::error_response::{ErrorShape, GatewayError};

pub struct AnthropicUsage;

impl UsageReader for AnthropicUsage {
    fn whole(&self, answer: &[u8]) -> Option<Usage> {
        #[derive(Deserialize)]
        struct Message {
            #[serde(default)]
            usage: Option<UsageObject>,
        }
        serde_json::from_slice::<Message>(answer)
            .ok()?
            .usage
            .map(Usage::from)
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(AnthropicEvents::default())
    }
}

/// Anthropic's `usage` object.
#[derive(Deserialize, Default)]
pub struct UsageObject {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl From<UsageObject> for Usage {
    fn from(usage: UsageObject) -> Self {
        let cache_read = usage.cache_read_input_tokens.unwrap_or(0);
        Self {
            input_tokens: usage.input_tokens
                + cache_read
                + usage.cache_creation_input_tokens.unwrap_or(0),
            output_tokens: usage.output_tokens,
            cached_input_tokens: cache_read,
            reasoning_tokens: 0,
        }
    }
}

/// A `usage` object already parsed (a translated answer reads its message once).
pub fn usage_of(usage: &serde_json::Value) -> Option<Usage> {
    usage
        .is_object()
        .then(|| UsageObject::deserialize(usage).ok())
        .flatten()
        .map(Usage::from)
}

#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<MessageStart<'a>>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
}

#[derive(Deserialize)]
struct MessageStart<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OutputOnly {
    output_tokens: u64,
}

#[derive(Default)]
pub struct AnthropicEvents {
    meter: StreamMeter,
}

impl StreamReader for AnthropicEvents {
    fn event(&mut self, data: &[u8]) {
        let Ok(event) = serde_json::from_slice::<StreamEvent>(data) else {
            self.meter.undecodable = true;
            return;
        };
        match event.kind.as_ref() {
            "message_start" => {
                if let Some(Ok(usage)) = event
                    .message
                    .and_then(|message| message.usage)
                    .map(|raw| serde_json::from_str::<UsageObject>(raw.get()))
                {
                    self.meter.usage = Some(usage.into());
                }
            }
            "message_delta" => {
                if let Some(Ok(output)) = event
                    .usage
                    .map(|raw| serde_json::from_str::<OutputOnly>(raw.get()))
                {
                    self.meter.usage_mut().output_tokens = output.output_tokens;
                }
            }
            "content_block_delta" => {
                if let Some(delta) = event.delta {
                    let text = delta.text.or(delta.partial_json).unwrap_or_default();
                    self.meter.content_chars += chars_of(&text);
                }
            }
            "message_stop" => self.meter.terminated = true,
            _ => {}
        }
    }

    fn meter(&self) -> &StreamMeter {
        &self.meter
    }

    /// Anthropic's `error` event, which its SDKs raise on.
    fn error_event(&self, error: GatewayError, request_id: &str) -> Bytes {
        let body = error.in_shape(ErrorShape::Anthropic).body(request_id);
        Bytes::from(format!("event: error\ndata: {body}\n\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::read_stream_for_test;

    #[test]
    fn a_failed_stream_ends_in_anthropics_error_event_and_a_cut_event_is_noticed() {
        let mut events = AnthropicUsage.stream();
        events.event(b"{\"type\":\"content_block_delta\",\"delta\":{\"text\":");
        assert!(events.meter().undecodable);
        let code = sluice_shared::error_code::ErrorCode::UpstreamTimeout;
        let event = events.error_event(GatewayError::new(code, "stalled"), "req-1");
        let text = String::from_utf8_lossy(&event).into_owned();
        let data = text
            .strip_prefix("event: error\ndata: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        assert_eq!(body["type"], "error", "{text}");
        assert_eq!(body["error"]["type"], "api_error");
        assert_eq!(body["error"]["message"], "stalled");
    }

    #[test]
    fn streams_and_answers_are_metered_with_cache_reads_in_input() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for size in [1, 7, stream.len()] {
            let meter = read_stream_for_test(&AnthropicUsage, stream.as_bytes(), size);
            assert_eq!(meter.content_chars, 5);
            assert!(meter.terminated);
            assert_eq!(
                meter.usage,
                Some(Usage {
                    input_tokens: 15,
                    output_tokens: 7,
                    cached_input_tokens: 5,
                    reasoning_tokens: 0
                })
            );
        }
        let whole = br#"{"id":"msg_1","type":"message","usage":{"input_tokens":3,"cache_read_input_tokens":2,"output_tokens":4}}"#;
        let usage = AnthropicUsage.whole(whole).unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens
            ),
            (5, 2, 4)
        );
        assert_eq!(AnthropicUsage.whole(br#"{"id":"msg_1"}"#), None);
        assert_eq!(AnthropicUsage.whole(b"not json"), None);
    }
}
