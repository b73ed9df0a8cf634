//! A chat-completions request as the proxy needs it: its top-level fields, each kept as raw
//! JSON. The proxy reads `model`, `stream` and `stream_options`, drops gateway-control fields,
//! and writes everything else upstream byte for byte — no JSON tree is built for the
//! messages it only passes on.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;

/// Request fields that steer a gateway or an SDK, never the model: dropped before forwarding,
/// so nothing in a request can choose where a provider key goes.
const GATEWAY_CONTROL_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "baseURL",
    "api_key",
    "api_version",
    "custom_llm_provider",
    "custom_host",
    "extra_body",
    "extra_headers",
    "extra_query",
];

pub struct ChatRequest {
    fields: BTreeMap<String, Box<RawValue>>,
    pub model: String,
    pub stream: bool,
}

fn invalid(message: &str, param: &'static str) -> GatewayError {
    GatewayError::new(ErrorCode::InvalidRequest, message).with_param(param)
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<Self, GatewayError> {
        let fields: BTreeMap<String, Box<RawValue>> = match serde_json::from_slice(body) {
            Ok(fields) => fields,
            Err(error) if error.is_data() => {
                return Err(GatewayError::new(
                    ErrorCode::InvalidRequest,
                    "the request body must be a JSON object",
                ));
            }
            Err(error) => {
                return Err(GatewayError::new(
                    ErrorCode::InvalidRequest,
                    format!("the request body is not valid JSON: {error}"),
                ));
            }
        };
        let model = fields
            .get("model")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .ok_or_else(|| invalid("`model` is required and must be a string", "model"))?;
        let stream = match fields.get("stream").map(|raw| raw.get().trim()) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("`stream` must be a boolean", "stream")),
        };
        let messages_ok = fields.get("messages").is_some_and(|raw| {
            let text = raw.get().trim();
            text.starts_with('[') && !text[1..].trim_start().starts_with(']')
        });
        if !messages_ok {
            return Err(invalid("`messages` must be a non-empty array", "messages"));
        }
        Ok(Self {
            fields,
            model,
            stream,
        })
    }

    /// The messages as a JSON tree, for the few paths that read them (MOCK answers, estimates).
    pub fn messages(&self) -> Value {
        self.fields
            .get("messages")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// Takes the raw messages out, for a later estimate if the upstream reports no usage.
    pub fn take_messages(&mut self) -> Option<Box<RawValue>> {
        self.fields.remove("messages")
    }

    /// The body to send upstream: `model` replaced by the upstream's name, control fields
    /// dropped, and for streams `stream_options.include_usage` set so usage can be metered.
    pub fn upstream_body(&self, upstream_model: &str) -> Result<Bytes, GatewayError> {
        let encode_error = |_| GatewayError::new(ErrorCode::Internal, "cannot encode the request");
        let size: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + upstream_model.len() + 64);
        out.push(b'{');
        out.extend_from_slice(b"\"model\":");
        serde_json::to_writer(&mut out, upstream_model).map_err(encode_error)?;
        for (key, raw) in &self.fields {
            if key == "model"
                || (self.stream && key == "stream_options")
                || GATEWAY_CONTROL_FIELDS.contains(&key.as_str())
            {
                continue;
            }
            out.push(b',');
            serde_json::to_writer(&mut out, key).map_err(encode_error)?;
            out.push(b':');
            out.extend_from_slice(raw.get().as_bytes());
        }
        if self.stream {
            let mut options: Map<String, Value> = self
                .fields
                .get("stream_options")
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_default();
            options.insert("include_usage".to_owned(), Value::Bool(true));
            out.extend_from_slice(b",\"stream_options\":");
            serde_json::to_writer(&mut out, &options).map_err(encode_error)?;
        }
        out.push(b'}');
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ChatRequest, GatewayError> {
        ChatRequest::parse(text.as_bytes())
    }

    #[test]
    fn rewrites_model_and_keeps_everything_else_verbatim() {
        let request = parse(r#"{"model":"public","messages":[{"role":"user","content":"hi \u00e9"}],"temperature":0.25,"metadata":{"k":"v"}}"#).unwrap();
        assert_eq!(request.model, "public");
        let upstream: Value =
            serde_json::from_slice(&request.upstream_body("gpt-4o-2024").unwrap()).unwrap();
        assert_eq!(upstream["model"], "gpt-4o-2024");
        assert_eq!(upstream["temperature"], 0.25);
        assert_eq!(upstream["metadata"]["k"], "v");
        assert_eq!(upstream["messages"][0]["content"], "hi é");
        assert!(upstream.get("stream_options").is_none());
    }

    #[test]
    fn control_fields_never_go_upstream() {
        let request = parse(r#"{"model":"m","messages":[1],"api_base":"http://evil","base_url":"x","extra_body":{"api_base":"y"},"custom_host":"z"}"#).unwrap();
        let upstream = String::from_utf8(request.upstream_body("m").unwrap().to_vec()).unwrap();
        for field in ["api_base", "base_url", "extra_body", "custom_host", "evil"] {
            assert!(!upstream.contains(field), "{upstream}");
        }
    }

    #[test]
    fn streams_ask_for_usage_and_keep_other_options() {
        let request = parse(r#"{"model":"m","messages":[1],"stream":true,"stream_options":{"include_obfuscation":false}}"#).unwrap();
        assert!(request.stream);
        let upstream: Value = serde_json::from_slice(&request.upstream_body("m").unwrap()).unwrap();
        assert_eq!(
            upstream["stream_options"],
            serde_json::json!({"include_usage": true, "include_obfuscation": false})
        );
    }

    #[test]
    fn malformed_requests_name_the_problem() {
        for (body, param) in [
            (r#"{"messages":[1]}"#, Some("model")),
            (r#"{"model":7,"messages":[1]}"#, Some("model")),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":{}}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[1],"stream":"yes"}"#,
                Some("stream"),
            ),
            ("[1,2]", None),
            ("{\"model\": ", None),
            ("", None),
        ] {
            let error = parse(body).err().unwrap();
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{body}");
            assert_eq!(error.param, param, "{body}");
        }
    }
}
