//! What a sampled request asked of the model and what the answer said of itself, for the GenAI
//! conventions' `gen_ai.request.*` and `gen_ai.response.*` attributes. Read only for sampled
//! requests: a whole answer is parsed once more; a stream's first event is walked for its id
//! and model, and every event is searched (one SIMD scan) for a finish reason.

use crate::answers::json_cursor::JsonCursor;
use crate::request::fields::ChatRequest;
use crate::telemetry::content_capture::{CapturedOutput, OutputCapture};

/// The request parameters the conventions name, as the client sent them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub choice_count: Option<i64>,
    pub stop_sequences: Vec<String>,
}

impl RequestParams {
    /// OpenAI's and Anthropic's names (`stop` / `stop_sequences`, `n`); Gemini's sit in its
    /// `generationConfig`.
    pub fn of(chat: &ChatRequest<'_>) -> Self {
        let number = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| chat.raw_field(name)?.trim().parse::<f64>().ok())
        };
        let integer = |name: &str| chat.raw_field(name)?.trim().parse::<i64>().ok();
        let config = chat
            .raw_field("generationConfig")
            .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok());
        let in_config = |name: &str| config.as_ref()?.get(name)?.as_f64();
        let stops = ["stop", "stop_sequences"]
            .iter()
            .find_map(|name| chat.raw_field(name))
            .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
            .or_else(|| config.as_ref()?.get("stopSequences").cloned());
        let stop_sequences = match stops {
            Some(serde_json::Value::String(one)) => vec![one],
            Some(serde_json::Value::Array(many)) => many
                .into_iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Self {
            temperature: number(&["temperature"]).or_else(|| in_config("temperature")),
            top_p: number(&["top_p"]).or_else(|| in_config("topP")),
            top_k: number(&["top_k"]).or_else(|| in_config("topK")),
            frequency_penalty: number(&["frequency_penalty"])
                .or_else(|| in_config("frequencyPenalty")),
            presence_penalty: number(&["presence_penalty"])
                .or_else(|| in_config("presencePenalty")),
            seed: integer("seed").or_else(|| in_config("seed").map(|seed| seed as i64)),
            choice_count: integer("n").or_else(|| in_config("candidateCount").map(|n| n as i64)),
            stop_sequences,
        }
    }
}

/// `gen_ai.response.id`, `gen_ai.response.model` and `gen_ai.response.finish_reasons`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseFacts {
    pub id: String,
    pub model: String,
    pub finish_reasons: Vec<String>,
}

/// The longest id, model or reason kept (the upstream's bytes are hostile).
const MAX_TEXT: usize = 256;
/// The most finish reasons kept (one per choice).
const MAX_REASONS: usize = 16;

fn bounded(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

impl ResponseFacts {
    /// From a whole answer of any family, read the way a stream's events are (its top level
    /// walked for the id and model, one scan for finish reasons): OpenAI's `id`, `model`,
    /// `choices[].finish_reason` (the Responses API's `incomplete_details.reason`),
    /// Anthropic's `stop_reason`, Gemini's `responseId`, `modelVersion`,
    /// `candidates[].finishReason`. No tree is built: every sampled request pays for this.
    pub fn of_whole(body: &[u8]) -> Self {
        let mut facts = StreamFacts::default();
        facts.event(body);
        facts.finish()
    }
}

/// Notes `value` (a JSON string) as the id or the model, if `key` names one not yet known.
fn take(facts: &mut ResponseFacts, key: &[u8], value: Option<&[u8]>) {
    let text =
        value.and_then(|v| std::str::from_utf8(v.strip_prefix(b"\"")?.strip_suffix(b"\"")?).ok());
    match (key, text) {
        (b"id" | b"responseId", Some(id)) if facts.id.is_empty() => facts.id = bounded(id),
        (b"model" | b"modelVersion", Some(model)) if facts.model.is_empty() => {
            facts.model = bounded(model);
        }
        _ => {}
    }
}

/// A stream's facts, gathered event by event (and its content, for a project that records it).
#[derive(Debug, Default)]
pub struct StreamFacts {
    facts: ResponseFacts,
    identified: bool,
    capture: Option<OutputCapture>,
}

/// What every family's finish reason key ends with: `finish_reason`, `stop_reason`,
/// `finishReason`, `reason` (a quote inside a string is escaped, so text never matches).
const REASON_KEY: &[u8] = b"eason\":\"";

/// Built once: building a finder costs about what a search of a whole answer does.
static REASON_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(REASON_KEY));

impl StreamFacts {
    pub fn new(capture: Option<OutputCapture>) -> Self {
        Self {
            capture,
            ..Self::default()
        }
    }

