//! Gemini's `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (and
//! the same under `/v1/`), Google providers only: the model in the path, parsed once at the
//! edge ([`route`]). Google's SDKs send the key as `x-goog-api-key` or `?key=` (a Bearer token
//! works too; the key never travels further: the upstream URL is the provider's); errors in
//! Google's shape.

use bytes::Bytes;

use crate::error_response::{ErrorShape, GatewayError};
use crate::operation::Operation;
use crate::pipeline::Endpoint;
use crate::pipeline::identify::bearer;
use crate::request::fields::ChatRequest;

pub static GENERATE: Endpoint = Endpoint {
    operation: Operation::GenerateContent,
    key,
    parse: parse_whole,
    shape: ErrorShape::Gemini,
};

pub static STREAM: Endpoint = Endpoint {
    operation: Operation::StreamGenerateContent,
    key,
    parse: parse_stream,
    shape: ErrorShape::Gemini,
};

/// The model and the method a Gemini path names: `/v1beta/models/{model}:{method}` or
/// `/v1/models/...`.
pub fn route(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((model, method))
}

/// The endpoint a Gemini method names, if it is one Sluice serves.
pub fn endpoint(method: &str) -> Option<&'static Endpoint> {
    match method {
        "generateContent" => Some(&GENERATE),
        "streamGenerateContent" => Some(&STREAM),
        _ => None,
    }
}

fn key(parts: &http::request::Parts) -> Option<&str> {
    let from_query = parts.uri.query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("key="))
            .filter(|k| !k.is_empty())
    });
    super::header_key(&parts.headers, "x-goog-api-key")
        .or(from_query)
        .or_else(|| bearer(&parts.headers))
}

fn parse_whole<'b>(body: &'b Bytes, path_model: &str) -> Result<ChatRequest<'b>, GatewayError> {
    ChatRequest::parse_gemini(body, path_model, false)
}

fn parse_stream<'b>(body: &'b Bytes, path_model: &str) -> Result<ChatRequest<'b>, GatewayError> {
    ChatRequest::parse_gemini(body, path_model, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_model_and_the_method() {
        assert_eq!(
            route("/v1beta/models/gemini-2.5-flash:generateContent"),
            Some(("gemini-2.5-flash", "generateContent"))
        );
        assert_eq!(
            route("/v1/models/tuned:v2:streamGenerateContent"),
            Some(("tuned:v2", "streamGenerateContent"))
        );
        for refused in [
            "/v1beta/models/:generateContent",
            "/v1beta/models/a/b:generateContent",
            "/v1beta/models/nomethod",
            "/v2/models/m:generateContent",
        ] {
            assert_eq!(route(refused), None, "{refused}");
        }
        assert!(endpoint("countTokens").is_none());
    }
}
