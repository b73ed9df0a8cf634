//! A mock OpenAI upstream on 127.0.0.1:0 speaking the real wire format: chat completions as
//! JSON or as SSE `chat.completion.chunk` events with a final usage chunk and `[DONE]`, and
//! OpenAI's error bodies; embeddings (`/v1/embeddings`, four-number vectors); the Responses
//! API (`/v1/responses`, JSON or its event stream); Anthropic's Messages API (`/v1/messages`);
//! Gemini's `generateContent` / `streamGenerateContent` (`/v1beta/models/...`). Azure OpenAI's
//! deployment paths
//! (`/openai/deployments/{name}/chat/completions` and `/embeddings`) answer the same way, the deployment standing
//! for the model. The upstream model name picks a behaviour, so one server covers every
//! scenario: `fail-401`, `fail-429`, `fail-500`, `slow` (answers after 3 s), `pause` (answers
//! after [`PAUSE`]), `redirect`, `no-usage` (an answer or stream without a usage block, also
//! from the Anthropic mock), `stall` (a stream that sends one chunk, then nothing),
//! `stall-body`, `cut-body` and `cut-stream` (see [`broken_answer`]), `echo-<status>` and
//! `echo-midstream` (the credential echoed back in headers and error bodies, see
//! [`echo_answer`]); anything else answers normally. Model listings answer
//! key checks in each family's format (OpenAI's Bearer key, Anthropic's `x-api-key`, Gemini's
//! `/v1beta/models` with `x-goog-api-key`): a key containing `invalid` is refused the family's
//! way (Google: 400 `API_KEY_INVALID`), one containing `noaccess` is forbidden. A last message
//! `usage:P/C[/K]` sets the usage reported (prompt, completion, cached prompt tokens). It
//! records every request and counts TCP connections, so a test can prove "zero upstream calls".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

pub const PROMPT_TOKENS: u64 = 11;
pub const COMPLETION_TOKENS: u64 = 7;
/// Input tokens the Anthropic mock reports as read from its cache, beside [`PROMPT_TOKENS`].
pub const ANTHROPIC_CACHE_READ: u64 = 2;
/// Thinking tokens the Gemini mock reports beside [`COMPLETION_TOKENS`].
pub const GEMINI_THOUGHTS: u64 = 2;
pub const STREAM_CHUNKS: usize = 5;
pub const STREAM_GAP: Duration = Duration::from_millis(150);
/// How long the `pause` model waits before it answers normally.
pub const PAUSE: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// The query string, if any (Azure's `api-version`).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    /// The ALPN protocol negotiated on each TLS connection.
    protocols: Mutex<Vec<String>>,
    last_chunk_sent: Mutex<Option<Instant>>,
}

type MockResponse = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

pub struct MockOpenAi {
    pub addr: SocketAddr,
    state: Arc<State>,
    /// Its own runtime, shut down without blocking when the mock is dropped (tests drop it
    /// from async code).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl MockOpenAi {
    /// Starts on its own runtime, so it serves whatever the test's threads are doing.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same upstream behind TLS (ALPN h2 and http/1.1) with the given server config.
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(State::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = state.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                serving.connections.fetch_add(1, Ordering::SeqCst);
                let state = serving.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn({
                        let state = state.clone();
                        move |request| handle(state.clone(), request)
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let protocol = stream
                                .get_ref()
                                .1
                                .alpn_protocol()
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .unwrap_or_default();
                            state.protocols.lock().unwrap().push(protocol);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    /// The ALPN protocol of each TLS connection so far.
    pub fn protocols(&self) -> Vec<String> {
        self.state.protocols.lock().unwrap().clone()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn last_chunk_sent(&self) -> Option<Instant> {
        *self.state.last_chunk_sent.lock().unwrap()
    }
}

fn json_response(status: StatusCode, body: Value) -> MockResponse {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: Value) -> MockResponse {
    json_response(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// `GET /v1/models[/{id}]` as a key check sees it: a key containing `invalid` is refused
/// (401, echoing the key as OpenAI's message does), one containing `noaccess` is forbidden
/// (403), model `gpt-nope` does not exist (404); anything else is listed.
fn models_answer(headers: &HeaderMap, model: Option<&str>) -> MockResponse {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return anthropic_models_answer(key, model);
    }
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if key.is_empty() || key.contains("invalid") {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."
            ),
            "invalid_request_error",
            json!("invalid_api_key"),
        );
    }
    if key.contains("noaccess") {
        return openai_error(
            StatusCode::FORBIDDEN,
            "You are not allowed to sample from this model",
            "invalid_request_error",
            Value::Null,
        );
    }
    match model {
        Some("gpt-nope") => openai_error(
            StatusCode::NOT_FOUND,
            "The model `gpt-nope` does not exist or you do not have access to it.",
            "invalid_request_error",
            json!("model_not_found"),
        ),
        Some(id) => json_response(
            StatusCode::OK,
            json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "system"}),
        ),
        None => json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model",
                   "created": 1_700_000_000, "owned_by": "system"}]}),
        ),
    }
}

