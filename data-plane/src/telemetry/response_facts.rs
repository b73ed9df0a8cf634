//! What a sampled request asked of the model and what the answer said of itself, for the GenAI
//! conventions' `gen_ai.request.*` and `gen_ai.response.*` attributes. Read only for sampled
//! requests: a whole answer is parsed once more; a stream's first event is walked for its id
//! and model, and every event is searched (one SIMD scan) for a finish reason.

use crate::answers::json_cursor::JsonCursor;
use crate::operation::Operation;
use crate::request::fields::ChatRequest;
use crate::telemetry::content_capture::{CapturedOutput, OutputCapture};
use crate::telemetry::one_or_more::OneOrMore;
use sluice_otlp::ShortText;

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
    pub id: ShortText,
    pub model: ShortText,
    pub finish_reasons: OneOrMore<ShortText>,
}

/// The longest id, model or reason kept (the upstream's bytes are hostile).
const MAX_TEXT: usize = 256;
/// The most finish reasons kept (one per choice).
const MAX_REASONS: usize = 16;

/// At most [`MAX_TEXT`] bytes of `text`, cut on a character: copied whole, not char by char.
fn bounded(text: &str) -> ShortText {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortText::new(&text[..end])
}

impl ResponseFacts {
    /// From a whole answer of any family, read the way a stream's events are (its top level
    /// walked for the id and model, one scan for finish reasons): OpenAI's `id`, `model`,
    /// `choices[].finish_reason` (the Responses API's `incomplete_details.reason`),
    /// Anthropic's `stop_reason`, Gemini's `responseId`, `modelVersion`,
    /// `candidates[].finishReason`. No tree is built: every sampled request pays for this.
    /// `format`: the operation whose answer `body` is (the Responses API's says how it ended
    /// in its `status`).
    pub fn of_whole(body: &[u8], format: Operation) -> Self {
        let mut facts = StreamFacts::new(format, None);
        facts.event(body);
        facts.finish()
    }
}

/// What a walk of an answer notes: the facts, and a Responses API object's `status`.
struct Seen<'a> {
    facts: &'a mut ResponseFacts,
    status: &'a mut Option<ResponseStatus>,
}

/// A Responses API answer says how it ended in its `status`, not in a finish reason (an
/// incomplete one also names its `incomplete_details.reason`, which the scan finds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseStatus {
    Pending,
    /// The finish reason it stands for.
    Ended(&'static str),
}

impl ResponseStatus {
    fn of(status: &str) -> Option<Self> {
        match status {
            "completed" => Some(Self::Ended("stop")),
            "failed" => Some(Self::Ended("error")),
            "cancelled" => Some(Self::Ended("cancelled")),
            // Incomplete: its `incomplete_details.reason` is found by the scan.
            "incomplete" => None,
            _ => Some(Self::Pending),
        }
    }
}

/// Notes `value` (a JSON string) as the id, the model or the status, if `key` names one not
/// yet known.
fn take(seen: &mut Seen<'_>, key: &[u8], value: Option<&[u8]>) {
    let text =
        value.and_then(|v| std::str::from_utf8(v.strip_prefix(b"\"")?.strip_suffix(b"\"")?).ok());
    let facts = &mut *seen.facts;
    match (key, text) {
        (b"id" | b"responseId", Some(id)) if facts.id.is_empty() => facts.id = bounded(id),
        (b"model" | b"modelVersion", Some(model)) if facts.model.is_empty() => {
            facts.model = bounded(model);
        }
        (b"status", Some(status)) if *seen.status == Some(ResponseStatus::Pending) => {
            *seen.status = ResponseStatus::of(status);
        }
        _ => {}
    }
}

/// A stream's facts, gathered event by event (and its content, for a project that records it).
#[derive(Debug, Default)]
pub struct StreamFacts {
    facts: ResponseFacts,
    identified: bool,
    /// A Responses API answer's status, once its first object said it is one.
    status: Option<ResponseStatus>,
    capture: Option<OutputCapture>,
}

/// The events that end a Responses API stream, and the finish reasons they stand for.
static RESPONSE_ENDS: std::sync::LazyLock<[(memchr::memmem::Finder<'static>, &'static str); 3]> =
    std::sync::LazyLock::new(|| {
        [
            (
                memchr::memmem::Finder::new(b"\"response.completed\""),
                "stop",
            ),
            (memchr::memmem::Finder::new(b"\"response.failed\""), "error"),
            (
                memchr::memmem::Finder::new(b"\"response.cancelled\""),
                "cancelled",
            ),
        ]
    });

/// What every family's finish reason key ends with: `finish_reason`, `stop_reason`,
/// `finishReason`, `reason` (a quote inside a string is escaped, so text never matches).
const REASON_KEY: &[u8] = b"eason\":\"";

