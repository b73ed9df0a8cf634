//! One model call, in order: identify the caller ([`identify`]) → read and parse the body →
//! resolve the model → the MOCK posture's answer ([`mock`]), or admission against budgets
//! ([`admit`]) and the attempts ([`attempts`]: each call classified as a [`failure`], the
//! answer — whole or streamed, passed through or translated — metered on its way back by
//! [`answer`]). Each client API describes itself to it as an [`Endpoint`].

pub mod admit;
pub mod answer;
pub mod attempts;
pub mod failure;
pub mod identify;
pub mod mock;
pub mod retry;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use sluice_shared::error_code::ErrorCode;

use crate::error_response::{ErrorShape, GatewayError};
use crate::gateway::Gateway;
use crate::http_body::Body;
use crate::metering::draft::UsageDraft;
use crate::metering::tally::RequestTally;
use crate::operation::Operation;
use crate::pipeline::identify::{KeyLocation, identify, resolve_model};
use crate::request::body::RequestBody;
use crate::request::fields::ChatRequest;
use crate::routing::tables::Posture;
use crate::telemetry::RequestTrace;
use crate::telemetry::content_capture::{self, CapturedContent};
use crate::telemetry::response_facts::RequestParams;
use sluice_otlp::ShortText;

/// What a client API is to the request path: the operation it calls, where its SDKs send
/// the virtual key, how its body is parsed, and the shape of its errors.
pub struct Endpoint {
    pub operation: Operation,
    /// The virtual key as the endpoint's SDKs send it.
    pub key: KeyLocation,
    /// Parses the body; the second argument is the model the path names (Gemini's paths).
    pub parse: for<'b> fn(&'b Bytes, &str) -> Result<ChatRequest<'b>, GatewayError>,
    pub shape: ErrorShape,
}

/// What the router knows of a request as it arrives.
pub struct Arrival<'r> {
    pub request_id: &'r str,
    /// When its head had arrived.
    pub at: tokio::time::Instant,
    pub trace: Option<&'r Arc<RequestTrace>>,
}

