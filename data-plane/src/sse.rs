//! Reading usage out of an OpenAI-style SSE stream as it passes through, without holding it:
//! complete lines are inspected and dropped; a partial line waits for its end (bounded).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest SSE line kept while waiting for its end; longer lines are skipped, not buffered.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
}

/// OpenAI's `usage` object, read straight into numbers (no JSON tree on the hot path).
#[derive(Deserialize)]
struct OpenAiUsage {
    // The Responses API names the same counts input/output.
    #[serde(alias = "input_tokens")]
    prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: Option<u64>,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<CompletionTokensDetails>,
    // Anthropic counts cache reads and writes apart from input_tokens.
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionTokensDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<OpenAiUsage> for Usage {
    fn from(usage: OpenAiUsage) -> Self {
        // Normalised to OpenAI's convention: input includes the cached part.
        let cache_read = usage.cache_read_input_tokens.unwrap_or(0);
        Self {
            input_tokens: usage.prompt_tokens
                + cache_read
                + usage.cache_creation_input_tokens.unwrap_or(0),
            output_tokens: usage.completion_tokens.unwrap_or(0),
            cached_input_tokens: usage
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0)
                .max(cache_read),
            reasoning_tokens: usage
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

impl Usage {
    /// OpenAI's `usage` object, given as its JSON text.
    fn from_openai_json(json: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Option<OpenAiUsage>>(json)
            .ok()
            .flatten()
            .map(Self::from)
    }
}

/// The `usage` object of a whole (non-streamed) OpenAI answer. OpenAI writes it last, so the
/// last unescaped `"usage":` key is tried first and only its value is parsed; anything
/// unusual falls back to reading the whole answer.
pub fn usage_from_answer(body: &[u8]) -> Option<Usage> {
    usage_at_last_key(body).or_else(|| {
        #[derive(Deserialize)]
        struct UsageOnly<'a> {
            #[serde(borrow, default)]
            usage: Option<&'a RawValue>,
        }
        let answer: UsageOnly = serde_json::from_slice(body).ok()?;
        Usage::from_openai_json(answer.usage?.get().as_bytes())
    })
}

/// Gemini's `usageMetadata`. Thinking tokens are billed as output but counted apart from
/// the candidates; cached content is part of the prompt count.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

impl From<GeminiUsage> for Usage {
    fn from(usage: GeminiUsage) -> Self {
        Self {
            input_tokens: usage.prompt_token_count,
            output_tokens: usage.candidates_token_count + usage.thoughts_token_count,
            cached_input_tokens: usage.cached_content_token_count,
            reasoning_tokens: usage.thoughts_token_count,
        }
    }
}

/// The `usageMetadata` of a whole Gemini answer.
pub fn usage_from_gemini_answer(body: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        #[serde(default)]
        usage_metadata: Option<GeminiUsage>,
    }
    serde_json::from_slice::<Answer>(body)
        .ok()?
        .usage_metadata
        .map(Usage::from)
}

/// A Gemini `usageMetadata` object already parsed (a translated stream reads its events).
pub fn usage_from_gemini_metadata(metadata: &serde_json::Value) -> Option<Usage> {
    GeminiUsage::deserialize(metadata).ok().map(Usage::from)
}

fn usage_at_last_key(body: &[u8]) -> Option<Usage> {
    const KEY: &[u8] = b"\"usage\"";
    let at = body.windows(KEY.len()).rposition(|window| window == KEY)?;
    // An escaped quote means the text sits inside a string, not a key.
    if at > 0 && body[at - 1] == b'\\' {
        return None;
    }
    let rest = body[at + KEY.len()..]
        .trim_ascii_start()
        .strip_prefix(b":")?;
    let value = serde_json::Deserializer::from_slice(rest)
        .into_iter::<Option<OpenAiUsage>>()
        .next()?
        .ok()??;
    Some(value.into())
}

/// One event of an OpenAI stream, as far as metering reads it: a chat completion chunk, or a
/// Responses API event (its text in `response.output_text.delta`, its usage in the
/// `response.completed` event's response).
#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<StreamChoice<'a>>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response: Option<ResponseUsage<'a>>,
    /// Anthropic's `message_start` carries the input usage in its message.
    #[serde(borrow, default)]
    message: Option<ResponseUsage<'a>>,
    /// Gemini's chunks carry `usageMetadata` (complete in the last one).
    #[serde(borrow, default, rename = "usageMetadata")]
    usage_metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AnthropicOutput {
    output_tokens: u64,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponseUsage<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StreamChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<StreamDelta<'a>>,
}

#[derive(Deserialize)]
struct StreamDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

#[derive(Default)]
pub struct SseUsageScanner {
    partial: Vec<u8>,
    skipping: bool,
    pub usage: Option<Usage>,
    /// Characters of generated content seen, for an estimate when no usage arrives.
    pub content_chars: usize,
    pub saw_done: bool,
}

impl SseUsageScanner {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(end);
            if self.skipping {
                self.skipping = false;
            } else if self.partial.is_empty() {
                self.line(head);
            } else {
                self.partial.extend_from_slice(head);
                let line = std::mem::take(&mut self.partial);
                self.line(&line);
            }
            chunk = &rest[1..];
        }
        if !chunk.is_empty() && !self.skipping {
            if self.partial.len() + chunk.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            self.saw_done = true;
            return;
        }
        let Ok(event) = serde_json::from_slice::<StreamEvent>(data) else {
            return;
        };
        match event.kind.as_deref() {
            // Anthropic: input usage first, output usage (cumulative) in message_delta.
            Some("message_start") => {
                if let Some(usage) = event
                    .message
                    .and_then(|m| m.usage)
                    .and_then(|raw| Usage::from_openai_json(raw.get().as_bytes()))
                {
                    self.usage = Some(usage);
                }
            }
            Some("message_delta") => {
                if let Some(output) = event.usage.and_then(|raw| {
                    serde_json::from_str::<AnthropicOutput>(raw.get())
                        .ok()
                        .map(|u| u.output_tokens)
                }) {
                    let usage = self.usage.get_or_insert_with(Usage::default);
                    usage.output_tokens = output;
                }
            }
            Some("content_block_delta") => {
                if let Some(Ok(delta)) = event
                    .delta
                    .map(|raw| serde_json::from_str::<AnthropicDelta>(raw.get()))
                    && let Some(text) = delta.text
                {
                    self.content_chars += text.chars().count();
                }
            }
            _ if event.usage_metadata.is_some() => {
                if let Some(Ok(usage)) = event
                    .usage_metadata
                    .map(|raw| serde_json::from_str::<GeminiUsage>(raw.get()))
                {
                    self.usage = Some(usage.into());
                }
            }
            _ => {
                let usage = event
                    .usage
                    .or_else(|| event.response.and_then(|response| response.usage));
                if let Some(usage) =
                    usage.and_then(|raw| Usage::from_openai_json(raw.get().as_bytes()))
                {
                    self.usage = Some(usage);
                }
            }
        }
        if event.kind.as_deref() == Some("response.output_text.delta")
            && let Some(Ok(text)) = event
                .delta
                .map(|raw| serde_json::from_str::<Cow<str>>(raw.get()))
        {
            self.content_chars += text.chars().count();
        }
        for choice in event.choices.unwrap_or_default() {
            if let Some(text) = choice.delta.and_then(|delta| delta.content) {
                self.content_chars += text.chars().count();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
        data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\
        \"prompt_tokens_details\":{\"cached_tokens\":4},\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn anthropic_streams_and_answers_are_metered_with_cache_reads_in_input() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut scanner = SseUsageScanner::default();
        scanner.feed(stream.as_bytes());
        assert_eq!(scanner.content_chars, 5);
        assert_eq!(
            scanner.usage,
            Some(Usage {
                input_tokens: 15,
                output_tokens: 7,
                cached_input_tokens: 5,
                reasoning_tokens: 0
            })
        );
        let whole = br#"{"id":"msg_1","type":"message","usage":{"input_tokens":3,"cache_read_input_tokens":2,"output_tokens":4}}"#;
        let usage = usage_from_answer(whole).unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.cached_input_tokens,
                usage.output_tokens
            ),
            (5, 2, 4)
        );
    }

    #[test]
    fn gemini_usage_metadata_is_metered_with_thoughts_as_output() {
        let stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":9,\"totalTokenCount\":9}}\r\n\r\n\
            data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" there\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\
            \"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":4,\"thoughtsTokenCount\":2,\"cachedContentTokenCount\":3,\"totalTokenCount\":15}}\r\n\r\n";
        let mut scanner = SseUsageScanner::default();
        scanner.feed(stream.as_bytes());
        assert_eq!(
            scanner.usage,
            Some(Usage {
                input_tokens: 9,
                output_tokens: 6,
                cached_input_tokens: 3,
                reasoning_tokens: 2
            })
        );
        let whole = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash"}"#;
        assert_eq!(
            usage_from_gemini_answer(whole).map(|u| u.output_tokens),
            Some(2)
        );
    }

    #[test]
    fn responses_api_streams_are_metered_too() {
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n\
            event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi there\"}\n\n\
            event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\
            \"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":2},\
            \"output_tokens\":4,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":13}}}\n\n";
        let mut scanner = SseUsageScanner::default();
        scanner.feed(stream.as_bytes());
        assert_eq!(scanner.content_chars, 8);
        assert_eq!(
            scanner.usage,
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
    fn usage_is_found_at_every_chunk_boundary() {
        let bytes = STREAM.as_bytes();
        for size in 1..bytes.len() {
            let mut scanner = SseUsageScanner::default();
            for chunk in bytes.chunks(size) {
                scanner.feed(chunk);
            }
            assert_eq!(
                scanner.usage,
                Some(Usage {
                    input_tokens: 12,
                    output_tokens: 3,
                    cached_input_tokens: 4,
                    reasoning_tokens: 1
                }),
                "chunk size {size}"
            );
            assert_eq!(scanner.content_chars, 5);
            assert!(scanner.saw_done);
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
    fn garbage_and_huge_lines_never_panic() {
        let mut scanner = SseUsageScanner::default();
        scanner.feed(b"data: {not json\n\ndata: \xff\xfe\n");
        scanner.feed(&vec![b'x'; MAX_LINE + 10]);
        scanner.feed(b"\ndata: [DONE]\n");
        assert!(scanner.usage.is_none());
        assert!(scanner.saw_done);
    }
}
