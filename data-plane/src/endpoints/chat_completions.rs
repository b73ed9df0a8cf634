//! `POST /v1/chat/completions`: OpenAI's Chat Completions, which every family serves (those
//! that speak another format through their translation). OpenAI's SDKs send the key as a
//! Bearer token; errors in OpenAI's shape.

use bytes::Bytes;

use crate::error_response::{ErrorShape, GatewayError};
use crate::operation::Operation;
use crate::pipeline::Endpoint;
use crate::request::fields::ChatRequest;

pub static ENDPOINT: Endpoint = Endpoint {
    operation: Operation::ChatCompletions,
    key: super::bearer_key,
    parse,
    shape: ErrorShape::OpenAi,
};

fn parse<'b>(body: &'b Bytes, _path_model: &str) -> Result<ChatRequest<'b>, GatewayError> {
    ChatRequest::parse(body)
}
