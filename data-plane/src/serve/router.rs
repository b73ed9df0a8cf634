//! Dispatch by method and path; every response carries `x-request-id`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::json;
use sluice_shared::error_code::ErrorCode;

use crate::endpoints::{
    chat_completions, embeddings, generate_content, messages, models, responses,
};
use crate::error_response::GatewayError;
use crate::gateway::Gateway;
use crate::http_body::{Body, full};
use crate::metering::tally::RequestTally;
use crate::metrics::series::Outcome;
use crate::pipeline::{Arrival, Endpoint, serve};
use crate::request::body::RequestBody;
use crate::serve::http1::head::Refused;
use crate::telemetry::access_log::AccessLine;
use sluice_otlp::ShortText;
use sluice_shared::logging::REQUEST_SPAN;
use tracing::Instrument;

pub async fn route(gateway: &Arc<Gateway>, request: Request<RequestBody>) -> Response<Body> {
    let arrived = tokio::time::Instant::now();
    let request_id = sluice_shared::ids::new_id();
    let path = request.uri().path();
    if path.starts_with("/v1/") || path.starts_with("/v1beta/") {
        gateway
            .metrics
            .requests_total
            .fetch_add(1, Ordering::Relaxed);
    }
    // One call site for the model call: its future is most of a request's state, and every
    // site would reserve room of its own in this one's.
    let result = match destination(gateway, &request) {
        Destination::Answered(result) => result,
        Destination::Model(endpoint, path_model) => {
            let trace = gateway
                .telemetry
                .get()
                .and_then(|telemetry| telemetry.begin(request.headers()));
            if let Some(trace) = &trace {
                trace.note(|state| {
                    state.method = "POST";
                    state.route = endpoint.operation.route();
                    state.request_id = ShortText::new(&request_id);
                });
            }
            let mut tally = RequestTally::default();
            let arrival = Arrival {
                request_id: &request_id,
                at: arrived,
                trace: trace.as_ref(),
            };
            // A request's log lines carry its trace's ids.
            let span = match &trace {
                Some(trace) => tracing::info_span!(
                    REQUEST_SPAN,
                    trace_id = %Hex(&trace.ids.trace_id),
                    span_id = %Hex(&trace.ids.span_id)
                ),
                None => tracing::Span::none(),
            };
            let result = serve(
                gateway,
                request,
                &arrival,
                endpoint,
                &path_model,
                &mut tally,
            )
            .instrument(span)
            .await
            .map_err(|error| error.in_shape(endpoint.shape));
            tell(gateway, &arrival, endpoint, &tally, &result);
            result
        }
    };
    answered(gateway, result, &request_id)
}

/// What a model call's answer tells: its series' count, its trace's status, and its access
/// line (a stream's is written at its end).
fn tell(
    gateway: &Gateway,
    arrival: &Arrival<'_>,
    endpoint: &Endpoint,
    tally: &RequestTally,
    result: &Result<Response<Body>, GatewayError>,
) {
    let (status, code) = match result {
        Ok(response) => (response.status().as_u16(), None),
        Err(error) => (error.code.http_status(), Some(error.code)),
    };
    let series = tally.series.as_deref();
    let outcome = code.map_or(Outcome::Answered(status), Outcome::Error);
    series
        .unwrap_or(&gateway.metrics.unrouted)
        .count_response(endpoint.operation, outcome);
    if let Some(trace) = arrival.trace {
        trace.note(|state| {
            state.status = status;
            state.error = code;
        });
    }
    if let Some(log) = gateway.access_log.get()
        && !(tally.streamed && result.is_ok())
    {
        log.write(&AccessLine {
            request_id: arrival.request_id,
            endpoint: endpoint.operation.route(),
            key_id: tally.key_id.as_deref().unwrap_or(""),
            model: series.map_or("", |s| &s.model),
            provider: series.map_or("", |s| &s.provider),
            status,
            code: code.map(|code| code.as_str()),
            latency_us: u64::try_from(arrival.at.elapsed().as_micros()).unwrap_or(u64::MAX),
            usage: tally.written,
            trace: arrival.trace.map(|t| (&t.ids.trace_id, &t.ids.span_id)),
        });
    }
}

/// Bytes as lower-case hex, written where they are formatted.
struct Hex<'b>(&'b [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// Where a request goes: answered here at once, or a model call through an endpoint (with
/// the model a Gemini path names).
enum Destination {
    Answered(Result<Response<Body>, GatewayError>),
    Model(&'static Endpoint, String),
}

/// Prometheus's text format, or OpenMetrics (with exemplars) for a scraper that asks for it.
fn metrics(gateway: &Gateway, headers: &http::HeaderMap) -> Response<Body> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    if sluice_shared::openmetrics::asked_for(accept) {
        text(
            StatusCode::OK,
            sluice_shared::openmetrics::CONTENT_TYPE,
            gateway.render_openmetrics(),
        )
    } else {
        text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            gateway.render_metrics(),
        )
    }
}

