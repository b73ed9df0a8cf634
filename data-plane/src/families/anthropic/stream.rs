//! A streamed Anthropic answer to a translated chat request, event by event: text deltas
//! become content deltas, tool-use blocks become tool-call deltas, the stop reason a finish
//! reason; `message_start` and `message_delta` carry the usage for the closing chunk.

use serde_json::{Value, json};

use crate::families::translation::{ChatChunks, StreamEvents};

#[derive(Default)]
pub struct AnthropicEvents {
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_calls: Vec<(u64, usize)>,
}

impl StreamEvents for AnthropicEvents {
    fn event(&mut self, event: &Value, out: &mut ChatChunks) {
        match event["type"].as_str() {
            Some("message_start") => {
                if let Some(usage) = super::usage::usage_of(&event["message"]["usage"]) {
                    *out.usage_mut() = usage;
                }
                out.delta(0, json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") if event["content_block"]["type"] == "tool_use" => {
                let index = self.tool_calls.len();
                self.tool_calls
                    .push((event["index"].as_u64().unwrap_or(0), index));
                let block = &event["content_block"];
                out.delta(
                    0,
                    json!({"tool_calls": [{"index": index, "id": block["id"], "type": "function",
                        "function": {"name": block["name"], "arguments": ""}}]}),
                    None,
                );
            }
            Some("content_block_delta") => {
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => out.delta(0, json!({"content": delta["text"]}), None),
                    Some("input_json_delta") => {
                        let block = event["index"].as_u64().unwrap_or(0);
                        if let Some(&(_, index)) = self.tool_calls.iter().find(|(b, _)| *b == block)
                        {
                            out.delta(
                                0,
                                json!({"tool_calls": [{"index": index,
                                    "function": {"arguments": delta["partial_json"]}}]}),
                                None,
                            );
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(output) = event["usage"]["output_tokens"].as_u64() {
                    out.usage_mut().output_tokens = output;
                }
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    let finish = super::translate::finish_reason(Some(reason));
                    out.delta(0, json!({}), Some(finish));
                }
            }
            Some("message_stop") => out.close(),
            Some("error") => out.error(&event["error"]["message"], &event["error"]["type"]),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::translation::translate_stream_for_test;

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
        let chunks = translate_stream_for_test(&super::super::Anthropic, stream.as_bytes(), true);
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
        assert_eq!(chunks[6]["usage"]["prompt_tokens"], 5);
        assert_eq!(chunks[6]["usage"]["completion_tokens"], 9);
        assert_eq!(chunks.len(), 7);
    }
}