/// Built once: building a finder costs about what a search of a whole answer does.
static REASON_FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(REASON_KEY));

impl StreamFacts {
    /// A stream's facts, of an answer in `format` (the upstream's).
    pub fn new(format: Operation, capture: Option<OutputCapture>) -> Self {
        Self {
            // A Responses API answer is pending until its status says otherwise.
            status: (format == Operation::Responses).then_some(ResponseStatus::Pending),
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
        } else if self.status == Some(ResponseStatus::Pending) {
            // Only a Responses API stream pays for this search.
            if let Some((_, reason)) = RESPONSE_ENDS
                .iter()
                .find(|(finder, _)| finder.find(data).is_some())
            {
                self.status = Some(ResponseStatus::Ended(reason));
            }
        }
        let mut rest = data;
        while let Some(at) = REASON_FINDER.find(rest) {
            rest = &rest[at + REASON_KEY.len()..];
            let Some(end) = memchr::memchr(b'"', rest) else {
                break;
            };
            let reason = String::from_utf8_lossy(&rest[..end]);
            if self.facts.finish_reasons.len() < MAX_REASONS
                && !self.facts.finish_reasons.iter().any(|r| **r == *reason)
            {
                self.facts.finish_reasons.push(bounded(&reason));
            }
            rest = &rest[end..];
        }
    }

    /// The id and model, at the top of an event or in its `message` (Anthropic's
    /// `message_start`) or `response` (the Responses API's `response.created`).
    fn identify(&mut self, data: &[u8]) {
        let mut seen = Seen {
            facts: &mut self.facts,
            status: &mut self.status,
        };
        // Most answers name both first: the walk stops there.
        let _ = JsonCursor::new(data).object_while(|key, cursor| {
            match key {
                b"message" | b"response" => {
                    let _ = cursor.object(|key, field| take(&mut seen, key, field.value()));
                }
                b"id" | b"responseId" | b"model" | b"modelVersion" | b"status" => {
                    take(&mut seen, key, cursor.value());
                }
                // Left to the walk to skip, unread.
                _ => {}
            }
            // A Responses API object's status may come after its id and model.
            seen.facts.id.is_empty()
                || seen.facts.model.is_empty()
                || *seen.status == Some(ResponseStatus::Pending)
        });
        self.identified = !self.facts.id.is_empty() && !self.facts.model.is_empty();
    }

    pub fn finish(self) -> ResponseFacts {
        self.finish_with_content().0
    }

    /// The facts, and the answer's content if it was gathered.
    pub fn finish_with_content(mut self) -> (ResponseFacts, Option<CapturedOutput>) {
        if let Some(ResponseStatus::Ended(reason)) = self.status
            && self.facts.finish_reasons.is_empty()
        {
            self.facts.finish_reasons.push(ShortText::new(reason));
        }
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
            finish_reasons: reasons.iter().map(|r| ShortText::new(r)).collect(),
        };
        assert_eq!(
            ResponseFacts::of_whole(openai, Operation::ChatCompletions),
            facts("chatcmpl-1", "gpt-4o-mini-2024-07-18", &["stop", "length"])
        );
        assert_eq!(
            ResponseFacts::of_whole(anthropic, Operation::Messages),
            facts("msg_1", "claude-x", &["end_turn"])
        );
        assert_eq!(
            ResponseFacts::of_whole(gemini, Operation::GenerateContent),
            facts("r1", "gemini-2.0", &["STOP"])
        );
        assert_eq!(
            ResponseFacts::of_whole(responses, Operation::Responses),
            facts("resp_1", "gpt-4o", &["max_output_tokens"])
        );
        assert_eq!(
            ResponseFacts::of_whole(b"not json", Operation::ChatCompletions),
            ResponseFacts::default()
        );
        let completed = br#"{"id":"resp_2","model":"gpt-4o","object":"response","output":[],"status":"completed"}"#;
        assert_eq!(
            ResponseFacts::of_whole(completed, Operation::Responses),
            facts("resp_2", "gpt-4o", &["stop"]),
            "a Responses API answer ends by its status"
        );
    }

    #[test]
    fn a_stream_is_identified_by_its_first_event_and_ends_with_its_reasons() {
        let mut openai = StreamFacts::new(Operation::ChatCompletions, None);
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

        let mut anthropic = StreamFacts::new(Operation::Messages, None);
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

        let mut responses = StreamFacts::new(Operation::Responses, None);
        for event in [
            &br#"{"type":"response.created","response":{"id":"resp_3","status":"in_progress","model":"gpt-4o"}}"#[..],
            br#"{"type":"response.output_text.delta","delta":"Hi"}"#,
            br#"{"response":{"id":"resp_3","status":"completed"},"type":"response.completed"}"#,
        ] {
            responses.event(event);
        }
        assert_eq!(responses.finish().finish_reasons, ["stop"]);
    }
}