/// Anthropic's `GET /v1/models[/{id}]`: a key containing `invalid` gets its authentication
/// error (401), `noaccess` its permission error (403), model `claude-nope` not found (404).
fn anthropic_models_answer(key: &str, model: Option<&str>) -> MockResponse {
    let error = |status: StatusCode, kind: &str, message: &str| {
        json_response(
            status,
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    };
    if key.contains("invalid") {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if key.contains("noaccess") {
        return error(
            StatusCode::FORBIDDEN,
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        );
    }
    let info = |id: &str| json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-09-29T00:00:00Z"});
    match model {
        Some("claude-nope") => error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "model: claude-nope",
        ),
        Some(id) => json_response(StatusCode::OK, info(id)),
        None => json_response(
            StatusCode::OK,
            json!({"data": [info("claude-sonnet-4-5")], "has_more": false,
                   "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"}),
        ),
    }
}

/// Google's answer to a key it does not know: 400, with the reason in the details.
fn gemini_key_invalid() -> MockResponse {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
               "status": "INVALID_ARGUMENT", "details": [{
                   "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                   "domain": "googleapis.com",
                   "metadata": {"service": "generativelanguage.googleapis.com"}}]}}),
    )
}

/// The `x-goog-api-key` sent, and Google's refusal of it if it refuses: none at all is an
/// unregistered caller (403), one containing `invalid` an unknown key (400 `API_KEY_INVALID`).
fn gemini_key(headers: &HeaderMap) -> (&str, Option<MockResponse>) {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let refusal = if key.is_empty() {
        Some(gemini_error(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers.",
            "PERMISSION_DENIED",
        ))
    } else if key.contains("invalid") {
        Some(gemini_key_invalid())
    } else {
        None
    };
    (key, refusal)
}

/// Gemini's `GET /v1beta/models[/{model}]`: a key containing `invalid` is unknown (400
/// `API_KEY_INVALID`), `noaccess` is denied (403), model `gemini-nope` is not found (404).
fn gemini_models_answer(headers: &HeaderMap, model: Option<&str>) -> MockResponse {
    let (key, refusal) = gemini_key(headers);
    if let Some(refused) = refusal {
        return refused;
    }
    if key.contains("noaccess") {
        return gemini_error(
            StatusCode::FORBIDDEN,
            "Permission denied: Consumer has been suspended.",
            "PERMISSION_DENIED",
        );
    }
    let info = |id: &str| {
        json!({"name": format!("models/{id}"), "displayName": id,
               "supportedGenerationMethods": ["generateContent", "countTokens"]})
    };
    match model {
        Some("gemini-nope") => gemini_error(
            StatusCode::NOT_FOUND,
            "models/gemini-nope is not found for API version v1beta",
            "NOT_FOUND",
        ),
        Some(id) => json_response(StatusCode::OK, info(id)),
        None => json_response(
            StatusCode::OK,
            json!({"models": [info("gemini-2.5-flash")]}),
        ),
    }
}

