//! A streamed Anthropic answer to a translated chat request, turned into OpenAI
//! `chat.completion.chunk` events as it arrives: text deltas become content deltas, tool-use
//! blocks become tool-call deltas, the stop reason a finish reason, and — when the client asked
//! for it with `stream_options.include_usage` — the usage a last chunk before `[DONE]`. The
//! body underneath is the metered one, so usage is recorded exactly as for any stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};
use serde_json::{Value, json};

use crate::http_body::BoxError;
use crate::metered_body::MeteredBody;

/// One SSE line longer than this is not an Anthropic event; it is dropped.
const MAX_LINE: usize = 1024 * 1024;

pub struct AnthropicToChat {
    inner: MeteredBody,
    translator: Translator,
}

impl AnthropicToChat {
    pub fn new(
        inner: MeteredBody,
        request_id: &str,
        model: &str,
        created: i64,
        include_usage: bool,
    ) -> Self {
        Self {
            inner,
            translator: Translator::new(request_id, model, created, include_usage),
        }
    }
}

/// The event-by-event translation, apart from the body so it can be tested alone.
struct Translator {
    line: Vec<u8>,
    out: VecDeque<Bytes>,
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_calls: Vec<(u64, usize)>,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    finished: bool,
}

impl Translator {
    fn new(request_id: &str, model: &str, created: i64, include_usage: bool) -> Self {
        Self {
            line: Vec::new(),
            out: VecDeque::new(),
            id: format!("chatcmpl-{request_id}"),
            model: model.to_owned(),
            created,
            include_usage,
            tool_calls: Vec::new(),
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            finished: false,
        }
    }

    fn chunk(&mut self, delta: Value, finish_reason: Value) {
        let chunk = json!({"id": self.id, "object": "chat.completion.chunk",
            "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]});
        self.out
            .push_back(Bytes::from(format!("data: {chunk}\n\n")));
    }

    fn feed(&mut self, mut data: &[u8]) {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&data[..end]);
            let line = std::mem::take(&mut self.line);
            self.event_line(&line);
            data = &data[end + 1..];
        }
        if self.line.len() + data.len() <= MAX_LINE {
            self.line.extend_from_slice(data);
        } else {
            self.line.clear();
        }
    }

    fn event_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(event) = serde_json::from_slice::<Value>(data.trim_ascii_start()) else {
            return;
        };
        match event["type"].as_str() {
            Some("message_start") => {
                let usage = &event["message"]["usage"];
                let count = |key: &str| usage[key].as_u64().unwrap_or(0);
                self.cached_tokens = count("cache_read_input_tokens");
                self.prompt_tokens = count("input_tokens")
                    + self.cached_tokens
                    + count("cache_creation_input_tokens");
                self.chunk(json!({"role": "assistant", "content": ""}), Value::Null);
            }
            Some("content_block_start") if event["content_block"]["type"] == "tool_use" => {
                let index = self.tool_calls.len();
                self.tool_calls
                    .push((event["index"].as_u64().unwrap_or(0), index));
                let block = &event["content_block"];
                self.chunk(
                    json!({"tool_calls": [{"index": index, "id": block["id"], "type": "function",
                        "function": {"name": block["name"], "arguments": ""}}]}),
                    Value::Null,
                );
            }
            Some("content_block_delta") => {
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        self.chunk(json!({"content": delta["text"]}), Value::Null);
                    }
                    Some("input_json_delta") => {
                        let block = event["index"].as_u64().unwrap_or(0);
                        if let Some(&(_, index)) = self.tool_calls.iter().find(|(b, _)| *b == block)
                        {
                            self.chunk(
                                json!({"tool_calls": [{"index": index,
                                    "function": {"arguments": delta["partial_json"]}}]}),
                                Value::Null,
                            );
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(output) = event["usage"]["output_tokens"].as_u64() {
                    self.completion_tokens = output;
                }
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    let finish = match reason {
                        "max_tokens" => "length",
                        "tool_use" => "tool_calls",
                        "refusal" => "content_filter",
                        _ => "stop",
                    };
                    self.chunk(json!({}), json!(finish));
                }
            }
            Some("message_stop") => self.finish(),
            Some("error") => {
                let error = json!({"error": {"message": event["error"]["message"],
                    "type": "upstream_error", "code": event["error"]["type"]}});
                self.out
                    .push_back(Bytes::from(format!("data: {error}\n\n")));
                self.finish();
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.include_usage {
            let total = self.prompt_tokens + self.completion_tokens;
            let usage = json!({"id": self.id, "object": "chat.completion.chunk",
                "created": self.created, "model": self.model, "choices": [],
                "usage": {"prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens, "total_tokens": total,
                    "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}});
            self.out
                .push_back(Bytes::from(format!("data: {usage}\n\n")));
        }
        self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    }
}

impl HttpBody for AnthropicToChat {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.translator.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.translator.feed(data);
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => {
                    // An upstream that ended without message_stop still ends the stream well.
                    if !this.translator.finished {
                        this.translator.finish();
                        continue;
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_use_streams_become_tool_call_deltas() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check.\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"lookup\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"x\\\"}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut translator = Translator::new("r1", "claude", 1, false);
        // Byte by byte: every split of the upstream's frames must translate the same.
        for byte in stream.as_bytes() {
            translator.feed(std::slice::from_ref(byte));
        }
        let events: Vec<String> = translator
            .out
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.trim().strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let delta = |i: usize| &chunks[i]["choices"][0]["delta"];
        assert_eq!(delta(0)["role"], "assistant");
        assert_eq!(delta(1)["content"], "Let me check.");
        assert_eq!(delta(2)["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(delta(2)["tool_calls"][0]["function"]["name"], "lookup");
        let arguments: String = (3..5)
            .map(|i| {
                delta(i)["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&arguments).unwrap(),
            json!({"q": "x"})
        );
        assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(chunks.len(), 6, "no usage chunk unless asked");
    }
}
