//! The endpoints that answer model calls (chat completions, embeddings, the Responses API,
//! Anthropic's Messages, Gemini's generateContent): authenticate, read and parse the body,
//! resolve the model, then answer from the MOCK posture or hand over to
//! [`crate::pipeline::attempts`].
//!
//! Beside them: where each endpoint's key travels ([`auth`]) and its request body read within
//! bounds ([`request_body`]), to be parsed by [`crate::request`].

pub mod auth;
pub mod request_body;

use std::sync::Arc;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use sluice_proto::usage::v1 as pb;
use sluice_shared::error_code::ErrorCode;

use crate::answers::Usage;
use crate::endpoints::auth::{Caller, authenticate, authenticate_anthropic, authenticate_gemini};
use crate::error_response::{ErrorShape, GatewayError};
use crate::gateway::Gateway;
use crate::http_body::{Body, full};
use crate::metering::draft::UsageDraft;
use crate::mock_posture;
use crate::operation::Operation;
use crate::request::fields::ChatRequest;
use crate::request::metadata::RequestMetadata;
use crate::routing::tables::{
    BudgetEntry, DeploymentEntry, ModelEntry, Posture, ProviderEntry, RoutingTables,
};

/// Whether a deployment serves `operation`: in its family's own format, or — chat
/// completions — through the family's translation.
fn serves(provider: &ProviderEntry, deployment: &DeploymentEntry, operation: Operation) -> bool {
    deployment.uri(operation).is_some()
        || (operation == Operation::ChatCompletions && provider.family.chat_translation().is_some())
}

pub async fn chat_completions(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    serve(gateway, request, request_id, Operation::ChatCompletions).await
}

pub async fn embeddings(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    serve(gateway, request, request_id, Operation::Embeddings).await
}

pub async fn responses(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    serve(gateway, request, request_id, Operation::Responses).await
}

/// Gemini's `POST /v1beta/models/{model}:generateContent` (and `:streamGenerateContent`,
/// and the same under `/v1/`); errors in Google's shape.
pub async fn generate_content(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: &str,
    stream: bool,
) -> Result<Response<Body>, GatewayError> {
    let operation = if stream {
        Operation::StreamGenerateContent
    } else {
        Operation::GenerateContent
    };
    serve(gateway, request, request_id, operation)
        .await
        .map_err(|error| error.in_shape(ErrorShape::Gemini))
}

/// The model named in a Gemini path: `/v1beta/models/{model}:{method}` or `/v1/models/...`;
/// the method is returned too.
pub fn gemini_route(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((model, method))
}

/// `POST /v1/messages`: Anthropic's Messages API; errors in Anthropic's shape.
pub async fn messages(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: &str,
) -> Result<Response<Body>, GatewayError> {
    serve(gateway, request, request_id, Operation::Messages)
        .await
        .map_err(|error| error.in_shape(ErrorShape::Anthropic))
}