    pub fn event(&mut self, data: &[u8]) {
        if let Some(capture) = &mut self.capture {
            capture.event(data);
        }
        if !self.identified {
            self.identify(data);
        }
        let mut rest = data;
        while let Some(at) = REASON_FINDER.find(rest) {
            rest = &rest[at + REASON_KEY.len()..];
            let Some(end) = memchr::memchr(b'"', rest) else {
                break;
            };
            let reason = String::from_utf8_lossy(&rest[..end]);
            if self.facts.finish_reasons.len() < MAX_REASONS
                && !self.facts.finish_reasons.iter().any(|r| *r == reason)
            {
                self.facts.finish_reasons.push(bounded(&reason));
            }
            rest = &rest[end..];
        }
    }

    /// The id and model, at the top of an event or in its `message` (Anthropic's
    /// `message_start`) or `response` (the Responses API's `response.created`).
    fn identify(&mut self, data: &[u8]) {
        let facts = &mut self.facts;
        // Most answers name both first: the walk stops there.
        let _ = JsonCursor::new(data).object_while(|key, cursor| {
            match key {
                b"message" | b"response" => {
                    let _ = cursor.object(|key, field| take(facts, key, field.value()));
                }
                b"id" | b"responseId" | b"model" | b"modelVersion" => {
                    take(facts, key, cursor.value());
                }
                // Left to the walk to skip, unread.
                _ => {}
            }
            facts.id.is_empty() || facts.model.is_empty()
        });
        self.identified = !self.facts.id.is_empty() && !self.facts.model.is_empty();
    }

    pub fn finish(self) -> ResponseFacts {
        self.facts
    }

    /// The facts, and the answer's content if it was gathered.
    pub fn finish_with_content(self) -> (ResponseFacts, Option<CapturedOutput>) {
        (self.facts, self.capture.and_then(OutputCapture::finish))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_answers_of_each_family_say_their_id_model_and_reasons() {
        let openai = br#"{"id":"chatcmpl-1","model":"gpt-4o-mini-2024-07-18","choices":[{"finish_reason":"stop"},{"finish_reason":"length"}]}"#;
        let anthropic =
            br#"{"id":"msg_1","type":"message","model":"claude-x","stop_reason":"end_turn"}"#;
        let gemini = br#"{"responseId":"r1","modelVersion":"gemini-2.0","candidates":[{"finishReason":"STOP"}]}"#;
        let responses = br#"{"id":"resp_1","model":"gpt-4o","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[{"content":[{"text":"a \"reason\":\"x\""}]}]}"#;
        let facts = |id: &str, model: &str, reasons: &[&str]| ResponseFacts {
            id: id.into(),
            model: model.into(),
            finish_reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
        };
        assert_eq!(
            ResponseFacts::of_whole(openai),
            facts("chatcmpl-1", "gpt-4o-mini-2024-07-18", &["stop", "length"])
        );
        assert_eq!(
            ResponseFacts::of_whole(anthropic),
            facts("msg_1", "claude-x", &["end_turn"])
        );
        assert_eq!(
            ResponseFacts::of_whole(gemini),
            facts("r1", "gemini-2.0", &["STOP"])
        );
        assert_eq!(
            ResponseFacts::of_whole(responses),
            facts("resp_1", "gpt-4o", &["max_output_tokens"])
        );
        assert_eq!(
            ResponseFacts::of_whole(b"not json"),
            ResponseFacts::default()
        );
    }

    #[test]
    fn a_stream_is_identified_by_its_first_event_and_ends_with_its_reasons() {
        let mut openai = StreamFacts::default();
        for event in [
            &br#"{"id":"chatcmpl-2","model":"gpt-4o","choices":[{"delta":{"content":"say \"eason\":\"no\""},"finish_reason":null}]}"#[..],
            br#"{"id":"chatcmpl-2","model":"gpt-4o","choices":[{"delta":{},"finish_reason":"stop"}]}"#,
        ] {
            openai.event(event);
        }
        let facts = openai.finish();
        assert_eq!(
            (facts.id.as_str(), facts.model.as_str()),
            ("chatcmpl-2", "gpt-4o")
        );
        assert_eq!(
            facts.finish_reasons,
            ["stop"],
            "text in a string never matches"
        );

        let mut anthropic = StreamFacts::default();
        for event in [
            &br#"{"type":"message_start","message":{"id":"msg_2","model":"claude-y","usage":{"input_tokens":3}}}"#[..],
            br#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":9}}"#,
        ] {
            anthropic.event(event);
        }
        let facts = anthropic.finish();
        assert_eq!(
            (facts.id.as_str(), facts.model.as_str()),
            ("msg_2", "claude-y")
        );
        assert_eq!(facts.finish_reasons, ["max_tokens"]);
    }
}
