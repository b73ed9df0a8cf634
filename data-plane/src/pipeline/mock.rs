//! The MOCK posture's answer to a model call: the endpoint's own wire format, whole or
//! streamed, made by [`crate::mock_posture`] and recorded as `MOCK` usage at no cost.

use std::sync::Arc;

use http::{HeaderValue, Response, header};
use sluice_proto::usage::v1 as pb;

use crate::answers::Usage;
use crate::gateway::Gateway;
use crate::http_body::{Body, full};
use crate::metering::draft::UsageDraft;
use crate::metering::tally::RequestTally;
use crate::mock_posture;
use crate::operation::Operation;
use crate::request::fields::ChatRequest;
use crate::routing::tables::ModelEntry;

pub fn answer(
    gateway: &Arc<Gateway>,
    chat: &ChatRequest<'_>,
    model: &ModelEntry,
    request_id: &str,
    draft: UsageDraft,
    tally: &mut RequestTally,
) -> Response<Body> {
    let operation = draft.operation;
    let created = sluice_shared::time::now_us() / 1_000_000;
    let (answer, content_type) = match operation {
        Operation::Embeddings => {
            let dimensions = chat
                .number("dimensions")
                .and_then(|d| usize::try_from(d).ok())
                .filter(|d| (1..=mock_posture::MAX_EMBEDDING_DIMENSIONS).contains(d))
                .unwrap_or(mock_posture::DEFAULT_EMBEDDING_DIMENSIONS);
            (
                mock_posture::embeddings(&chat.inputs(), &model.name, dimensions),
                "application/json",
            )
        }
        Operation::GenerateContent | Operation::StreamGenerateContent => {
            let contents = chat.contents();
            if chat.stream {
                (
                    mock_posture::gemini_stream(&contents, &model.name),
                    "text/event-stream",
                )
            } else {
                (
                    mock_posture::gemini(&contents, &model.name),
                    "application/json",
                )
            }
        }
        Operation::Messages => {
            let messages = chat.messages();
            if chat.stream {
                (
                    mock_posture::anthropic_message_stream(&messages, &model.name, request_id),
                    "text/event-stream",
                )
            } else {
                (
                    mock_posture::anthropic_message(&messages, &model.name, request_id),
                    "application/json",
                )
            }
        }
        Operation::Responses => {
            let input = chat.input_value();
            if chat.stream {
                (
                    mock_posture::response_stream(&input, &model.name, request_id, created),
                    "text/event-stream",
                )
            } else {
                (
                    mock_posture::response(&input, &model.name, request_id, created),
                    "application/json",
                )
            }
        }
        Operation::ChatCompletions if chat.stream => (
            mock_posture::chat_completion_stream(
                &chat.messages(),
                &model.name,
                request_id,
                created,
            ),
            "text/event-stream",
        ),
        Operation::ChatCompletions => (
            mock_posture::chat_completion(&chat.messages(), &model.name, request_id, created),
            "application/json",
        ),
    };
    gateway
        .metrics
        .mock_responses_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let usage = Usage {
        input_tokens: answer.prompt_tokens,
        output_tokens: answer.completion_tokens,
        ..Usage::default()
    };
    tally.written = Some(draft.finish(200, usage, pb::UsageSource::Mock));
    let mut response = Response::new(full(answer.body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