async fn serve(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: &str,
    operation: Operation,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let Some(tables) = gateway.tables.load_full() else {
        crate::endpoints::request_body::drain_refused(body).await;
        return Err(GatewayError::new(
            ErrorCode::NotReady,
            "this proxy has no config yet; retry shortly",
        ));
    };
    let (caller, metadata) = match identify(&tables, &parts, operation) {
        Ok(identified) => identified,
        Err(error) => {
            crate::endpoints::request_body::drain_refused(body).await;
            return Err(error);
        }
    };
    let path_model = if operation.is_gemini() {
        gemini_route(parts.uri.path())
            .map(|(model, _)| model.to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let body =
        crate::endpoints::request_body::read(gateway.max_body_bytes, &parts.headers, body).await?;
    let chat = match operation {
        Operation::ChatCompletions => ChatRequest::parse(&body)?,
        Operation::Embeddings => ChatRequest::parse_embeddings(&body)?,
        Operation::Responses => ChatRequest::parse_responses(&body)?,
        Operation::Messages => ChatRequest::parse_messages(&body)?,
        Operation::GenerateContent => ChatRequest::parse_gemini(&body, &path_model, false)?,
        Operation::StreamGenerateContent => ChatRequest::parse_gemini(&body, &path_model, true)?,
    };
    let model = resolve_model(&tables, &caller, &chat.model)?;
    check_output_limit(&chat, model)?;
    // A native endpoint speaks one family's wire format, so its model must be of a family
    // that serves it (chat completions reach every family).
    let primary = model
        .deployments
        .first()
        .and_then(|d| Some((tables.providers.get(d.provider)?, d)));
    if let Some((provider, _)) = primary.filter(|(provider, d)| !serves(provider, d, operation)) {
        return Err(GatewayError::new(
            ErrorCode::ProviderMismatch,
            format!(
                "model '{}' is served by provider '{}' ({:?}), which offers no {}: call it with a model of a family that does, or use /v1/chat/completions",
                model.name, provider.name, provider.provider_type, operation.path()
            ),
        )
        .with_param("model"));
    }
    let draft = UsageDraft::new(
        gateway,
        request_id,
        &caller.project.id,
        &caller.key.id,
        model,
        metadata,
    );
    match caller.project.posture {
        Posture::Mock => Ok(mock(gateway, &chat, model, request_id, operation, draft)),
        Posture::Live => {
            let mut draft = draft;
            draft.reservation = admit(
                gateway,
                &tables,
                &caller,
                model,
                &chat,
                body.len(),
                operation,
            )
            .await?;
            crate::pipeline::attempts::forward(gateway, &tables, model, &chat, draft, operation)
                .await
        }
    }
}

/// Reserves the request's largest possible cost in every HARD budget that covers it, before
/// anything is forwarded: the prompt counted at one token per four bytes of the request body
/// (an overcount, which is the safe side) plus its `max_tokens` (or the configured default),
/// at the model's full prices.
async fn admit(
    gateway: &Gateway,
    tables: &RoutingTables,
    caller: &Caller<'_>,
    model: &ModelEntry,
    chat: &ChatRequest<'_>,
    body_len: usize,
    operation: Operation,
) -> Result<Option<crate::budgets::leases::Reservation>, GatewayError> {
    if tables.budgets.is_empty() {
        return Ok(None);
    }
    let budgets: Vec<&BudgetEntry> = tables
        .budgets_for([&caller.project.org_id, &caller.project.id, &caller.key.id])
        .collect();
    if budgets.is_empty() {
        return Ok(None);
    }
    let usage = Usage {
        input_tokens: (body_len as u64).div_ceil(4),
        // Embeddings answer with vectors, not tokens.
        output_tokens: match operation {
            Operation::Embeddings => 0,
            _ => chat
                .output_limit
                .map_or(gateway.default_max_output_tokens, |limit| limit.tokens),
        },
        ..Usage::default()
    };
    let most =
        crate::metering::draft::cost_micros(usage, crate::metering::draft::Prices::of(model));
    gateway.leases.reserve(&budgets, most).await.map(Some)
}

/// A request may not ask for more output than its model can give: past that, a limit is no
/// limit, and its reservation would be no bound.
fn check_output_limit(chat: &ChatRequest<'_>, model: &ModelEntry) -> Result<(), GatewayError> {
    let Some(limit) = chat.output_limit else {
        return Ok(());
    };
    let most = model.output_token_limit();
    if limit.tokens > most {
        return Err(GatewayError::new(
            ErrorCode::InvalidRequest,
            format!(
                "`{}` is {}, more than model '{}' can produce ({most} tokens)",
                limit.field, limit.tokens, model.name
            ),
        )
        .with_param(limit.field));
    }
    Ok(())
}

/// Who is calling (by the family's way of carrying the key) and the request's metadata headers.
fn identify<'t>(
    tables: &'t RoutingTables,
    parts: &http::request::Parts,
    operation: Operation,
) -> Result<(Caller<'t>, RequestMetadata), GatewayError> {
    let now_us = sluice_shared::time::now_us();
    let caller = match operation {
        Operation::Messages => authenticate_anthropic(tables, &parts.headers, now_us)?,
        Operation::GenerateContent | Operation::StreamGenerateContent => {
            authenticate_gemini(tables, &parts.headers, &parts.uri, now_us)?
        }
        _ => authenticate(tables, &parts.headers, now_us)?,
    };
    Ok((caller, crate::request::metadata::read(&parts.headers)?))
}

fn resolve_model<'t>(
    tables: &'t RoutingTables,
    caller: &Caller<'t>,
    requested: &str,
) -> Result<&'t ModelEntry, GatewayError> {
    let name = if requested == "default" {
        if caller.project.default_model.is_empty() {
            return Err(GatewayError::new(
                ErrorCode::UnsupportedModel,
                "this project has no default model: name a model, or set one with `sluicectl project update --default-model`",
            )
            .with_param("model"));
        }
        caller.project.default_model.as_str()
    } else {
        requested
    };
    if caller
        .key
        .allowed_models
        .as_ref()
        .is_some_and(|allowed| !allowed.contains(name))
    {
        return Err(GatewayError::new(
            ErrorCode::ModelNotAllowed,
            format!("this virtual key may not use model '{name}'"),
        )
        .with_param("model"));
    }
    tables.model(&caller.project.org_id, name).ok_or_else(|| {
        GatewayError::new(
            ErrorCode::UnsupportedModel,
            format!("model '{name}' does not exist: list models with GET /v1/models"),
        )
        .with_param("model")
    })
}

fn mock(
    gateway: &Arc<Gateway>,
    chat: &ChatRequest<'_>,
    model: &ModelEntry,
    request_id: &str,
    operation: Operation,
    draft: UsageDraft,
) -> Response<Body> {
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
    draft.finish(200, usage, pb::UsageSource::Mock);
    let mut response = Response::new(full(answer.body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