fn destination(gateway: &Gateway, request: &Request<RequestBody>) -> Destination {
    let path = request.uri().path();
    let model = |endpoint| Destination::Model(endpoint, String::new());
    let answered = match (request.method(), path) {
        (&Method::GET, "/healthz") => Ok(text(StatusCode::OK, "text/plain", "ok\n".to_owned())),
        (&Method::GET, "/readyz") => Ok(readiness(gateway)),
        (&Method::GET, "/metrics") => Ok(metrics(gateway, request.headers())),
        (&Method::POST, "/v1/chat/completions") => return model(&chat_completions::ENDPOINT),
        (&Method::POST, "/v1/embeddings") => return model(&embeddings::ENDPOINT),
        (&Method::POST, "/v1/messages") => return model(&messages::ENDPOINT),
        (&Method::POST, "/v1/responses") => return model(&responses::ENDPOINT),
        (&Method::GET, "/v1/models") => models::list(gateway, request.headers()),
        // The model a Gemini path names is parsed here, once.
        (&Method::POST, _) if let Some((model, method)) = generate_content::route(path) => {
            match generate_content::endpoint(method) {
                Some(endpoint) => return Destination::Model(endpoint, model.to_owned()),
                None => Err(GatewayError::new(
                    ErrorCode::NotFound,
                    format!("no route for {path}: Gemini's generateContent and streamGenerateContent are served"),
                )
                .in_shape(crate::error_response::ErrorShape::Gemini)),
            }
        }
        (
            _,
            "/v1/chat/completions"
            | "/v1/embeddings"
            | "/v1/responses"
            | "/v1/messages"
            | "/v1/models",
        ) => Err(GatewayError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on {path}", request.method()),
        )),
        _ => Err(GatewayError::new(
            ErrorCode::NotFound,
            format!(
                "no route for {path}: see GET /v1/models, POST /v1/chat/completions, /v1/embeddings, /v1/responses and /v1/messages"
            ),
        )),
    };
    Destination::Answered(answered)
}

/// The answer to a request head the connection refused (`http1::head`), in the shape of the
/// endpoint it was for.
pub fn refused(gateway: &Gateway, refused: Refused) -> Response<Body> {
    let code = if refused.refusal.is_size() {
        ErrorCode::HeadersTooLarge
    } else {
        ErrorCode::InvalidRequest
    };
    let error = GatewayError::new(
        code,
        format!("malformed request: {}", refused.refusal.message()),
    )
    .in_shape(refused.shape);
    answered(gateway, Err(error), &sluice_shared::ids::new_id())
}

/// Made once: a name inserted from a `&str` is copied into a new allocation every time.
const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Every answer: an error counted and rendered, and the request id on it.
fn answered(
    gateway: &Gateway,
    result: Result<Response<Body>, GatewayError>,
    request_id: &str,
) -> Response<Body> {
    let mut response = result.unwrap_or_else(|error| {
        gateway.metrics.count_error(error.code);
        error.into_response(request_id)
    });
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Ready once a validated snapshot is loaded, even while the control plane is away (static
/// stability); the body says how current it is.
fn readiness(gateway: &Gateway) -> Response<Body> {
    let version = gateway.held_version();
    let connected = gateway
        .metrics
        .control_plane_connected
        .load(Ordering::Relaxed);
    let generated = gateway
        .metrics
        .config_generated_at_us
        .load(Ordering::Relaxed);
    let age_s = if generated > 0 {
        (sluice_shared::time::now_us() - generated).max(0) / 1_000_000
    } else {
        -1
    };
    let ready = gateway.tables.load().is_some();
    let reason = match (ready, connected) {
        (false, _) => "no config yet",
        (true, true) => "serving",
        (true, false) => "serving a stale config: the control plane is unreachable",
    };
    let left_out = gateway
        .tables
        .load()
        .as_ref()
        .map(|tables| {
            tables.left_out(u64::try_from(sluice_shared::time::now_us() / 1_000).unwrap_or(0))
        })
        .unwrap_or_default();
    let listed = |entries: &[(String, u64)], kind: &str| -> Vec<serde_json::Value> {
        entries
            .iter()
            .map(|(name, until)| json!({kind: name, "until_ms": until}))
            .collect()
    };
    let (ejected, cooled_keys) = (
        listed(&left_out.deployments, "deployment"),
        listed(&left_out.keys, "key_id"),
    );
    let body = json!({
        "ready": ready,
        "config_version": version,
        "config_age_seconds": age_s,
        "control_plane_connected": connected,
        "reason": reason,
        "ejected_deployments": ejected,
        "cooled_keys": cooled_keys,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, "application/json", body.to_string())
}
