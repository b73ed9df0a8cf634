//! Prompts and completions on a trace, for the projects that opt in (`content_capture_bytes`)
//! and only on sampled requests: the GenAI conventions' (1.37) `gen_ai.system_instructions`,
//! `gen_ai.input.messages` and `gen_ai.output.messages`, each a JSON array of messages made of
//! typed parts (`text`, `tool_call`, `tool_call_response`, or the family's own type named),
//! read from whichever wire format the request and its answer spoke. Each is held to the
//! project's size: the longest texts give way first, then the oldest messages.
//!
//! None of this runs for a project that has not opted in, so it is written for clarity (a
//! JSON tree per request) rather than speed.

use serde_json::{Map, Value, json};

use crate::operation::Operation;

/// A sampled request's content, for a project that records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedContent {
    pub input: Option<CapturedInput>,
    pub output: Option<CapturedOutput>,
}

/// What a request asked, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedInput {
    /// Instructions given apart from the conversation (Anthropic's `system`, Gemini's
    /// `systemInstruction`, the Responses API's `instructions`).
    pub system: Option<String>,
    pub messages: String,
    /// Something was left out to stay within the project's size.
    pub truncated: bool,
}

/// What a request's answer said, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    pub messages: String,
    pub truncated: bool,
}

/// The request's messages in `format` (the endpoint the client called), held to `cap` bytes
/// each for the instructions and the messages. `None` for what is not a conversation
/// (embeddings) or not JSON.
pub fn input(format: Operation, body: &[u8], cap: usize) -> Option<CapturedInput> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let (system, messages) = match format {
        Operation::ChatCompletions => (None, openai_chat_input(&request, cap)),
        Operation::Responses => responses_input(&request, cap),
        Operation::Messages => anthropic_input(&request, cap),
        Operation::GenerateContent | Operation::StreamGenerateContent => {
            gemini_input(&request, cap)
        }
        Operation::Embeddings => return None,
    };
    let (messages, messages_cut) = fit(messages, cap);
    let (system, system_cut) = match system {
        Some(parts) if !parts.is_empty() => {
            let (text, cut) = fit(parts, cap);
            (Some(text), cut)
        }
        _ => (None, false),
    };
    Some(CapturedInput {
        system,
        messages,
        truncated: messages_cut || system_cut,
    })
}

/// A text part, cut to `cap` bytes already: no longer text could fit.
fn text_part(text: &str, cap: usize) -> Value {
    json!({"type": "text", "content": prefix(text, cap)})
}

/// A part of a kind the conventions do not name (an image, a document, audio): its type only,
/// never its bytes.
fn other_part(kind: &str) -> Value {
    json!({"type": prefix(kind, 64)})
}

fn tool_call(id: &str, name: &str, arguments: &str, cap: usize) -> Value {
    json!({
        "type": "tool_call",
        "id": prefix(id, 256),
        "name": prefix(name, 256),
        "arguments": prefix(arguments, cap),
    })
}

fn tool_response(id: &str, response: &Value, cap: usize) -> Value {
    let response = match response {
        Value::String(text) => prefix(text, cap).to_owned(),
        other => prefix(&other.to_string(), cap).to_owned(),
    };
    json!({"type": "tool_call_response", "id": prefix(id, 256), "response": response})
}

fn message(role: &str, parts: Vec<Value>) -> Value {
    json!({"role": prefix(role, 64), "parts": parts})
}

fn str_of<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A JSON value as tool arguments travel: a string as it is, anything else as JSON text.
fn as_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// OpenAI's content: a string, or parts of which text is kept and the rest named.
fn openai_content(content: Option<&Value>, cap: usize, parts: &mut Vec<Value>) {
    match content {
        Some(Value::String(text)) => parts.push(text_part(text, cap)),
        Some(Value::Array(items)) => {
            for item in items {
                match str_of(item, "type") {
                    "text" | "input_text" | "output_text" => {
                        parts.push(text_part(str_of(item, "text"), cap));
                    }
                    "refusal" => parts.push(text_part(str_of(item, "refusal"), cap)),
                    kind => parts.push(other_part(kind)),
                }
            }
        }
        _ => {}
    }
}

