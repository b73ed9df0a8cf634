//! Gemini's usage, as `usageMetadata` reports it: thinking tokens are billed as output but
//! counted apart from the candidates; cached content is part of the prompt count. Streamed,
//! every chunk repeats the metadata so far, complete in the last.

use serde::Deserialize;
use serde_json::value::RawValue;

use bytes::Bytes;

use crate::answers::{StreamMeter, StreamReader, Usage, UsageReader, chars_of};
use crate::error_response::{ErrorShape, GatewayError};

pub struct GeminiUsage;

impl UsageReader for GeminiUsage {
    fn whole(&self, answer: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<Chunk>(answer)
            .ok()?
            .usage_metadata
            .map(Usage::from)
    }

    fn stream(&self) -> Box<dyn StreamReader> {
        Box::new(GeminiEvents::default())
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl From<UsageMetadata> for Usage {
    fn from(usage: UsageMetadata) -> Self {
        Self {
            input_tokens: usage.prompt_token_count,
            output_tokens: usage.candidates_token_count + usage.thoughts_token_count,
            cached_input_tokens: usage.cached_content_token_count,
            reasoning_tokens: usage.thoughts_token_count,
        }
    }
}

/// A `usageMetadata` object already parsed (a translated answer reads its chunk once).
pub fn usage_of(metadata: &serde_json::Value) -> Option<Usage> {
    metadata
        .is_object()
        .then(|| UsageMetadata::deserialize(metadata).ok())
        .flatten()
        .map(Usage::from)
}

/// A whole answer or one streamed chunk, as far as metering reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(borrow, default)]
    candidates: Vec<Candidate<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, rename = "functionCall")]
    function_call: Option<&'a RawValue>,
}

#[derive(Default)]
pub struct GeminiEvents {
    meter: StreamMeter,
}

impl StreamReader for GeminiEvents {
    fn event(&mut self, data: &[u8]) {
        let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else {
            self.meter.undecodable = true;
            return;
        };
        if let Some(usage) = chunk.usage_metadata {
            self.meter.usage = Some(usage.into());
        }
        for candidate in chunk.candidates {
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                self.meter.content_chars += part.text.as_deref().map_or(0, chars_of)
                    + part.function_call.map_or(0, |call| call.get().len());
            }
            // Gemini's stream has no closing event: the candidate's finish reason is its end.
            if candidate.finish_reason.is_some() {
                self.meter.terminated = true;
            }
        }
    }

    fn meter(&self) -> &StreamMeter {
        &self.meter
    }

    /// Google's error object, as its API answers an error, as the stream's last chunk.
    fn error_event(&self, error: GatewayError, request_id: &str) -> Bytes {
        let body = error.in_shape(ErrorShape::Gemini).body(request_id);
        Bytes::from(format!("data: {body}\r\n\r\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::read_stream_for_test;

    #[test]
    fn a_failed_stream_ends_in_googles_error_object_and_a_cut_chunk_is_noticed() {
        let mut events = GeminiUsage.stream();
        events.event(b"{\"candidates\":[{\"content\":");
        assert!(events.meter().undecodable);
        let code = sluice_shared::error_code::ErrorCode::UpstreamUnavailable;
        let event = events.error_event(GatewayError::new(code, "broke"), "req-1");
        let text = String::from_utf8_lossy(&event).into_owned();
        let data = text
            .strip_prefix("data: ")
            .and_then(|rest| rest.strip_suffix("\r\n\r\n"))
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        assert_eq!(body["error"]["code"], 502, "{text}");
        assert_eq!(body["error"]["status"], "UNAVAILABLE");
    }

    #[test]
    fn usage_metadata_is_metered_with_thoughts_as_output() {
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":9,\"totalTokenCount\":9}}\r\n\r\n\
            data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" there\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\
            \"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"thoughtsTokenCount\":2,\"cachedContentTokenCount\":3,\"totalTokenCount\":15}}\r\n\r\n";
        for size in [1, 13, stream.len()] {
            let meter = read_stream_for_test(&GeminiUsage, stream.as_bytes(), size);
            assert_eq!(meter.content_chars, 8);
            assert!(meter.terminated);
            assert_eq!(
                meter.usage,
                Some(Usage {
                    input_tokens: 9,
                    output_tokens: 6,
                    cached_input_tokens: 3,
                    reasoning_tokens: 2
                })
            );
        }
        let whole = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash"}"#;
        assert_eq!(GeminiUsage.whole(whole).map(|u| u.output_tokens), Some(2));
        assert_eq!(GeminiUsage.whole(br#"{"candidates":[]}"#), None);
    }
}