/// Named server-sent events, all at once.
fn sse_response(events: &[(&str, Value)]) -> MockResponse {
    let text: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Full::new(Bytes::from(text)).boxed())
        .unwrap()
}

/// The argument every mock tool call carries.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;
/// The signature the Gemini mock puts on its function calls and demands back, as Gemini 3
/// models do.
pub const GEMINI_SIGNATURE: &str = "c2lnbmVkLWJ5LW1vY2s=";

/// Top-level fields `generateContent` accepts; Google refuses any other with a 400.
const GEMINI_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
];

fn gemini_error(status: StatusCode, message: &str, kind: &str) -> MockResponse {
    json_response(
        status,
        json!({"error": {"code": status.as_u16(), "message": message, "status": kind}}),
    )
}

/// Gemini's `models/{model}:generateContent` and `:streamGenerateContent` (server-sent
/// events, as `alt=sse` asks): usage reports [`PROMPT_TOKENS`], [`COMPLETION_TOKENS`] and
/// [`GEMINI_THOUGHTS`] thinking tokens. With function declarations it calls the first one
/// (signed with [`GEMINI_SIGNATURE`]); given the function's response, it answers with it,
/// refusing a replayed call that lost its signature. Unknown fields get Google's 400.
fn gemini_answer(headers: &HeaderMap, rest: &str, body: &Value) -> MockResponse {
    if let (_, Some(refused)) = gemini_key(headers) {
        return refused;
    }
    let (model, method) = rest.rsplit_once(':').unwrap_or((rest, ""));
    if model == "missing" {
        return gemini_error(
            StatusCode::NOT_FOUND,
            "models/missing is not found for API version v1beta, or is not supported for generateContent.",
            "NOT_FOUND",
        );
    }
    if let Some(unknown) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !GEMINI_FIELDS.contains(&k.as_str())))
    {
        return gemini_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
            ),
            "INVALID_ARGUMENT",
        );
    }
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    if contents.is_empty() {
        return gemini_error(
            StatusCode::BAD_REQUEST,
            "* GenerateContentRequest.contents: contents is not specified",
            "INVALID_ARGUMENT",
        );
    }
    let parts_of = |content: &Value| content["parts"].as_array().cloned().unwrap_or_default();
    let answered = contents
        .last()
        .map(|last| {
            parts_of(last)
                .into_iter()
                .filter_map(|p| p.get("functionResponse").cloned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let replayed_unsigned = contents.iter().flat_map(parts_of).any(|part| {
        part.get("functionCall").is_some() && part["thoughtSignature"] != GEMINI_SIGNATURE
    });
    if replayed_unsigned {
        return gemini_error(
            StatusCode::BAD_REQUEST,
            "Function call is missing a thought_signature in functionCall parts.",
            "INVALID_ARGUMENT",
        );
    }
    let tool = body["tools"][0]["functionDeclarations"][0]["name"].as_str();
    let answer_parts = if let Some(response) = answered.first() {
        vec![json!({"text": format!("The tool said: {}", response["response"])})]
    } else if let Some(tool) = tool {
        let args: Value = serde_json::from_str(TOOL_ARGUMENTS).unwrap();
        vec![
            json!({"functionCall": {"name": tool, "args": args}, "thoughtSignature": GEMINI_SIGNATURE}),
        ]
    } else {
        vec![json!({"text": "Hello from the mock upstream"})]
    };
    let usage = json!({"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS,
                       "thoughtsTokenCount": GEMINI_THOUGHTS,
                       "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS + GEMINI_THOUGHTS});
    let chunk = |parts: Value, usage: Value, done: bool| {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if done {
            candidate["finishReason"] = json!("STOP");
        }
        json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model})
    };
    match method {
        "generateContent" => json_response(StatusCode::OK, chunk(json!(answer_parts), usage, true)),
        "streamGenerateContent" => {
            // Text arrives in two pieces; a function call whole, then an empty closing part.
            let (first, last) = match answer_parts[0]["text"].as_str() {
                Some(text) => {
                    let half = text.char_indices().nth(10).map_or(text.len(), |(i, _)| i);
                    (
                        json!([{"text": &text[..half]}]),
                        json!([{"text": &text[half..]}]),
                    )
                }
                None => (json!(answer_parts), json!([{"text": ""}])),
            };
            let text = format!(
                "data: {}\r\n\r\ndata: {}\r\n\r\n",
                chunk(first, json!({"promptTokenCount": PROMPT_TOKENS}), false),
                chunk(last, usage, true)
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Full::new(Bytes::from(text)).boxed())
                .unwrap()
        }
        _ => gemini_error(StatusCode::NOT_FOUND, "not found", "NOT_FOUND"),
    }
}

/// Anthropic's Messages API: a `message`, or with `stream: true` its event stream; model
/// `fail-401` gets Anthropic's authentication error. Usage reports [`PROMPT_TOKENS`] input
/// tokens plus [`ANTHROPIC_CACHE_READ`] read from the cache, and [`COMPLETION_TOKENS`]. With
/// tools it calls the first one; given a tool result, it answers with it.
fn anthropic_answer(headers: &HeaderMap, body: &Value) -> MockResponse {
    let model = body["model"].as_str().unwrap_or_default();
    if model == "fail-401" || headers.get("x-api-key").is_none() {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        );
    }
    let last_blocks = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_array())
        .cloned()
        .unwrap_or_default();
    let result = last_blocks.iter().find(|b| b["type"] == "tool_result");
    let tool = body["tools"][0]["name"].as_str();
    let (block, stop_reason) = if let Some(result) = result {
        (
            json!({"type": "text", "text": format!("The tool said: {}", result["content"])}),
            "end_turn",
        )
    } else if let Some(tool) = tool {
        (
            json!({"type": "tool_use", "id": "toolu_mock", "name": tool,
                   "input": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()}),
            "tool_use",
        )
    } else {
        (
            json!({"type": "text", "text": "Hello from the mock upstream"}),
            "end_turn",
        )
    };
    let usage = json!({"input_tokens": PROMPT_TOKENS, "cache_read_input_tokens": ANTHROPIC_CACHE_READ,
                       "cache_creation_input_tokens": 0, "output_tokens": COMPLETION_TOKENS});
    if body["stream"] != json!(true) {
        let mut message = json!({"id": "msg_mock", "type": "message", "role": "assistant",
               "model": model, "content": [block], "stop_reason": stop_reason,
               "stop_sequence": null, "usage": usage});
        if model == "no-usage" {
            message.as_object_mut().unwrap().remove("usage");
        }
        return json_response(StatusCode::OK, message);
    }
    let (start, delta) = if block["type"] == "tool_use" {
        (
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
            json!({"type": "input_json_delta", "partial_json": TOOL_ARGUMENTS}),
        )
    } else {
        (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": block["text"]}),
        )
    };
    let mut events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock",
            "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": PROMPT_TOKENS, "cache_read_input_tokens": ANTHROPIC_CACHE_READ,
                      "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": start}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": COMPLETION_TOKENS}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    if model == "no-usage" {
        // A compatible server that leaves the usage out.
        for (_, event) in &mut events {
            if let Some(object) = event.as_object_mut() {
                object.remove("usage");
            }
            if let Some(message) = event["message"].as_object_mut() {
                message.remove("usage");
            }
        }
    }
    sse_response(&events)
}

