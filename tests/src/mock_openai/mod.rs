//! A mock OpenAI upstream on 127.0.0.1:0 speaking the real wire format: chat completions as
//! JSON or as SSE `chat.completion.chunk` events with a final usage chunk and `[DONE]`, and
//! OpenAI's error bodies; embeddings (`/v1/embeddings`, four-number vectors); the Responses
//! API (`/v1/responses`, JSON or its event stream); Anthropic's Messages API (`/v1/messages`);
//! Gemini's `generateContent` / `streamGenerateContent` (`/v1beta/models/...`) — one file per
//! family ([`openai`], [`anthropic`], [`gemini`]), each answer built from its canned wire format
//! in `tests/fixtures/<family>/` ([`fixtures`]). Azure OpenAI's deployment paths
//! (`/openai/deployments/{name}/chat/completions` and `/embeddings`) answer the same way, the
//! deployment standing for the model. The upstream model name picks a behaviour, so one server covers every
//! scenario: `fail-401`, `fail-429`, `fail-500`, `slow` (answers after 3 s), `pause` (answers
//! after [`PAUSE`]), `redirect`, `no-usage` (an answer or stream without a usage block, also
//! from the Anthropic mock), `stall` (a stream that sends one chunk, then nothing), `silent` (a
//! stream that sends its headers, then nothing),
//! `stall-body`, `cut-body` and `cut-stream` (see [`broken_answer`]), `flaky-<how>-<n>` (its
//! first n requests fail, then it answers normally: `500`, `503`, `429` with `retry-after-ms`,
//! `json`, a 200 whose body is cut JSON; from the Gemini mock, `429` with Google's `RetryInfo`
//! of 1 s), `no-done` (a stream that ends without `[DONE]`),
//! `bad-event` (a stream with an event that is cut JSON), `echo-<status>` and
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

mod anthropic;
mod fixtures;
mod gemini;
mod openai;

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
    /// Requests seen per `flaky-…` model, so each fails only its first N times.
    flaky: Mutex<std::collections::HashMap<String, usize>>,
}

impl State {
    /// For a `flaky-<how>-<n>` model, `how` while its first n requests last (each call counts
    /// one); `None` after, or for any other model.
    fn flaky_now<'m>(&self, model: &'m str) -> Option<&'m str> {
        let (how, times) = model.strip_prefix("flaky-")?.rsplit_once('-')?;
        let times: usize = times.parse().ok()?;
        let mut flaky = self.flaky.lock().unwrap();
        let seen = flaky.entry(model.to_owned()).or_insert(0);
        *seen += 1;
        (*seen <= times).then_some(how)
    }
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

    /// Requests that named `model` (the upstream model) in their body.
    pub fn requests_for(&self, model: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|request| request.body["model"] == model)
            .count()
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

/// Named server-sent events, all at once.
fn sse_response(events: &[(impl std::fmt::Display, Value)]) -> MockResponse {
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
            gemini::gemini_error(status, &message, "INVALID_ARGUMENT")
        } else {
            openai::openai_error(status, &message, "invalid_request_error", json!(raw))
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
        return openai::models_answer(headers, rest.strip_prefix('/'));
    }
    // Azure OpenAI names the model by its deployment, in the path.
    let azure = path.strip_prefix("/openai/deployments/");
    if path == "/v1/embeddings" || azure.is_some_and(|rest| rest.ends_with("/embeddings")) {
        let deployment = azure.and_then(|rest| rest.strip_suffix("/embeddings"));
        return openai::embeddings_answer(deployment, body);
    }
    if path == "/v1/responses" {
        return openai::responses_answer(body);
    }
    if path == "/v1/messages" {
        return anthropic::anthropic_answer(headers, body);
    }
    if path == "/v1beta/models" {
        return gemini::gemini_models_answer(headers, None);
    }
    if let Some(rest) = path.strip_prefix("/v1beta/models/") {
        if !rest.contains(':') {
            return gemini::gemini_models_answer(headers, Some(rest));
        }
        return gemini::gemini_answer(&state, headers, rest, body);
    }
    let azure_deployment = azure.and_then(|rest| rest.strip_suffix("/chat/completions"));
    if path != "/v1/chat/completions" && azure_deployment.is_none() {
        return openai::openai_error(
            StatusCode::NOT_FOUND,
            "Unknown request URL",
            "invalid_request_error",
            json!("unknown_url"),
        );
    }
    openai::chat_answer(state, azure_deployment, body).await
}
