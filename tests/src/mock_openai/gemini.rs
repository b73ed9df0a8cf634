//! The Gemini family's answers: `generateContent` and `streamGenerateContent`, model listings as
//! key checks see them (and Google's ways of refusing a key), and Google's error shape; each
//! built from the fixtures in `tests/fixtures/gemini/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::fixtures::fixture;
use super::*;

/// Google's answer to a key it does not know: 400, with the reason in the details.
pub(super) fn gemini_key_invalid() -> MockResponse {
    json_response(StatusCode::BAD_REQUEST, fixture("gemini/error.json"))
}

/// The `x-goog-api-key` sent, and Google's refusal of it if it refuses: none at all is an
/// unregistered caller (403), one containing `invalid` an unknown key (400 `API_KEY_INVALID`).
pub(super) fn gemini_key(headers: &HeaderMap) -> (&str, Option<MockResponse>) {
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
pub(super) fn gemini_models_answer(headers: &HeaderMap, model: Option<&str>) -> MockResponse {
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

/// Google's error shape, without details (only a refused key names its reason).
pub(super) fn gemini_error(status: StatusCode, message: &str, kind: &str) -> MockResponse {
    let mut error = fixture("gemini/error.json");
    error["error"]["code"] = json!(status.as_u16());
    error["error"]["message"] = json!(message);
    error["error"]["status"] = json!(kind);
    error["error"].as_object_mut().unwrap().remove("details");
    json_response(status, error)
}

/// Gemini's `models/{model}:generateContent` and `:streamGenerateContent` (server-sent
/// events, as `alt=sse` asks): usage reports [`PROMPT_TOKENS`], [`COMPLETION_TOKENS`] and
/// [`GEMINI_THOUGHTS`] thinking tokens. With function declarations it calls the first one
/// (signed with [`GEMINI_SIGNATURE`]); given the function's response, it answers with it,
/// refusing a replayed call that lost its signature. Unknown fields get Google's 400.
pub(super) fn gemini_answer(
    state: &State,
    headers: &HeaderMap,
    rest: &str,
    body: &Value,
) -> MockResponse {
    if let (_, Some(refused)) = gemini_key(headers) {
        return refused;
    }
    let (model, method) = rest.rsplit_once(':').unwrap_or((rest, ""));
    if state.flaky_now(model) == Some("429") {
        // Google says how long to wait in the error's details, not in a header.
        let mut error = fixture("gemini/error.json");
        error["error"] = json!({
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}],
        });
        return json_response(StatusCode::TOO_MANY_REQUESTS, error);
    }
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
        let mut chunk = fixture("gemini/generate_content.json");
        let candidate = &mut chunk["candidates"][0];
        candidate["content"]["parts"] = parts;
        if !done {
            candidate.as_object_mut().unwrap().remove("finishReason");
        }
        chunk["usageMetadata"] = usage;
        chunk["modelVersion"] = json!(model);
        chunk
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