/// OpenAI's Responses API: a `response` object, or with `stream: true` its event sequence
/// ending in `response.completed`, which carries the usage.
fn responses_answer(body: &Value) -> MockResponse {
    let model = body["model"].as_str().unwrap_or_default();
    let usage = json!({"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
                       "output_tokens": COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
                       "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS});
    let response = |status: &str, usage: Value, text: Option<&str>| {
        let output = text.map_or(json!([]), |text| {
            json!([{
            "type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}])
        });
        json!({"id": "resp_mock", "object": "response", "created_at": 1_700_000_000,
               "status": status, "model": model, "output": output, "usage": usage})
    };
    if body["stream"] != json!(true) {
        return json_response(
            StatusCode::OK,
            response("completed", usage, Some("Hello from the mock upstream")),
        );
    }
    let events = [
        (
            "response.created",
            json!({"type": "response.created", "sequence_number": 0,
            "response": response("in_progress", Value::Null, None)}),
        ),
        (
            "response.output_text.delta",
            json!({"type": "response.output_text.delta",
            "sequence_number": 1, "item_id": "msg_mock", "output_index": 0, "content_index": 0,
            "delta": "Hello from the mock upstream"}),
        ),
        (
            "response.completed",
            json!({"type": "response.completed", "sequence_number": 2,
            "response": response("completed", usage, Some("Hello from the mock upstream"))}),
        ),
    ];
    sse_response(&events)
}

/// Answers that go wrong after their 200: `stall-body` sends half a chat completion and then
/// nothing; `cut-body` and `cut-stream` promise more bytes than they send (a whole answer, or
/// two stream events) and hang up — the connection breaks off mid-answer.
fn broken_answer(model: &str, body: &Value) -> MockResponse {
    let whole = json!({"id": "chatcmpl-broken", "object": "chat.completion", "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                    "finish_reason": "stop"}]})
    .to_string();
    let (sent, content_type) = if model == "cut-stream" || body["stream"] == json!(true) {
        let event = |text: &str| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-broken",
            "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            )
        };
        (
            format!("{}{}", event("Hel"), event("lo")),
            "text/event-stream",
        )
    } else {
        (whole[..whole.len() / 2].to_owned(), "application/json")
    };
    let stall = model == "stall-body";
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
    let promised = sent.len() + 1000;
    tokio::spawn(async move {
        let _ = sender.send(Ok(Frame::data(Bytes::from(sent)))).await;
        if stall {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        // Dropping the sender ends the body short of its length: hyper breaks the connection.
    });
    Response::builder()
        .header("content-type", content_type)
        .header("content-length", promised)
        .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(receiver)).boxed())
        .unwrap()
}

/// The usage block to report: [`PROMPT_TOKENS`] / [`COMPLETION_TOKENS`] / no cached tokens,
/// unless the last message says `usage:PROMPT/COMPLETION[/CACHED]`, so a test can choose.
fn reported_usage(body: &Value) -> (u64, u64, u64) {
    let said = body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str())
        .and_then(|content| content.strip_prefix("usage:"));
    let Some(said) = said else {
        return (PROMPT_TOKENS, COMPLETION_TOKENS, 0);
    };
    let numbers: Vec<u64> = said
        .split('/')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    match numbers.as_slice() {
        [prompt, completion] => (*prompt, *completion, 0),
        [prompt, completion, cached] => (*prompt, *completion, *cached),
        _ => (PROMPT_TOKENS, COMPLETION_TOKENS, 0),
    }
}

/// The upstream model a request names: in the path (model reads, Gemini, Azure deployments)
/// or in the body.
fn upstream_model<'a>(path: &'a str, body: &'a Value) -> &'a str {
    let in_path = path
        .strip_prefix("/v1/models/")
        .or_else(|| path.strip_prefix("/v1beta/models/"))
        .map(|rest| rest.split(':').next().unwrap_or(rest))
        .or_else(|| {
            path.strip_prefix("/openai/deployments/")
                .and_then(|rest| rest.split('/').next())
        });
    in_path.unwrap_or_else(|| body["model"].as_str().unwrap_or_default())
}

/// The credential a request carried, however its family sends it.
fn sent_credential(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("authorization")
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
        .or_else(|| header("x-api-key"))
        .or_else(|| header("api-key"))
        .or_else(|| header("x-goog-api-key"))
        .unwrap_or_default()
        .to_owned()
}

/// The forms of a key an echoing upstream repeats: as sent, base64 and hex.
pub fn echoed_forms(key: &str) -> [String; 5] {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    [
        key.to_owned(),
        STANDARD.encode(key),
        URL_SAFE.encode(key),
        hex.to_uppercase(),
        hex,
    ]
}

/// What upstream models `echo-<status>` answer: the credential they were sent, echoed as a
/// misconfigured or hostile upstream might — in every header a gateway could pass on and, for
/// an error status, in the family's own error body (as sent, base64 and hex). `echo-200`
/// answers `normal` with those headers; `echo-midstream` streams a first event, then the
/// family's mid-stream error quoting the key.
fn echo_answer(model: &str, path: &str, headers: &HeaderMap, normal: MockResponse) -> MockResponse {
    let key = sent_credential(headers);
    let [raw, base64, base64_url, hex_upper, hex] = echoed_forms(&key);
    let message = format!(
        "Incorrect API key provided: {raw}. Encoded: {base64} {base64_url} {hex} {hex_upper}"
    );
    let anthropic = path == "/v1/messages" || headers.contains_key("x-api-key");
    let gemini = path.starts_with("/v1beta/");
    let mut response = if model == "echo-midstream" {
        let events = if gemini {
            format!(
                "data: {}\r\n\r\ndata: {}\r\n\r\n",
                json!({"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}]}),
                json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}})
            )
        } else {
            format!(
                "event: message_start\ndata: {}\n\nevent: error\ndata: {}\n\n",
                json!({"type": "message_start", "message": {"id": "msg_echo", "type": "message",
                       "role": "assistant", "content": [], "model": model, "stop_reason": null,
                       "usage": {"input_tokens": 3, "output_tokens": 1}}}),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": message}})
            )
        };
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(events)).boxed())
            .unwrap()
    } else {
        let status = model
            .strip_prefix("echo-")
            .and_then(|status| status.parse::<u16>().ok())
            .and_then(|status| StatusCode::from_u16(status).ok())
            .unwrap_or(StatusCode::OK);
        if status.is_success() {
            normal
        } else if anthropic {
            json_response(
                status,
                json!({"type": "error", "error": {"type": "authentication_error", "message": message}}),
            )
        } else if gemini {
            gemini_error(status, &message, "INVALID_ARGUMENT")
        } else {
            openai_error(status, &message, "invalid_request_error", json!(raw))
        }
    };
    let echoed = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-remaining-tokens", raw.clone()),
        ("x-ratelimit-limit-requests", base64),
        ("anthropic-ratelimit-requests-remaining", base64_url),
        ("openai-processing-ms", hex),
        ("cache-control", format!("private, key={raw}")),
        ("retry-after", hex_upper),
        ("x-echoed-credential", raw),
    ] {
        echoed.insert(name, value.parse().unwrap());
    }
    response
}