fn openai_tool_calls(calls: Option<&Value>, cap: usize, parts: &mut Vec<Value>) {
    for call in calls.and_then(Value::as_array).into_iter().flatten() {
        let function = call.get("function").unwrap_or(&Value::Null);
        parts.push(tool_call(
            str_of(call, "id"),
            str_of(function, "name"),
            &as_text(function.get("arguments")),
            cap,
        ));
    }
}

fn openai_chat_input(request: &Value, cap: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for m in request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = str_of(m, "role");
        let mut parts = Vec::new();
        if role == "tool" {
            let content = m.get("content").unwrap_or(&Value::Null);
            parts.push(tool_response(str_of(m, "tool_call_id"), content, cap));
        } else {
            openai_content(m.get("content"), cap, &mut parts);
            openai_tool_calls(m.get("tool_calls"), cap, &mut parts);
        }
        out.push(message(role, parts));
    }
    out
}

fn responses_input(request: &Value, cap: usize) -> (Option<Vec<Value>>, Vec<Value>) {
    let system = request
        .get("instructions")
        .and_then(Value::as_str)
        .map(|text| vec![text_part(text, cap)]);
    let mut out = Vec::new();
    match request.get("input") {
        Some(Value::String(text)) => out.push(message("user", vec![text_part(text, cap)])),
        Some(Value::Array(items)) => {
            for item in items {
                match str_of(item, "type") {
                    "function_call" => out.push(message(
                        "assistant",
                        vec![tool_call(
                            str_of(item, "call_id"),
                            str_of(item, "name"),
                            &as_text(item.get("arguments")),
                            cap,
                        )],
                    )),
                    "function_call_output" => out.push(message(
                        "tool",
                        vec![tool_response(
                            str_of(item, "call_id"),
                            item.get("output").unwrap_or(&Value::Null),
                            cap,
                        )],
                    )),
                    "message" | "" => {
                        let mut parts = Vec::new();
                        openai_content(item.get("content"), cap, &mut parts);
                        out.push(message(str_of(item, "role"), parts));
                    }
                    kind => out.push(message("user", vec![other_part(kind)])),
                }
            }
        }
        _ => {}
    }
    (system, out)
}

/// Anthropic's content blocks (also a bare string).
fn anthropic_blocks(content: Option<&Value>, cap: usize) -> Vec<Value> {
    let mut parts = Vec::new();
    match content {
        Some(Value::String(text)) => parts.push(text_part(text, cap)),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                parts.push(match str_of(block, "type") {
                    "text" => text_part(str_of(block, "text"), cap),
                    "tool_use" => tool_call(
                        str_of(block, "id"),
                        str_of(block, "name"),
                        &as_text(block.get("input")),
                        cap,
                    ),
                    "tool_result" => tool_response(
                        str_of(block, "tool_use_id"),
                        block.get("content").unwrap_or(&Value::Null),
                        cap,
                    ),
                    kind => other_part(kind),
                });
            }
        }
        _ => {}
    }
    parts
}

fn anthropic_input(request: &Value, cap: usize) -> (Option<Vec<Value>>, Vec<Value>) {
    let system = request
        .get("system")
        .map(|system| anthropic_blocks(Some(system), cap));
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| message(str_of(m, "role"), anthropic_blocks(m.get("content"), cap)))
        .collect();
    (system, messages)
}

/// Gemini's parts: text, function calls and their responses; data named by its kind.
fn gemini_parts(content: &Value, cap: usize) -> Vec<Value> {
    let mut parts = Vec::new();
    for part in content
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            parts.push(text_part(text, cap));
        } else if let Some(call) = part.get("functionCall") {
            parts.push(tool_call(
                str_of(call, "id"),
                str_of(call, "name"),
                &as_text(call.get("args")),
                cap,
            ));
        } else if let Some(response) = part.get("functionResponse") {
            parts.push(tool_response(
                str_of(response, "name"),
                response.get("response").unwrap_or(&Value::Null),
                cap,
            ));
        } else if let Some(kind) = part.as_object().and_then(|o| o.keys().next()) {
            parts.push(other_part(kind));
        }
    }
    parts
}

