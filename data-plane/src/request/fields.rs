//! A chat-completions request as the proxy needs it: its top-level fields, each kept as raw
//! JSON. The proxy reads `model`, `stream` and `stream_options`, drops gateway-control fields,
//! and writes everything else upstream byte for byte — no JSON tree is built for the
//! messages it only passes on.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_shared::error_code::ErrorCode;

use crate::error_response::GatewayError;

/// Request fields that steer a gateway or an SDK, never the model: dropped before forwarding,
/// so nothing in a request can choose where a provider key goes.
pub(crate) const GATEWAY_CONTROL_FIELDS: &[&str] = &[
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

/// More top-level fields than any chat API defines: a body with more is refused, which also
/// bounds the duplicate-key check below.
const MAX_FIELDS: usize = 256;

/// The request's top-level fields, borrowed from the body: nothing is copied or allocated for a
/// field the proxy only passes on.
pub struct ChatRequest<'a> {
    body: &'a Bytes,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    pub model: Cow<'a, str>,
    pub stream: bool,
    /// The most output tokens the request allows, and the field that says so; `None` when it
    /// sets no limit.
    pub output_limit: Option<OutputLimit>,
}

/// An output-token limit a request set, checked to be a whole number from 1 up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    pub tokens: u64,
    pub field: &'static str,
}

/// The fields OpenAI's and Anthropic's APIs take as an output limit. Where a request sets more
/// than one, the largest is what the upstream might produce, so that is what is reserved.
const OUTPUT_LIMIT_FIELDS: &[&str] = &["max_completion_tokens", "max_tokens", "max_output_tokens"];

/// An output limit's raw JSON: absent or `null` is no limit; anything but a whole number from 1
/// up (0, negative, fractional, exponent, a string, past 2^64) is refused naming the field, so
/// no value can slip past a budget's reservation as "unknown".
fn output_limit(
    raw: Option<&RawValue>,
    field: &'static str,
) -> Result<Option<OutputLimit>, GatewayError> {
    let text = match raw.map(|raw| raw.get().trim()) {
        None | Some("null") => return Ok(None),
        Some(text) => text,
    };
    match text.parse::<u64>() {
        Ok(tokens) if tokens >= 1 => Ok(Some(OutputLimit { tokens, field })),
        _ => Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!("`{field}` must be a whole number of tokens, at least 1"),
        )
        .with_param(field)),
    }
}

fn invalid(message: &str, param: &'static str) -> GatewayError {
    GatewayError::new(ErrorCode::InvalidRequest, message).with_param(param)
}

