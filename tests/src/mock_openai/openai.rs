//! The OpenAI family's answers: chat completions (whole, or streamed chunks with a final usage
//! chunk and `[DONE]`), embeddings, the Responses API, model listings as key checks see them,
//! and OpenAI's error object; each built from the fixtures in `tests/fixtures/openai/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::fixtures::fixture;
use super::*;

pub(super) fn openai_error(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Value,
) -> MockResponse {
    let mut error = fixture("openai/error.json");
    error["error"]["message"] = json!(message);
    error["error"]["type"] = json!(kind);
    error["error"]["code"] = code;
    json_response(status, error)
}

/// Fills an OpenAI `usage` object with these counts.
fn set_usage(usage: &mut Value, prompt: u64, completion: u64, cached: u64) {
    usage["prompt_tokens"] = json!(prompt);
    usage["completion_tokens"] = json!(completion);
    usage["total_tokens"] = json!(prompt + completion);
    usage["prompt_tokens_details"]["cached_tokens"] = json!(cached);
}

/// `GET /v1/models[/{id}]` as a key check sees it: a key containing `invalid` is refused
/// (401, echoing the key as OpenAI's message does), one containing `noaccess` is forbidden
/// (403), model `gpt-nope` does not exist (404); anything else is listed.
pub(super) fn models_answer(headers: &HeaderMap, model: Option<&str>) -> MockResponse {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return super::anthropic::anthropic_models_answer(key, model);
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

/// OpenAI's Responses API: a `response` object, or with `stream: true` its event sequence
/// ending in `response.completed`, which carries the usage.
pub(super) fn responses_answer(body: &Value) -> MockResponse {
    let model = body["model"].as_str().unwrap_or_default();
    let completed = fixture("openai/response.json");
    let usage = completed["usage"].clone();
    let response = |status: &str, usage: Value, text: Option<&str>| {
        let mut response = completed.clone();
        response["status"] = json!(status);
        response["model"] = json!(model);
        response["usage"] = usage;
        match text {
            Some(text) => response["output"][0]["content"][0]["text"] = json!(text),
            None => response["output"] = json!([]),
        }
        response
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

/// `POST /v1/embeddings` (or an Azure deployment's): one vector per input.
pub(super) fn embeddings_answer(deployment: Option<&str>, body: &Value) -> MockResponse {
    let model = deployment
        .map(str::to_owned)
        .unwrap_or_else(|| body["model"].as_str().unwrap_or_default().to_owned());
    let inputs = match &body["input"] {
        Value::Array(items) => items.len(),
        _ => 1,
    };
    let mut answer = fixture("openai/embeddings.json");
    let vector = answer["data"][0].clone();
    answer["data"] = (0..inputs)
        .map(|index| {
            let mut item = vector.clone();
            item["index"] = json!(index);
            item
        })
        .collect();
    answer["model"] = json!(model);
    answer["usage"] = json!({"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS});
    json_response(StatusCode::OK, answer)
}

/// OpenAI's 429, saying how long to wait in header `name`.
fn rate_limited(name: &'static str, wait: &'static str) -> MockResponse {
    let mut response = openai_error(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit reached for requests",
        "requests",
        json!("rate_limit_exceeded"),
    );
    response
        .headers_mut()
        .insert(name, http::HeaderValue::from_static(wait));
    response
}

/// A `flaky-<how>-<n>` model's scripted failure, while it has failures left.
fn flaky_failure(state: &State, model: &str) -> Option<MockResponse> {
    let how = state.flaky_now(model)?;
    Some(match how {
        "500" => openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            "server_error",
            Value::Null,
        ),
        "503" => openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            Value::Null,
        ),
        "429" => rate_limited("retry-after-ms", "50"),
        "json" => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"id\": \"chatcmpl-cut\", \"choi")).boxed())
            .unwrap(),
        other => panic!("no flaky behaviour {other:?}"),
    })
}

/// `POST /v1/chat/completions` (or an Azure deployment's): the model (the deployment standing
/// for it) picks a behaviour, see the module's notes; anything else answers normally, whole or
/// as a stream of chunks spaced by [`STREAM_GAP`].
pub(super) async fn chat_answer(
    state: Arc<State>,
    azure_deployment: Option<&str>,
    body: &Value,
) -> MockResponse {
    let model = azure_deployment
        .map(str::to_owned)
        .unwrap_or_else(|| body["model"].as_str().unwrap_or_default().to_owned());
    match model.as_str() {
        "fail-401" => {
            return openai_error(
                StatusCode::UNAUTHORIZED,
                "Incorrect API key provided: sk-...xxxx. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                json!("invalid_api_key"),
            );
        }
        "fail-429" => return rate_limited("retry-after", "2"),
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
        flaky if flaky.starts_with("flaky-") => {
            if let Some(failure) = flaky_failure(&state, flaky) {
                return failure;
            }
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
            if model == "silent" {
                // Headers, and then not one event.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let event = |value: Value| Ok(Frame::data(Bytes::from(format!("data: {value}\n\n"))));
            let chunk = |delta: Value, finish: Value| {
                let mut chunk = fixture("openai/chat_completion_chunk.json");
                chunk["id"] = json!(id);
                chunk["model"] = json!(model);
                chunk["choices"][0]["delta"] = delta;
                chunk["choices"][0]["finish_reason"] = finish;
                if include_usage {
                    // Asked for usage, every chunk before the last says it has none yet.
                    chunk["usage"] = Value::Null;
                }
                chunk
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
            if model == "bad-event" {
                let _ = sender
                    .send(Ok(Frame::data(Bytes::from_static(
                        b"data: {\"choices\": [{\"delta\": {\"content\": \"x\n\n",
                    ))))
                    .await;
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
                let mut usage = fixture("openai/chat_completion_usage_chunk.json");
                usage["id"] = json!(id);
                usage["model"] = json!(model);
                set_usage(
                    &mut usage["usage"],
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                );
                let _ = sender.send(event(usage)).await;
            }
            if model != "no-done" {
                let _ = sender
                    .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                    .await;
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        return Response::builder()
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("x-ratelimit-remaining-requests", "99")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
    }
    let mut completion = fixture("openai/chat_completion.json");
    completion["id"] = json!(id);
    completion["model"] = json!(model);
    if model == "no-usage" {
        completion.as_object_mut().unwrap().remove("usage");
    } else {
        set_usage(
            &mut completion["usage"],
            prompt_tokens,
            completion_tokens,
            cached_tokens,
        );
    }
    json_response(StatusCode::OK, completion)
}