/// Gemini calls the model's turn `model`; the conventions call it `assistant`.
fn gemini_role(role: &str) -> &str {
    match role {
        "model" => "assistant",
        "" => "user",
        other => other,
    }
}

fn gemini_input(request: &Value, cap: usize) -> (Option<Vec<Value>>, Vec<Value>) {
    let system = request
        .get("systemInstruction")
        .or_else(|| request.get("system_instruction"))
        .map(|instruction| gemini_parts(instruction, cap));
    let messages = request
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| message(gemini_role(str_of(c, "role")), gemini_parts(c, cap)))
        .collect();
    (system, messages)
}

/// An answer's messages, gathered from a whole answer or event by event from a stream, in the
/// upstream's format.
#[derive(Debug)]
pub struct OutputCapture {
    format: Operation,
    room: Room,
    /// A whole answer's messages (or a Responses stream's closing `response`).
    whole: Option<Vec<Value>>,
    /// A stream's choices as their events build them.
    choices: Vec<Choice>,
}

/// Text still to be gathered: past the cap, more could never be recorded.
#[derive(Debug)]
struct Room {
    cap: usize,
    gathered: usize,
}

impl Room {
    fn append(&mut self, into: &mut String, more: &str) {
        let piece = prefix(more, self.cap.saturating_sub(self.gathered));
        self.gathered += piece.len();
        into.push_str(piece);
    }
}

#[derive(Debug, Default)]
struct Choice {
    role: String,
    parts: Vec<Part>,
    finish_reason: String,
}

#[derive(Debug)]
enum Part {
    Text(String),
    /// `slot`: the stream's index for the call (OpenAI's `tool_calls[].index`).
    ToolCall {
        slot: usize,
        id: String,
        name: String,
        arguments: String,
    },
    Other(String),
}

/// A stream's choices, tool calls and content blocks are few; a hostile index is ignored.
const MOST_INDEXES: usize = 64;

