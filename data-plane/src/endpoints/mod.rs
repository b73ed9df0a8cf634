//! The client APIs a proxy serves, one file each: what the endpoint calls, where its SDKs
//! send the virtual key, how its body is parsed and the shape of its errors, as an
//! [`Endpoint`](crate::pipeline::Endpoint) the request path runs
//! ([`crate::pipeline::serve`]); and `GET /v1/models` ([`models`]).

pub mod chat_completions;
pub mod embeddings;
pub mod generate_content;
pub mod messages;
pub mod models;
pub mod responses;

use http::HeaderMap;

use crate::pipeline::identify::bearer;

/// The key as OpenAI's SDKs send it.
fn bearer_key(parts: &http::request::Parts) -> Option<&str> {
    bearer(&parts.headers)
}

/// The key as the whole value of a header.
fn header_key<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::error_response::ErrorShape;
    use crate::operation::Operation;
    use crate::pipeline::Endpoint;

    const KEY: &str = "sk-sluice-test";

    fn parts(uri: &str, headers: &[(&'static str, String)]) -> http::request::Parts {
        let mut request = http::Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn endpoints() -> [(&'static str, &'static Endpoint); 6] {
        [
            ("chat completions", &super::chat_completions::ENDPOINT),
            ("embeddings", &super::embeddings::ENDPOINT),
            ("responses", &super::responses::ENDPOINT),
            ("messages", &super::messages::ENDPOINT),
            ("generate content", &super::generate_content::GENERATE),
            ("stream generate content", &super::generate_content::STREAM),
        ]
    }

    /// Where each endpoint's SDK puts the virtual key: OpenAI's as a Bearer token; Anthropic's
    /// as `x-api-key` (or Bearer); Gemini's as `x-goog-api-key`, `?key=` or Bearer. Anywhere
    /// else, the key is not found.
    #[test]
    fn each_endpoint_finds_the_key_where_its_sdk_sends_it() {
        let bearer = ("authorization", format!("Bearer {KEY}"));
        let x_api_key = ("x-api-key", KEY.to_owned());
        let goog = ("x-goog-api-key", KEY.to_owned());
        let path = "/v1beta/models/m:generateContent";
        let query = format!("{path}?alt=sse&key={KEY}");
        for (name, endpoint) in endpoints() {
            let found = |uri: &str, header: &[(&'static str, String)]| {
                (endpoint.key)(&parts(uri, header)).map(str::to_owned)
            };
            let expected = |finds: bool| finds.then(|| KEY.to_owned());
            let family = endpoint.operation;
            let gemini = family.is_gemini();
            assert_eq!(
                found(path, std::slice::from_ref(&bearer)),
                expected(true),
                "{name}: bearer"
            );
            assert_eq!(
                found(path, std::slice::from_ref(&x_api_key)),
                expected(family == Operation::Messages),
                "{name}: x-api-key"
            );
            assert_eq!(
                found(path, std::slice::from_ref(&goog)),
                expected(gemini),
                "{name}: x-goog-api-key"
            );
            assert_eq!(found(&query, &[]), expected(gemini), "{name}: ?key=");
            assert_eq!(found(path, &[]), None, "{name}: nowhere");
            assert_eq!(
                found(path, &[("authorization", format!("Basic {KEY}"))]),
                None,
                "{name}: not a bearer token"
            );
        }
    }

    /// Each endpoint answers errors the way its SDK reads them: OpenAI's `error.code`,
    /// Anthropic's `type: "error"` with `error.type`, Google's `error.status`.
    #[tokio::test]
    async fn each_endpoint_answers_errors_in_its_family_shape() {
        use http_body_util::BodyExt;
        use sluice_shared::error_code::ErrorCode;

        for (name, endpoint) in endpoints() {
            let response = crate::error_response::GatewayError::new(ErrorCode::InvalidApiKey, "no")
                .in_shape(endpoint.shape)
                .into_response("req-1");
            assert_eq!(response.status(), 401, "{name}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
            match endpoint.operation {
                Operation::Messages => {
                    assert_eq!(error["type"], "error", "{name}: {error}");
                    assert_eq!(
                        error["error"]["type"], "authentication_error",
                        "{name}: {error}"
                    );
                }
                Operation::GenerateContent | Operation::StreamGenerateContent => {
                    assert_eq!(error["error"]["code"], 401, "{name}: {error}");
                    assert_eq!(
                        error["error"]["status"], "UNAUTHENTICATED",
                        "{name}: {error}"
                    );
                }
                Operation::ChatCompletions | Operation::Embeddings | Operation::Responses => {
                    assert_eq!(error["error"]["code"], "invalid_api_key", "{name}: {error}");
                    assert_eq!(error["error"]["message"], "no", "{name}: {error}");
                }
            }
            assert_eq!(
                endpoint.shape == ErrorShape::OpenAi,
                !matches!(
                    endpoint.operation,
                    Operation::Messages
                        | Operation::GenerateContent
                        | Operation::StreamGenerateContent
                ),
                "{name}"
            );
        }
    }
}