/// One model call, start to end: identify the caller → read and parse the body → resolve the
/// model → answer from the MOCK posture, or admit (budgets) and run the attempts. Errors are
/// answered in the endpoint's shape (`endpoint.shape`) by the caller.
pub async fn serve(
    gateway: &Arc<Gateway>,
    request: Request<RequestBody>,
    arrival: &Arrival<'_>,
    endpoint: &Endpoint,
    path_model: &str,
    tally: &mut RequestTally,
) -> Result<Response<Body>, GatewayError> {
    let Arrival {
        request_id,
        at: arrived,
        trace,
    } = *arrival;
    let operation = endpoint.operation;
    let (parts, body) = request.into_parts();
    let Some(tables) = gateway.tables.load_full() else {
        crate::request::body::drain_refused(body).await;
        return Err(GatewayError::new(
            ErrorCode::NotReady,
            "this proxy has no config yet; retry shortly",
        ));
    };
    let (caller, metadata) = match identify(&tables, &parts, endpoint.key) {
        Ok(identified) => identified,
        Err(error) => {
            crate::request::body::drain_refused(body).await;
            return Err(error);
        }
    };
    tally.key_id = Some(caller.key.id.clone());
    if let Some(trace) = trace {
        trace.note(|state| {
            state.organization_id = ShortText::new(&caller.project.org_id);
            state.project_id = ShortText::new(&caller.project.id);
            state.virtual_key_id = ShortText::new(&caller.key.id);
            state.config_version = tables.version;
            state.operation = Some(operation);
        });
    }
    let body = crate::request::body::read(gateway.max_body_bytes, &parts.headers, body).await?;
    let chat = (endpoint.parse)(&body, path_model)?;
    if let Some(trace) = trace.filter(|trace| trace.sampled()) {
        // Read before the trace's record is locked: the lock is held only to store them.
        let params = RequestParams::of(&chat);
        let cap = caller.project.content_capture_bytes as usize;
        let content = (cap > 0).then(|| {
            Box::new(CapturedContent {
                input: content_capture::input(operation, &body, cap),
                output: None,
            })
        });
        trace.note(|state| {
            state.model = ShortText::new(&chat.model);
            state.stream = chat.stream;
            state.max_tokens = chat.output_limit.as_ref().map(|limit| limit.tokens);
            state.params = Some(params);
            state.content = content;
        });
    }
    let model = resolve_model(&tables, &caller, &chat.model)?;
    tally.series = Some(model.series.clone());
    admit::check_output_limit(&chat, model)?;
    // A native endpoint speaks one family's wire format, so its model must be of a family
    // that serves it (chat completions reach every family).
    let primary = model
        .deployments
        .first()
        .and_then(|d| Some((tables.providers.get(d.provider)?, d)));
    if let Some((provider, _)) = primary
        .filter(|(provider, d)| attempts::route(d, provider, operation, chat.stream).is_none())
    {
        return Err(GatewayError::new(
            ErrorCode::ProviderMismatch,
            format!(
                "model '{}' is served by provider '{}' ({:?}), which offers no {}: call it with a model of a family that does, or use /v1/chat/completions",
                model.name, provider.name, provider.provider_type, operation.path()
            ),
        )
        .with_param("model"));
    }
    let asked_total = metadata.timeout;
    let largest = admit::largest_usage(gateway, &chat, body.len(), operation);
    let rates = crate::rate_limits::admit(
        gateway,
        &tables,
        [
            &caller.project.org_id,
            &caller.project.id,
            &caller.key.id,
            &model.id,
        ],
        largest.input_tokens.saturating_add(largest.output_tokens),
    )
    .await;
    if let Some(trace) = trace {
        let decision = match &rates {
            Ok(admitted) => admitted.hold.as_ref().map(|hold| hold.decision()),
            Err(error) if error.code == ErrorCode::RateLimited => Some("refused"),
            Err(_) => None,
        };
        trace.note(|state| state.rate_limit = decision);
    }
    let rates = rates?;
    let mut draft = UsageDraft::new(
        gateway, request_id, &caller, model, metadata, arrived, operation,
    );
    draft.rate_hold = rates.hold;
    draft.trace = trace.cloned();
    if caller.project.metrics_by_key {
        draft.key_series = tables.key_series(&caller.key.id).cloned();
    }
    let answered = match caller.project.posture {
        Posture::Mock => Ok(mock::answer(
            gateway, &chat, model, request_id, draft, tally,
        )),
        Posture::Live => {
            let reserved = admit::reserve(
                gateway,
                &tables,
                &caller,
                model,
                &chat,
                body.len(),
                operation,
            )
            .await;
            if let Some(trace) = trace {
                let (decision, micros) = match &reserved {
                    Ok(Some(reservation)) => ("reserved", Some(reservation.amount())),
                    Ok(None) => ("no_hard_budget", None),
                    Err(error) if error.code == ErrorCode::BudgetExceeded => ("refused", None),
                    Err(_) => ("unavailable", None),
                };
                trace.note(|state| {
                    state.budget = Some(decision);
                    state.budget_reserved_micros = micros;
                });
            }
            match reserved {
                Ok(reservation) => {
                    draft.reservation = reservation;
                    attempts::forward(gateway, &tables, model, &chat, draft, asked_total, tally)
                        .await
                }
                Err(error) => Err(error),
            }
        }
    };
    let Some(headers) = rates.headers else {
        return answered;
    };
    // Where the caller stands against its rate limits, on every answer.
    match answered {
        Ok(mut response) => {
            // Sluice's own limits are the ones this caller meets first: an upstream's standing
            // passed through would contradict them.
            if response
                .headers()
                .keys()
                .any(|name| name.as_str().starts_with("x-ratelimit-"))
            {
                let names: Vec<_> = response
                    .headers()
                    .keys()
                    .filter(|name| name.as_str().starts_with("x-ratelimit-"))
                    .cloned()
                    .collect();
                for name in names {
                    response.headers_mut().remove(name);
                }
            }
            response.extensions_mut().insert(headers.render());
            Ok(response)
        }
        Err(mut error) => {
            let mut extra = error
                .headers
                .take()
                .map_or_else(http::HeaderMap::new, |h| *h);
            headers.write(&mut extra);
            error.headers = Some(Box::new(extra));
            Err(error)
        }
    }
}