impl Choice {
    /// The text being written: the last part when it is text, else a new one.
    fn text(&mut self) -> Option<&mut String> {
        if !matches!(self.parts.last(), Some(Part::Text(_))) {
            self.parts.push(Part::Text(String::new()));
        }
        match self.parts.last_mut() {
            Some(Part::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// The tool call a stream numbers `slot`.
    fn tool_call(&mut self, slot: usize) -> Option<&mut Part> {
        let at = match self
            .parts
            .iter()
            .position(|p| matches!(p, Part::ToolCall { slot: s, .. } if *s == slot))
        {
            Some(at) => at,
            None => {
                self.parts.push(Part::ToolCall {
                    slot,
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                self.parts.len() - 1
            }
        };
        self.parts.get_mut(at)
    }

    /// Anthropic's content block `index`.
    fn block(&mut self, index: usize) -> Option<&mut Part> {
        if index >= MOST_INDEXES {
            return None;
        }
        while self.parts.len() <= index {
            self.parts.push(Part::Other(String::new()));
        }
        self.parts.get_mut(index)
    }

    fn to_message(&self, cap: usize) -> Value {
        let parts = self
            .parts
            .iter()
            .filter_map(|part| match part {
                Part::Text(text) => Some(text_part(text, cap)),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                    ..
                } => Some(tool_call(id, name, arguments, cap)),
                Part::Other(kind) if kind.is_empty() => None,
                Part::Other(kind) => Some(other_part(kind)),
            })
            .collect();
        let role = if self.role.is_empty() {
            "assistant"
        } else {
            &self.role
        };
        with_finish(message(role, parts), &self.finish_reason)
    }
}

fn with_finish(mut message: Value, reason: &str) -> Value {
    if let Some(object) = message.as_object_mut() {
        object.insert("finish_reason".into(), Value::from(prefix(reason, 256)));
    }
    message
}

fn index_of(value: &Value) -> usize {
    value
        .get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        .unwrap_or(0)
}

impl OutputCapture {
    /// `format`: the operation the upstream answered (a translated chat request's answer is
    /// in the upstream family's own format).
    pub fn new(format: Operation, cap: usize) -> Self {
        Self {
            format,
            room: Room { cap, gathered: 0 },
            whole: None,
            choices: Vec::new(),
        }
    }

    /// Reads each of an event's choices (`key`: `choices`, `candidates`) into its own.
    fn each_choice(
        &mut self,
        event: &Value,
        key: &str,
        mut read: impl FnMut(&mut Room, &mut Choice, &Value),
    ) {
        let Self { room, choices, .. } = self;
        for item in event
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = index_of(item);
            if index >= MOST_INDEXES {
                continue;
            }
            if choices.len() <= index {
                choices.resize_with(index + 1, Choice::default);
            }
            if let Some(choice) = choices.get_mut(index) {
                read(room, choice, item);
            }
        }
    }

    /// A whole answer.
    pub fn whole(&mut self, body: &[u8]) {
        if let Ok(answer) = serde_json::from_slice::<Value>(body) {
            self.whole = Some(self.messages_of(&answer));
        }
    }

    fn messages_of(&self, answer: &Value) -> Vec<Value> {
        let cap = self.room.cap;
        let list = |key: &str| {
            answer
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        };
        match self.format {
            Operation::ChatCompletions => list("choices")
                .map(|choice| {
                    let m = choice.get("message").unwrap_or(&Value::Null);
                    let mut parts = Vec::new();
                    openai_content(m.get("content"), cap, &mut parts);
                    if let Some(refusal) = m.get("refusal").and_then(Value::as_str) {
                        parts.push(text_part(refusal, cap));
                    }
                    openai_tool_calls(m.get("tool_calls"), cap, &mut parts);
                    let role = Some(str_of(m, "role")).filter(|r| !r.is_empty());
                    with_finish(
                        message(role.unwrap_or("assistant"), parts),
                        str_of(choice, "finish_reason"),
                    )
                })
                .collect(),
            Operation::Responses => {
                let mut parts = Vec::new();
                for item in list("output") {
                    match str_of(item, "type") {
                        "message" => openai_content(item.get("content"), cap, &mut parts),
                        "function_call" => parts.push(tool_call(
                            str_of(item, "call_id"),
                            str_of(item, "name"),
                            &as_text(item.get("arguments")),
                            cap,
                        )),
                        // Reasoning summaries and the like are not the answer.
                        _ => {}
                    }
                }
                let reason = answer
                    .get("incomplete_details")
                    .map(|details| str_of(details, "reason"))
                    .filter(|reason| !reason.is_empty())
                    .unwrap_or(match str_of(answer, "status") {
                        "completed" => "stop",
                        other => other,
                    });
                vec![with_finish(message("assistant", parts), reason)]
            }
            Operation::Messages => {
                let role = Some(str_of(answer, "role")).filter(|r| !r.is_empty());
                vec![with_finish(
                    message(
                        role.unwrap_or("assistant"),
                        anthropic_blocks(answer.get("content"), cap),
                    ),
                    str_of(answer, "stop_reason"),
                )]
            }
            Operation::GenerateContent | Operation::StreamGenerateContent => list("candidates")
                .map(|candidate| {
                    let content = candidate.get("content").unwrap_or(&Value::Null);
                    with_finish(
                        message(
                            gemini_role(match str_of(content, "role") {
                                "" => "model",
                                role => role,
                            }),
                            gemini_parts(content, cap),
                        ),
                        str_of(candidate, "finishReason"),
                    )
                })
                .collect(),
            Operation::Embeddings => Vec::new(),
        }
    }

    /// One event of a stream (its `data`).
    pub fn event(&mut self, data: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match self.format {
            Operation::ChatCompletions => self.openai_event(&event),
            Operation::Responses => match str_of(&event, "type") {
                "response.completed" | "response.incomplete" | "response.failed" => {
                    if let Some(response) = event.get("response") {
                        self.whole = Some(self.messages_of(response));
                    }
                }
                "response.output_text.delta" => {
                    let Self { room, choices, .. } = self;
                    if choices.is_empty() {
                        choices.push(Choice::default());
                    }
                    if let Some(text) = choices.first_mut().and_then(Choice::text) {
                        room.append(text, str_of(&event, "delta"));
                    }
                }
                _ => {}
            },
            Operation::Messages => self.anthropic_event(&event),
            Operation::GenerateContent | Operation::StreamGenerateContent => {
                self.gemini_event(&event);
            }
            Operation::Embeddings => {}
        }
    }

    fn openai_event(&mut self, event: &Value) {
        self.each_choice(event, "choices", |room, choice, delta_choice| {
            let delta = delta_choice.get("delta").unwrap_or(&Value::Null);
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                choice.role = prefix(role, 64).to_owned();
            }
            if let Some(text) = delta.get("content").and_then(Value::as_str)
                && let Some(into) = choice.text()
            {
                room.append(into, text);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let slot = index_of(call);
                if slot >= MOST_INDEXES {
                    continue;
                }
                let function = call.get("function").unwrap_or(&Value::Null);
                if let Some(Part::ToolCall {
                    id,
                    name,
                    arguments,
                    ..
                }) = choice.tool_call(slot)
                {
                    if let Some(given) = call.get("id").and_then(Value::as_str) {
                        *id = prefix(given, 256).to_owned();
                    }
                    if let Some(given) = function.get("name").and_then(Value::as_str) {
                        *name = prefix(given, 256).to_owned();
                    }
                    if let Some(more) = function.get("arguments").and_then(Value::as_str) {
                        room.append(arguments, more);
                    }
                }
            }
            if let Some(reason) = delta_choice.get("finish_reason").and_then(Value::as_str) {
                choice.finish_reason = prefix(reason, 256).to_owned();
            }
        });
    }

    fn anthropic_event(&mut self, event: &Value) {
        let Self { room, choices, .. } = self;
        if choices.is_empty() {
            choices.push(Choice::default());
        }
        let Some(choice) = choices.first_mut() else {
            return;
        };
        match str_of(event, "type") {
            "message_start" => {
                let role = event.get("message").map(|m| str_of(m, "role"));
                choice.role = prefix(role.unwrap_or_default(), 64).to_owned();
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                let started = match str_of(block, "type") {
                    "text" => {
                        let mut text = String::new();
                        room.append(&mut text, str_of(block, "text"));
                        Part::Text(text)
                    }
                    "tool_use" => Part::ToolCall {
                        slot: index_of(event),
                        id: prefix(str_of(block, "id"), 256).to_owned(),
                        name: prefix(str_of(block, "name"), 256).to_owned(),
                        arguments: String::new(),
                    },
                    kind => Part::Other(prefix(kind, 64).to_owned()),
                };
                if let Some(part) = choice.block(index_of(event)) {
                    *part = started;
                }
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match (choice.block(index_of(event)), str_of(delta, "type")) {
                    (Some(Part::Text(text)), "text_delta") => {
                        room.append(text, str_of(delta, "text"));
                    }
                    (Some(Part::ToolCall { arguments, .. }), "input_json_delta") => {
                        room.append(arguments, str_of(delta, "partial_json"));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                if let Some(reason) = delta.get("stop_reason").and_then(Value::as_str) {
                    choice.finish_reason = prefix(reason, 256).to_owned();
                }
            }
            _ => {}
        }
    }

    fn gemini_event(&mut self, event: &Value) {
        self.each_choice(event, "candidates", |room, choice, candidate| {
            let content = candidate.get("content").unwrap_or(&Value::Null);
            if let Some(role) = content.get("role").and_then(Value::as_str) {
                choice.role = gemini_role(prefix(role, 64)).to_owned();
            }
            for part in content
                .get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    if let Some(into) = choice.text() {
                        room.append(into, text);
                    }
                } else if let Some(call) = part.get("functionCall") {
                    let slot = choice.parts.len();
                    if slot < MOST_INDEXES {
                        choice.parts.push(Part::ToolCall {
                            slot,
                            id: prefix(str_of(call, "id"), 256).to_owned(),
                            name: prefix(str_of(call, "name"), 256).to_owned(),
                            arguments: String::new(),
                        });
                        if let Some(Part::ToolCall { arguments, .. }) = choice.parts.last_mut() {
                            room.append(arguments, &as_text(call.get("args")));
                        }
                    }
                }
            }
            if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                choice.finish_reason = prefix(reason, 256).to_owned();
            }
        });
    }

    /// The answer's messages, held to the cap; `None` when nothing was gathered.
    pub fn finish(self) -> Option<CapturedOutput> {
        let messages = match self.whole {
            Some(messages) => messages,
            None => self
                .choices
                .iter()
                .map(|choice| choice.to_message(self.room.cap))
                .collect(),
        };
        if messages.is_empty() {
            return None;
        }
        let (messages, truncated) = fit(messages, self.room.cap);
        Some(CapturedOutput {
            messages,
            truncated: truncated || self.room.gathered >= self.room.cap,
        })
    }
}

/// The longest start of `text` of at most `most` bytes that ends on a character.
fn prefix(text: &str, most: usize) -> &str {
    if text.len() <= most {
        return text;
    }
    let mut end = most;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Bounds the work of fitting a huge conversation: messages older than those whose texts add
/// up to eight times the cap (or than the newest `cap / 16`: no message is written in fewer
/// bytes) could never be recorded whole, so they go first. Whether any went.
fn drop_far_past(messages: &mut Vec<Value>, cap: usize) -> bool {
    let most_messages = (cap / 16).max(1);
    let most_said = cap.saturating_mul(8);
    let mut said = 0_usize;
    let mut keep = 0;
    for message in messages.iter().rev() {
        said = said.saturating_add(total_said(message));
        if keep == most_messages || (keep > 0 && said > most_said) {
            break;
        }
        keep += 1;
    }
    let drop = messages.len() - keep;
    messages.drain(..drop);
    drop > 0
}

fn total_said(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(total_said).sum(),
        Value::Object(object) => object
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) if SAID.contains(&key.as_str()) => text.len(),
                other => total_said(other),
            })
            .sum(),
        _ => 0,
    }
}