impl<'a> ChatRequest<'a> {
    pub fn parse(body: &'a Bytes) -> Result<Self, GatewayError> {
        let Self {
            body,
            fields,
            model,
            ..
        } = Self::parse_fields(body)?;
        let field = |name: &str| find(&fields, name);
        let stream = match field("stream").map(|raw| raw.get().trim()) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("`stream` must be a boolean", "stream")),
        };
        if !field("messages").is_some_and(non_empty_array) {
            return Err(invalid("`messages` must be a non-empty array", "messages"));
        }
        let output_limit = top_level_output_limit(&fields)?;
        Ok(Self {
            body,
            fields,
            model,
            stream,
            output_limit,
        })
    }

    /// An embeddings request: `model`, and `input` as a non-empty string or array; embeddings
    /// are never streamed.
    pub fn parse_embeddings(body: &'a Bytes) -> Result<Self, GatewayError> {
        let mut request = Self::parse_fields(body)?;
        request.require_input()?;
        request.stream = false;
        Ok(request)
    }

    /// Embeddings and the Responses API both take `input`: a non-empty string or array.
    fn require_input(&self) -> Result<(), GatewayError> {
        let input_ok = self.field("input").is_some_and(|raw| {
            let text = raw.get().trim();
            non_empty_array(raw) || (text.starts_with('"') && text != "\"\"")
        });
        if input_ok {
            Ok(())
        } else {
            Err(invalid(
                "`input` must be a non-empty string or array",
                "input",
            ))
        }
    }

    /// A Responses API request: `model`, `input` (a string or a non-empty array), and an
    /// optional boolean `stream`.
    pub fn parse_responses(body: &'a Bytes) -> Result<Self, GatewayError> {
        let mut request = Self::parse_fields(body)?;
        request.require_input()?;
        request.output_limit = top_level_output_limit(&request.fields)?;
        request.stream = match request.field("stream").map(|raw| raw.get().trim()) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("`stream` must be a boolean", "stream")),
        };
        Ok(request)
    }

    /// An Anthropic Messages request: `model`, `messages` (non-empty), `max_tokens` (which
    /// Anthropic requires), and an optional boolean `stream`.
    pub fn parse_messages(body: &'a Bytes) -> Result<Self, GatewayError> {
        let request = Self::parse(body)?;
        if output_limit(request.field("max_tokens"), "max_tokens")?.is_none() {
            return Err(invalid(
                "`max_tokens` is required and must be a whole number",
                "max_tokens",
            ));
        }
        Ok(request)
    }

    /// A Gemini `generateContent` request: the model comes from the URL path; `contents`
    /// must be a non-empty array.
    pub fn parse_gemini(body: &'a Bytes, model: &str, stream: bool) -> Result<Self, GatewayError> {
        let fields = Self::top_level(body)?;
        if !find(&fields, "contents").is_some_and(non_empty_array) {
            return Err(invalid("`contents` must be a non-empty array", "contents"));
        }
        let output_limit = gemini_output_limit(find(&fields, "generationConfig"))?;
        Ok(Self {
            body,
            fields,
            model: Cow::Owned(model.to_owned()),
            stream,
            output_limit,
        })
    }

    fn top_level(body: &'a Bytes) -> Result<Vec<(Cow<'a, str>, &'a RawValue)>, GatewayError> {
        match serde_json::from_slice(body) {
            Ok(TopLevel(fields)) => Ok(fields),
            Err(error) if error.is_data() => Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the request body must be a JSON object of at most {MAX_FIELDS} top-level fields ({error})"
                ),
            )),
            Err(error) => Err(GatewayError::new(
                ErrorCode::InvalidRequest,
                format!("the request body is not valid JSON: {error}"),
            )),
        }
    }

    /// Any top-level JSON object with a string `model`.
    fn parse_fields(body: &'a Bytes) -> Result<Self, GatewayError> {
        let fields = Self::top_level(body)?;
        let model = find(&fields, "model")
            .and_then(|raw| serde_json::from_str::<JsonStr<'a>>(raw.get()).ok())
            .map(|JsonStr(text)| text)
            .ok_or_else(|| invalid("`model` is required and must be a string", "model"))?;
        Ok(Self {
            body,
            fields,
            model,
            stream: false,
            output_limit: None,
        })
    }

    /// The whole request as a JSON tree, for the paths that rewrite it (translation to
    /// another family).
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.body).unwrap_or(Value::Null)
    }

    /// Whether the client asked for a stream's usage (`stream_options.include_usage`).
    pub fn asks_stream_usage(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: bool,
        }
        self.field("stream_options")
            .and_then(|raw| serde_json::from_str::<StreamOptions>(raw.get()).ok())
            .is_some_and(|options| options.include_usage)
    }

    /// `contents` as a JSON tree (Gemini's MOCK answer reads it).
    pub fn contents(&self) -> Value {
        self.field("contents")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// `input` as a JSON tree (the Responses API's MOCK answer reads it).
    pub fn input_value(&self) -> Value {
        self.field("input")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// The request's text inputs (for MOCK embeddings and estimates): `input` as a list of
    /// strings; token arrays count as their JSON text.
    pub fn inputs(&self) -> Vec<String> {
        match self
            .field("input")
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        {
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => text,
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn field(&self, name: &str) -> Option<&'a RawValue> {
        find(&self.fields, name)
    }

    /// A top-level field's raw JSON.
    pub fn raw_field(&self, name: &str) -> Option<&'a str> {
        self.field(name).map(RawValue::get)
    }

    /// A top-level field that is a non-negative integer.
    pub fn number(&self, name: &str) -> Option<u64> {
        self.field(name)?.get().trim().parse().ok()
    }

    /// The messages as a JSON tree, for the few paths that read them (MOCK answers, estimates).
    pub fn messages(&self) -> Value {
        self.field("messages")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// The raw messages, shared with the body rather than copied, for a later estimate if the
    /// upstream reports no usage.
    pub fn messages_bytes(&self) -> Option<Bytes> {
        self.field("messages")
            .or_else(|| self.field("contents"))
            .or_else(|| self.field("input"))
            .map(|raw| self.body.slice_ref(raw.get().as_bytes()))
    }

    /// The body to send upstream: `model` replaced by the upstream's name, control fields
    /// dropped, and for streams `stream_options.include_usage` set so usage can be metered.
    /// `ask_stream_usage`: chat completions report a stream's usage only when asked; the
    /// Responses API always does (and refuses the option).
    /// `upstream_model` `None`: the upstream names the model in its URL (Gemini), so the body
    /// carries none.
    pub fn upstream_body(
        &self,
        upstream_model: Option<&str>,
        ask_stream_usage: bool,
    ) -> Result<Bytes, GatewayError> {
        let ask = self.stream && ask_stream_usage;
        let encode_error = |_| GatewayError::new(ErrorCode::Internal, "cannot encode the request");
        let size: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + upstream_model.map_or(0, str::len) + 64);
        out.push(b'{');
        let mut first = true;
        if let Some(upstream_model) = upstream_model {
            out.extend_from_slice(b"\"model\":");
            serde_json::to_writer(&mut out, upstream_model).map_err(encode_error)?;
            first = false;
        }
        for (key, raw) in &self.fields {
            let key: &str = key;
            if key == "model"
                || (ask && key == "stream_options")
                || GATEWAY_CONTROL_FIELDS.contains(&key)
            {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, key).map_err(encode_error)?;
            out.push(b':');
            out.extend_from_slice(raw.get().as_bytes());
        }
        if ask {
            let mut options: Map<String, Value> = self
                .field("stream_options")
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or_default();
            options.insert("include_usage".to_owned(), Value::Bool(true));
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(b"\"stream_options\":");
            serde_json::to_writer(&mut out, &options).map_err(encode_error)?;
        }
        out.push(b'}');
        Ok(Bytes::from(out))
    }
}

fn non_empty_array(raw: &RawValue) -> bool {
    let text = raw.get().trim();
    text.starts_with('[') && !text[1..].trim_start().starts_with(']')
}

/// The largest output limit among the top-level fields that set one.
fn top_level_output_limit(
    fields: &[(Cow<'_, str>, &RawValue)],
) -> Result<Option<OutputLimit>, GatewayError> {
    let mut largest: Option<OutputLimit> = None;
    for &field in OUTPUT_LIMIT_FIELDS {
        if let Some(limit) = output_limit(find(fields, field), field)?
            && largest.is_none_or(|largest| limit.tokens > largest.tokens)
        {
            largest = Some(limit);
        }
    }
    Ok(largest)
}

/// Gemini's `generationConfig.maxOutputTokens`. A `generationConfig` that cannot be read (not
/// an object, a field twice) is refused: its limit could not be known.
fn gemini_output_limit(config: Option<&RawValue>) -> Result<Option<OutputLimit>, GatewayError> {
    #[derive(Deserialize)]
    struct Config<'a> {
        #[serde(rename = "maxOutputTokens", borrow, default)]
        max_output_tokens: Option<&'a RawValue>,
    }
    let config = match config.map(|raw| raw.get().trim()) {
        None | Some("null") => return Ok(None),
        Some(text) => serde_json::from_str::<Config>(text).map_err(|_| {
            invalid(
                "`generationConfig` must be an object, each field once",
                "generationConfig",
            )
        })?,
    };
    output_limit(config.max_output_tokens, "generationConfig.maxOutputTokens")
}

fn find<'a>(fields: &[(Cow<'a, str>, &'a RawValue)], name: &str) -> Option<&'a RawValue> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, raw)| *raw)
}