async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<MockResponse, Infallible> {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let (normal, body) = answer(state, request).await;
    let model = upstream_model(&path, &body);
    Ok(if model.starts_with("echo-") {
        echo_answer(model, &path, &headers, normal)
    } else {
        normal
    })
}

/// The answer to `request`, and its body as JSON.
async fn answer(state: Arc<State>, request: Request<Incoming>) -> (MockResponse, Value) {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let headers = request.headers().clone();
    let bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(Recorded {
        path: path.clone(),
        query,
        headers: headers.clone(),
        body: body.clone(),
    });
    (respond(state, &path, &headers, &body).await, body)
}

/// The mock's answer, by path and upstream model.
async fn respond(state: Arc<State>, path: &str, headers: &HeaderMap, body: &Value) -> MockResponse {
    if let Some(rest) = path.strip_prefix("/v1/models") {
        return models_answer(headers, rest.strip_prefix('/'));
    }
    // Azure OpenAI names the model by its deployment, in the path.
    let azure = path.strip_prefix("/openai/deployments/");
    if path == "/v1/embeddings" || azure.is_some_and(|rest| rest.ends_with("/embeddings")) {
        let model = azure
            .and_then(|rest| rest.strip_suffix("/embeddings"))
            .map(str::to_owned)
            .unwrap_or_else(|| body["model"].as_str().unwrap_or_default().to_owned());
        let inputs = match &body["input"] {
            Value::Array(items) => items.len(),
            _ => 1,
        };
        let data: Vec<Value> = (0..inputs)
            .map(|index| {
                json!({"object": "embedding", "index": index,
                                "embedding": [0.25, -0.5, 0.125, 0.0625]})
            })
            .collect();
        return json_response(
            StatusCode::OK,
            json!({"object": "list", "data": data, "model": model,
                   "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}}),
        );
    }
    if path == "/v1/responses" {
        return responses_answer(body);
    }
    if path == "/v1/messages" {
        return anthropic_answer(headers, body);
    }
    if path == "/v1beta/models" {
        return gemini_models_answer(headers, None);
    }
    if let Some(rest) = path.strip_prefix("/v1beta/models/") {
        if !rest.contains(':') {
            return gemini_models_answer(headers, Some(rest));
        }
        return gemini_answer(headers, rest, body);
    }
    let azure_deployment = azure
        .and_then(|rest| rest.strip_suffix("/chat/completions"))
        .map(str::to_owned);
    if path != "/v1/chat/completions" && azure_deployment.is_none() {
        return openai_error(
            StatusCode::NOT_FOUND,
            "Unknown request URL",
            "invalid_request_error",
            json!("unknown_url"),
        );
    }
    let model =
        azure_deployment.unwrap_or_else(|| body["model"].as_str().unwrap_or_default().to_owned());
    match model.as_str() {
        "fail-401" => {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided: sk-...xxxx. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                json!("invalid_api_key"),
            );
        }
        "fail-429" => {
            let mut response = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests",
                "requests",
                json!("rate_limit_exceeded"),
            );
            response
                .headers_mut()
                .insert("retry-after", "2".parse().unwrap());
            return response;
        }
        "fail-500" => {
            return openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request.",
                "server_error",
                Value::Null,
            );
        }
        "redirect" => {
            return Response::builder()
                .status(StatusCode::FOUND)
                .header("location", "http://127.0.0.1:1/steal")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap();
        }
        "slow" => tokio::time::sleep(Duration::from_secs(3)).await,
        "pause" => tokio::time::sleep(PAUSE).await,
        "stall-body" | "cut-body" | "cut-stream" => return broken_answer(&model, body),
        _ => {}
    }
    let id = "chatcmpl-mock0001";
    let (prompt_tokens, completion_tokens, cached_tokens) = reported_usage(body);
    if body["stream"] == json!(true) {
        let include_usage =
            body["stream_options"]["include_usage"] == json!(true) && model != "no-usage";
        let words = ["Hello", " from", " the", " mock", " upstream"];
        let state = state.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
        tokio::spawn(async move {
            let event = |value: Value| Ok(Frame::data(Bytes::from(format!("data: {value}\n\n"))));
            let chunk = |delta: Value, finish: Value| {
                json!({
                    "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                    "system_fingerprint": "fp_mock",
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
                })
            };
            let _ = sender
                .send(event(chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                )))
                .await;
            if model == "stall" {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            for (n, word) in words.iter().enumerate().take(STREAM_CHUNKS) {
                tokio::time::sleep(STREAM_GAP).await;
                let _ = sender
                    .send(event(chunk(json!({"content": word}), Value::Null)))
                    .await;
                if n == STREAM_CHUNKS - 1 {
                    *state.last_chunk_sent.lock().unwrap() = Some(Instant::now());
                }
            }
            let _ = sender.send(event(chunk(json!({}), json!("stop")))).await;
            if include_usage {
                let usage = json!({
                    "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                    "choices": [],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens,
                              "prompt_tokens_details": {"cached_tokens": cached_tokens},
                              "completion_tokens_details": {"reasoning_tokens": 0}}
                });
                let _ = sender.send(event(usage)).await;
            }
            let _ = sender
                .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                .await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        return Response::builder()
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("x-ratelimit-remaining-requests", "99")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
    }
    if model == "no-usage" {
        return json_response(
            StatusCode::OK,
            json!({"id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock upstream"},
                                "finish_reason": "stop"}]}),
        );
    }
    json_response(
        StatusCode::OK,
        json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock upstream", "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
            "system_fingerprint": "fp_mock"
        }),
    )
}