/// The keys whose strings are what a conversation says (and so what gives way).
const SAID: [&str; 3] = ["content", "arguments", "response"];

fn longest_said(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.iter().map(longest_said).max().unwrap_or(0),
        Value::Object(object) => object
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) if SAID.contains(&key.as_str()) => text.len(),
                other => longest_said(other),
            })
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}

fn cut_said(value: &mut Value, most: usize) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|item| cut_said(item, most)),
        Value::Object(object) => cut_object(object, most),
        _ => {}
    }
}

fn cut_object(object: &mut Map<String, Value>, most: usize) {
    for (key, value) in object.iter_mut() {
        match value {
            Value::String(text) if SAID.contains(&key.as_str()) => {
                let kept = prefix(text, most).len();
                text.truncate(kept);
            }
            other => cut_said(other, most),
        }
    }
}

/// `messages` as JSON of at most `cap` bytes, and whether anything gave way: every text is
/// cut to the longest length that fits, and if even empty texts do not, the oldest messages
/// go (the newest say most about the answer).
fn fit(mut messages: Vec<Value>, cap: usize) -> (String, bool) {
    let dropped = drop_far_past(&mut messages, cap);
    let whole = Value::Array(messages);
    let text = whole.to_string();
    if text.len() <= cap {
        return (text, dropped);
    }
    let cut_to = |most: usize| {
        let mut cut = whole.clone();
        cut_said(&mut cut, most);
        Some(cut.to_string()).filter(|text| text.len() <= cap)
    };
    if let Some(mut best) = cut_to(0) {
        // The longest cut that fits: `fits` always does, `beyond` never.
        let (mut fits, mut beyond) = (0, longest_said(&whole));
        while beyond - fits > 1 {
            let mid = fits + (beyond - fits) / 2;
            match cut_to(mid) {
                Some(text) => {
                    best = text;
                    fits = mid;
                }
                None => beyond = mid,
            }
        }
        return (best, true);
    }
    // Even with every text emptied there are too many messages: the oldest go, until the
    // newest fill at most half the cap emptied, the other half left for what they say.
    let Value::Array(mut messages) = whole else {
        return ("[]".to_owned(), true);
    };
    let emptied: Vec<usize> = messages
        .iter()
        .map(|message| {
            let mut empty = message.clone();
            cut_said(&mut empty, 0);
            empty.to_string().len() + 1
        })
        .collect();
    let mut size = 2;
    let mut keep = 0;
    for one in emptied.iter().rev() {
        if size + one > cap / 2 {
            break;
        }
        size += one;
        keep += 1;
    }
    if keep == 0 && emptied.last().is_some_and(|one| one + 2 <= cap) {
        keep = 1;
    }
    if keep == 0 {
        return ("[]".to_owned(), true);
    }
    messages.drain(..messages.len() - keep);
    (fit(messages, cap).0, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn captured(format: Operation, body: Value) -> CapturedInput {
        input(format, body.to_string().as_bytes(), 4096).unwrap()
    }

    #[test]
    fn each_familys_request_becomes_the_conventions_messages() {
        let openai = captured(
            Operation::ChatCompletions,
            json!({"model": "m", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}),
        );
        assert_eq!(
            openai.system, None,
            "OpenAI's instructions are in its history"
        );
        assert_eq!(
            parsed(&openai.messages),
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": "Weather?"}, {"type": "image_url"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "weather",
                                                 "arguments": "{\"city\":\"Paris\"}"}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "sunny"}]}
            ])
        );
        assert!(!openai.messages.contains("AAAA"), "no media bytes");

        let anthropic = captured(
            Operation::Messages,
            json!({"model": "m", "max_tokens": 9, "system": "Be brief.", "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"}]}]}),
        );
        assert_eq!(
            parsed(anthropic.system.as_deref().unwrap()),
            json!([{"type": "text", "content": "Be brief."}])
        );
        assert_eq!(
            parsed(&anthropic.messages),
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "Weather?"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "tu_1", "name": "weather",
                                                 "arguments": "{\"city\":\"Paris\"}"}]},
                {"role": "user", "parts": [{"type": "tool_call_response", "id": "tu_1", "response": "sunny"}]}
            ])
        );

        let gemini = captured(
            Operation::GenerateContent,
            json!({"systemInstruction": {"parts": [{"text": "Be brief."}]}, "contents": [
                {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]}]}),
        );
        assert_eq!(
            parsed(gemini.system.as_deref().unwrap()),
            json!([{"type": "text", "content": "Be brief."}])
        );
        assert_eq!(
            parsed(&gemini.messages),
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "Weather?"}, {"type": "inlineData"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "", "name": "weather",
                                                 "arguments": "{\"city\":\"Paris\"}"}]}
            ])
        );

        let responses = captured(
            Operation::Responses,
            json!({"model": "m", "instructions": "Be brief.", "input": "Weather?"}),
        );
        assert_eq!(
            parsed(&responses.messages),
            json!([{"role": "user", "parts": [{"type": "text", "content": "Weather?"}]}])
        );
        assert!(responses.system.is_some());
        assert!(
            input(Operation::Embeddings, br#"{"input":"x"}"#, 4096).is_none(),
            "embeddings are no conversation"
        );
        assert!(input(Operation::ChatCompletions, b"not json", 4096).is_none());
    }

    fn output_of(format: Operation, events: &[Value]) -> Value {
        let mut capture = OutputCapture::new(format, 4096);
        for event in events {
            capture.event(event.to_string().as_bytes());
        }
        parsed(&capture.finish().unwrap().messages)
    }

    #[test]
    fn each_familys_stream_is_gathered_into_its_answer() {
        let openai = output_of(
            Operation::ChatCompletions,
            &[
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
                json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1",
                        "function": {"name": "weather", "arguments": "{\"ci"}}]}}]}),
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                        "function": {"arguments": "ty\":\"Paris\"}"}}]}, "finish_reason": "tool_calls"}]}),
                json!({"choices": [{"index": 99, "delta": {"content": "ignored"}}]}),
            ],
        );
        assert_eq!(
            openai,
            json!([{"role": "assistant", "parts": [
                {"type": "text", "content": "Hello"},
                {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"}],
                "finish_reason": "tool_calls"}])
        );

        let anthropic = output_of(
            Operation::Messages,
            &[
                json!({"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": []}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {}}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}),
            ],
        );
        assert_eq!(
            anthropic,
            json!([{"role": "assistant", "parts": [
                {"type": "text", "content": "Hi"},
                {"type": "tool_call", "id": "tu_1", "name": "weather", "arguments": "{}"}],
                "finish_reason": "tool_use"}])
        );

        let gemini = output_of(
            Operation::StreamGenerateContent,
            &[
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}]}),
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP", "index": 0}]}),
            ],
        );
        assert_eq!(
            gemini,
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "STOP"}])
        );

        let responses = output_of(
            Operation::Responses,
            &[
                json!({"type": "response.output_text.delta", "delta": "Hel"}),
                json!({"type": "response.completed", "response": {"status": "completed", "output": [
                    {"type": "reasoning", "summary": []},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}]}}),
            ],
        );
        assert_eq!(
            responses,
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"}])
        );
    }

    #[test]
    fn whole_answers_are_read_in_the_upstreams_format() {
        let whole = |format, body: Value| {
            let mut capture = OutputCapture::new(format, 4096);
            capture.whole(body.to_string().as_bytes());
            parsed(&capture.finish().unwrap().messages)
        };
        assert_eq!(
            whole(
                Operation::ChatCompletions,
                json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]})
            ),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"}])
        );
        assert_eq!(
            whole(
                Operation::Messages,
                json!({"role": "assistant", "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn"})
            ),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "end_turn"}])
        );
        assert_eq!(
            whole(
                Operation::GenerateContent,
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}, "finishReason": "MAX_TOKENS"}]})
            ),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "MAX_TOKENS"}])
        );
        let mut nothing = OutputCapture::new(Operation::ChatCompletions, 4096);
        nothing.whole(b"<html>");
        assert!(nothing.finish().is_none());
    }

    #[test]
    fn what_is_recorded_stays_within_the_projects_size() {
        let long = "é".repeat(3000);
        let body = json!({"messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": long},
            {"role": "user", "content": "and then?"}]});
        let cut = input(Operation::ChatCompletions, body.to_string().as_bytes(), 400).unwrap();
        assert!(cut.truncated);
        assert!(cut.messages.len() <= 400, "{}", cut.messages.len());
        let messages = parsed(&cut.messages);
        assert_eq!(messages.as_array().unwrap().len(), 3, "short texts survive");
        assert_eq!(
            messages[0]["parts"][0]["content"], "first question",
            "the longest text gives way first"
        );
        assert!(messages[1]["parts"][0]["content"].as_str().unwrap().len() > 100);

        let many: Vec<Value> = (0..200)
            .map(|n| json!({"role": "user", "content": format!("message {n}")}))
            .collect();
        let cut = input(
            Operation::ChatCompletions,
            json!({"messages": many}).to_string().as_bytes(),
            300,
        )
        .unwrap();
        assert!(cut.truncated && cut.messages.len() <= 300);
        let kept = parsed(&cut.messages);
        assert_eq!(
            kept.as_array().unwrap().last().unwrap()["parts"][0]["content"],
            "message 199",
            "the newest messages are kept"
        );

        // A conversation far beyond the cap is cut to its recent past before it is fitted.
        let huge: Vec<Value> = (0..4_000)
            .map(|n| json!({"role": "user", "content": format!("{n}: {}", "x".repeat(500))}))
            .collect();
        let cut = input(
            Operation::ChatCompletions,
            json!({"messages": huge}).to_string().as_bytes(),
            4096,
        )
        .unwrap();
        assert!(cut.truncated && cut.messages.len() <= 4096);
        let kept = parsed(&cut.messages);
        let last = kept.as_array().unwrap().last().unwrap()["parts"][0]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(last.starts_with("3999: "), "{last}");

        let mut stream = OutputCapture::new(Operation::ChatCompletions, 64);
        for _ in 0..1000 {
            stream.event(br#"{"choices":[{"index":0,"delta":{"content":"0123456789"}}]}"#);
        }
        let output = stream.finish().unwrap();
        assert!(output.truncated && output.messages.len() <= 64);
        assert!(parsed(&output.messages).is_array());

        let small = input(
            Operation::ChatCompletions,
            br#"{"messages":[{"role":"user","content":"hi"}]}"#,
            4096,
        )
        .unwrap();
        assert!(!small.truncated);
    }
}