/// A JSON string, borrowed when it has no escapes.
struct JsonStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A JSON object's members in order. A repeated key keeps its last value, as most JSON
/// readers do, so the proxy and the upstream agree on what the request says.
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(8);
                while let Some(JsonStr(key)) = map.next_key::<JsonStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    if let Some(existing) = fields.iter_mut().find(|(known, _)| *known == key) {
                        existing.1 = value;
                    } else if fields.len() == MAX_FIELDS {
                        return Err(de::Error::custom(format!(
                            "more than {MAX_FIELDS} top-level fields"
                        )));
                    } else {
                        fields.push((key, value));
                    }
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_limits_are_whole_numbers_from_one_or_refused_naming_the_field() {
        let chat = |limit: &str| {
            parse(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{limit}}}"#
            ))
        };
        for whole in [
            "1",
            "2147483648",
            "9007199254740992",
            "9223372036854775807",
            "18446744073709551615",
        ] {
            let limit = chat(whole).unwrap().output_limit.unwrap();
            assert_eq!(limit.tokens.to_string(), whole);
            assert_eq!(limit.field, "max_tokens");
        }
        assert_eq!(chat("null").unwrap().output_limit, None);
        for hostile in [
            "0",
            "-1",
            "1.5",
            "100.0",
            "1e3",
            "\"100\"",
            "18446744073709551616",
            "true",
            "[1]",
            "{}",
        ] {
            let error = chat(hostile).err().unwrap();
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{hostile}");
            assert_eq!(error.param, Some("max_tokens"), "{hostile}");
        }
        // Several fields: the largest is what the upstream might produce.
        let both = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":10,"max_completion_tokens":900}"#,
        )
        .unwrap();
        assert_eq!(
            both.output_limit.map(|l| (l.tokens, l.field)),
            Some((900, "max_completion_tokens"))
        );
        // Anthropic's Messages API requires one.
        let messages = |extra: &str| {
            let text =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
            let body: &'static Bytes = Box::leak(Box::new(Bytes::from(text)));
            ChatRequest::parse_messages(body).map(|r| r.output_limit)
        };
        assert!(messages("").is_err());
        assert!(messages(r#","max_tokens":null"#).is_err());
        assert!(messages(r#","max_tokens":-5"#).is_err());
        assert_eq!(
            messages(r#","max_tokens":64"#).unwrap().map(|l| l.tokens),
            Some(64)
        );
    }

    #[test]
    fn gemini_output_limits_are_read_from_generation_config() {
        let gemini = |config: &str| {
            let text = format!(
                r#"{{"contents":[{{"parts":[{{"text":"hi"}}]}}],"generationConfig":{config}}}"#
            );
            let body: &'static Bytes = Box::leak(Box::new(Bytes::from(text)));
            ChatRequest::parse_gemini(body, "g", false).map(|r| r.output_limit)
        };
        assert_eq!(
            gemini(r#"{"maxOutputTokens":256}"#)
                .unwrap()
                .map(|l| l.tokens),
            Some(256)
        );
        assert_eq!(gemini(r#"{"temperature":0.5}"#).unwrap(), None);
        assert_eq!(gemini("null").unwrap(), None);
        for hostile in [
            r#"{"maxOutputTokens":-1}"#,
            r#"{"maxOutputTokens":1e30}"#,
            r#"{"maxOutputTokens":"64"}"#,
            r#"{"maxOutputTokens":1,"maxOutputTokens":99999999999}"#,
            r#""fast""#,
        ] {
            assert!(gemini(hostile).is_err(), "{hostile}");
        }
    }

    fn parse(text: &str) -> Result<ChatRequest<'static>, GatewayError> {
        let body: &'static Bytes = Box::leak(Box::new(Bytes::copy_from_slice(text.as_bytes())));
        ChatRequest::parse(body)
    }

    #[test]
    fn rewrites_model_and_keeps_everything_else_verbatim() {
        let request = parse(r#"{"model":"public","messages":[{"role":"user","content":"hi \u00e9"}],"temperature":0.25,"metadata":{"k":"v"}}"#).unwrap();
        assert_eq!(request.model, "public");
        let upstream: Value =
            serde_json::from_slice(&request.upstream_body(Some("gpt-4o-2024"), true).unwrap())
                .unwrap();
        assert_eq!(upstream["model"], "gpt-4o-2024");
        assert_eq!(upstream["temperature"], 0.25);
        assert_eq!(upstream["metadata"]["k"], "v");
        assert_eq!(upstream["messages"][0]["content"], "hi é");
        assert!(upstream.get("stream_options").is_none());
    }

    #[test]
    fn escaped_names_and_repeated_fields_read_as_the_upstream_would() {
        let request = parse(
            r#"{"model":"first","mod\u0065l":"caf\u00e9","messages":[1],"stream":true,"stream":false}"#,
        )
        .unwrap();
        assert_eq!(request.model, "café");
        assert!(!request.stream);
        let upstream: Value =
            serde_json::from_slice(&request.upstream_body(Some("up"), true).unwrap()).unwrap();
        assert_eq!(upstream["model"], "up");
        assert_eq!(upstream["stream"], false);
        let escaped =
            parse(r#"{"model":"m","messages":[1],"api_\u0062ase":"http://evil"}"#).unwrap();
        let body =
            String::from_utf8(escaped.upstream_body(Some("m"), true).unwrap().to_vec()).unwrap();
        assert!(!body.contains("evil"), "{body}");
    }

    #[test]
    fn too_many_fields_are_refused() {
        let mut body = String::from(r#"{"model":"m","messages":[1]"#);
        for n in 0..MAX_FIELDS {
            body.push_str(&format!(",\"f{n}\":0"));
        }
        body.push('}');
        let error = parse(&body).err().unwrap();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn control_fields_never_go_upstream() {
        let request = parse(r#"{"model":"m","messages":[1],"api_base":"http://evil","base_url":"x","extra_body":{"api_base":"y"},"custom_host":"z"}"#).unwrap();
        let upstream =
            String::from_utf8(request.upstream_body(Some("m"), true).unwrap().to_vec()).unwrap();
        for field in ["api_base", "base_url", "extra_body", "custom_host", "evil"] {
            assert!(!upstream.contains(field), "{upstream}");
        }
    }

    #[test]
    fn streams_ask_for_usage_and_keep_other_options() {
        let request = parse(r#"{"model":"m","messages":[1],"stream":true,"stream_options":{"include_obfuscation":false}}"#).unwrap();
        assert!(request.stream);
        let upstream: Value =
            serde_json::from_slice(&request.upstream_body(Some("m"), true).unwrap()).unwrap();
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
