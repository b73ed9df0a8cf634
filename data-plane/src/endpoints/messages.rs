//! `POST /v1/messages`: Anthropic's Messages API (Anthropic providers only). Anthropic's SDKs
//! send the key as `x-api-key` (a Bearer token works too); errors in Anthropic's shape.

use bytes::Bytes;

use crate::error_response::{ErrorShape, GatewayError};
use crate::operation::Operation;
use crate::pipeline::Endpoint;
use crate::pipeline::identify::bearer;
use crate::request::fields::ChatRequest;

pub static ENDPOINT: Endpoint = Endpoint {
    operation: Operation::Messages,
    key,
    parse,
    shape: ErrorShape::Anthropic,
};

fn key(parts: &http::request::Parts) -> Option<&str> {
    super::header_key(&parts.headers, "x-api-key").or_else(|| bearer(&parts.headers))
}

fn parse<'b>(body: &'b Bytes, _path_model: &str) -> Result<ChatRequest<'b>, GatewayError> {
    ChatRequest::parse_messages(body)
}
