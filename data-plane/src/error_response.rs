//! Every error a client sees: OpenAI's error shape plus what to do next and the request id to
//! quote. Logged here, once, at a level that fits who must act.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;
use sluice_shared::error_code::{ErrorCode, NextAction};

use crate::http_body::{Body, full};

/// An error on its way to the client.
#[derive(Debug)]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: String,
    /// The offending request field, when there is one.
    pub param: Option<&'static str>,
    pub shape: ErrorShape,
    /// How long the caller should wait before trying again, when the upstream said.
    pub retry_after: Option<std::time::Duration>,
    /// Headers the answer carries whatever it is, such as where the caller stands against
    /// its rate limits.
    pub headers: Option<Box<http::HeaderMap>>,
}

/// Whose error body the client expects: the endpoint's family decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code", ...}}`
    #[default]
    OpenAi,
    /// `{"type": "error", "error": {"type", "message", ...}}`
    Anthropic,
    /// `{"error": {"code": <status>, "message", "status": "INVALID_ARGUMENT", ...}}`
    Gemini,
}

/// Google's canonical status name for an HTTP status.
fn google_status(status: u16) -> &'static str {
    match status {
        400 | 409 | 413 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED",
        429 => "RESOURCE_EXHAUSTED",
        502 | 503 => "UNAVAILABLE",
        408 | 504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Anthropic's error `type` for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        400 | 408 | 409 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 | 431 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

impl GatewayError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            shape: ErrorShape::OpenAi,
            retry_after: None,
            headers: None,
        }
    }

    pub fn in_shape(mut self, shape: ErrorShape) -> Self {
        self.shape = shape;
        self
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// The error as its endpoint's clients read it, in its shape.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        match self.shape {
            ErrorShape::OpenAi => json!({
                "error": {
                    "message": self.message,
                    "type": self.code.error_type(),
                    "param": self.param,
                    "code": self.code.as_str(),
                    "next_action": self.code.next_action().as_str(),
                    "request_id": request_id,
                }
            }),
            ErrorShape::Gemini => json!({
                "error": {
                    "code": self.code.http_status(),
                    "message": self.message,
                    "status": google_status(self.code.http_status()),
                    "sluice_code": self.code.as_str(),
                    "next_action": self.code.next_action().as_str(),
                    "request_id": request_id,
                }
            }),
            ErrorShape::Anthropic => json!({
                "type": "error",
                "error": {
                    "type": anthropic_type(self.code.http_status()),
                    "message": self.message,
                    "code": self.code.as_str(),
                    "next_action": self.code.next_action().as_str(),
                },
                "request_id": request_id,
            }),
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        match self.code.next_action() {
            NextAction::Support => {
                tracing::error!(request_id, code = self.code.as_str(), message = %self.message, "request failed")
            }
            NextAction::Retry => {
                tracing::warn!(request_id, code = self.code.as_str(), message = %self.message, "request failed upstream")
            }
            NextAction::Fix | NextAction::Continue => {
                tracing::debug!(request_id, code = self.code.as_str(), message = %self.message, "request refused")
            }
        }
        let body = self.body(request_id);
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        if let Some(wait) = self.retry_after {
            // Whole seconds for every client, rounded up; milliseconds for OpenAI's SDKs,
            // which read `retry-after-ms` first.
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let headers = response.headers_mut();
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(millis.div_ceil(1_000)),
            );
            headers.insert("retry-after-ms", HeaderValue::from(millis));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

    async fn body_of(error: GatewayError) -> (u16, Value) {
        let response = error.into_response("req-1");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// Each endpoint's clients parse errors in their provider's shape; every shape carries the
    /// code, the next move and the request id.
    #[tokio::test]
    async fn errors_take_the_shape_of_the_endpoint() {
        let error = || {
            GatewayError::new(
                ErrorCode::BudgetExceeded,
                "budget acme/web (month) is spent",
            )
            .with_param("model")
        };
        let (status, openai) = body_of(error()).await;
        assert_eq!(status, 429);
        assert_eq!(openai["error"]["code"], "budget_exceeded");
        assert_eq!(openai["error"]["type"], "rate_limit_error");
        assert_eq!(openai["error"]["param"], "model");
        assert_eq!(openai["error"]["next_action"], "fix");
        assert_eq!(openai["error"]["request_id"], "req-1");

        let (_, anthropic) = body_of(error().in_shape(ErrorShape::Anthropic)).await;
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "rate_limit_error");
        assert_eq!(anthropic["error"]["code"], "budget_exceeded");
        assert_eq!(anthropic["request_id"], "req-1");

        let (_, gemini) = body_of(error().in_shape(ErrorShape::Gemini)).await;
        assert_eq!(gemini["error"]["code"], 429);
        assert_eq!(gemini["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(gemini["error"]["sluice_code"], "budget_exceeded");
        assert_eq!(gemini["error"]["request_id"], "req-1");

        let (status, too_large) = body_of(
            GatewayError::new(ErrorCode::HeadersTooLarge, "x").in_shape(ErrorShape::Anthropic),
        )
        .await;
        assert_eq!(status, 431);
        assert_eq!(too_large["error"]["type"], "request_too_large");
    }
}
